"""meshrpc.web: the browser bridge, over real WebSockets against a live loopback mesh.

Each test runs a real Responder and Publisher (real ZeroMQ, mDNS discovery on
loopback, a namespace of its own), a Bridge served by a real uvicorn server on
127.0.0.1, and the `websockets` library's client standing in for the browser. The
example page is then driven in headless Chromium over the DevTools protocol.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import meshrpc
from meshrpc.web import Bridge, Client, Refused, lifespan, script
from meshrpc.web._rules import BadMessage, Call, Subscribe, origin_allowed, parse
from tests import procs
from tests.waiting import eventually

pytestmark = [pytest.mark.timeout(60)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def connect(uri: str, **options: Any) -> ws_connect:
    """A WebSocket client that ignores proxies from the environment: loopback only."""
    return ws_connect(uri, proxy=None, **options)


@pytest.fixture
def anyio_backend() -> str:
    # uvicorn runs only on asyncio, and it serves the bridge in the test's own event
    # loop, so the test reads the bridge's statistics directly. The bridge is anyio code
    # (no asyncio API), but a trio run would need a trio ASGI server we do not ship.
    return "asyncio"


# -- pure rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "127.0.0.1:8000", None, True),  # not a browser
        ("http://127.0.0.1:8000", "127.0.0.1:8000", None, True),
        ("https://shop.example", "shop.example", None, True),
        ("https://shop.example", "shop.example:443", None, True),
        ("http://evil.example", "127.0.0.1:8000", None, False),
        ("http://127.0.0.1:9000", "127.0.0.1:8000", None, False),
        ("null", "127.0.0.1:8000", None, False),
        ("http://127.0.0.1:8000", None, None, False),
        ("https://app.example", "api.example", frozenset({"https://app.example"}), True),
        ("HTTPS://App.Example/", "api.example", frozenset({"https://app.example"}), True),
        ("https://evil.example", "api.example", frozenset({"https://app.example"}), False),
        ("https://evil.example", "api.example", frozenset({"*"}), True),
    ],
)
def test_origin_rule(origin: str | None, host: str | None, allowed: Any, ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


def test_parse_messages_and_refuse_malformed_ones() -> None:
    assert parse('{"id": 1, "type": "a.b", "payload": [1], "timeout": 2}') == Call(1, "a.b", [1], 2)
    assert parse('{"op": "subscribe", "id": "s1", "pattern": "a.*"}') == Subscribe("s1", "a.*")
    for text, fragment in [
        ("nope", "not JSON"),
        ("[1]", "JSON object"),
        ('{"id": 1, "type": "a", "payload": NaN}', "not JSON"),
        ('{"id": 1.5, "type": "a"}', "id must be"),
        ('{"id": 1}', "type must be"),
        ('{"id": 1, "type": "a", "timeout": 0}', "timeout"),
        ('{"id": 1, "type": "a", "timeout": true}', "timeout"),
        ('{"op": "subscribe", "pattern": "a.b*"}', "whole segment"),
        ('{"op": "dance"}', "unknown op"),
        ('{"op": [[1]]}', "unknown op of this kind"),
        ("[" * 100_000, "not JSON"),
        ('{"id": 1, "type": "a", "payload": -1e400}', "beyond a double"),
        ('{"id": 1, "type": "a", "payload": ' + "[" * 64 + "]" * 64 + "}", "nested at most 64"),
        ('{"id": 1, "type": "a", "payload": {"\\ud800": 1}}', "lone surrogates"),
        ('{"id": "\\udfff", "type": "a"}', "id must be"),
        ('{"op": "subscribe", "pattern": "a.\\uD800"}', "lone surrogates"),
        ('{"op": "subscribe", "pattern": "a.\\u0000"}', "control characters"),
        ('{"id": 1, "type": "calc.*"}', "no wildcards"),
        ('{"id": 1, "type": "calc.#"}', "no wildcards"),
        ('{"id": 1, "type": "calc..add"}', "non-empty segments"),
        ('{"id": 1, "type": "calc.add\\r"}', "no control characters"),
    ]:
        with pytest.raises(BadMessage, match=fragment):
            parse(text)
    # Just inside the limits: a surrogate pair is one character, an escaped backslash
    # no escape, 63 levels (plus the message's own) is the deepest, brackets side by
    # side are no depth.
    for text, payload in [
        ('"\\ud83d\\ude00"', "\U0001f600"),
        ('"\\\\ud800"', "\\ud800"),
        ("[" * 63 + "]" * 63, json.loads("[" * 63 + "]" * 63)),
        ("[" + "[1]," * 500 + "[]]", [[1]] * 500 + [[]]),
    ]:
        assert parse(f'{{"id": 1, "type": "a", "payload": {text}}}') == Call(1, "a", payload, None)


def test_exports_are_sorted_and_importing_does_no_io() -> None:
    import meshrpc.web

    assert meshrpc.web.__all__ == sorted(meshrpc.web.__all__)
    assert all(getattr(meshrpc.web, name) is not None for name in meshrpc.web.__all__)
    code = "import sys, meshrpc.web; print('zmq' in sys.modules, 'zeroconf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_bad_configuration_fails_at_construction() -> None:
    with pytest.raises(meshrpc.ConfigError, match="must expose"):
        Bridge("x")
    with pytest.raises(meshrpc.ConfigError, match="requests"):
        Bridge("x", requests=["a.b*"])
    with pytest.raises(meshrpc.ConfigError, match="not one string"):
        Bridge("x", requests="calc.add")
    with pytest.raises(meshrpc.ConfigError, match="allowed origin"):
        Bridge("x", requests=["a"], allowed_origins=["app.example.com"])
    with pytest.raises(meshrpc.ConfigError, match="max_in_flight"):
        Bridge("x", requests=["a"], max_in_flight=0)
    with pytest.raises(meshrpc.ConfigError, match="timeout"):
        Bridge("x", requests=["a"], timeout=math.nan)
    assert "class MeshError" in script()


# -- a live mesh behind a served bridge ---------------------------------------------


@dataclass
class Mesh:
    """The services side of a test, what their handlers saw, and the bridge to them."""

    responder: meshrpc.Responder
    url: str = ""
    bridge: Bridge = field(init=False)
    release: anyio.Event = field(default_factory=anyio.Event)
    blocked: int = 0
    block_cancelled: int = 0
    block_finished: int = 0
    secret_ran: int = 0
    payloads: list[Any] = field(default_factory=list)


@asynccontextmanager
async def serve(
    app: Any, port: int = 0, lifespan: Literal["on", "off"] = "on"
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a socket bound here: no port race)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan=lifespan, ws_ping_interval=None)
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                # uvicorn offers a flag, not an event, for "listening".
                await eventually(lambda: server.started, timeout=20)
                yield f"127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


@asynccontextmanager
async def services(namespace: str) -> AsyncIterator[Mesh]:
    """A responder and a publisher ticking every 50 ms, in ``namespace``."""
    responder = meshrpc.Responder(name="calc", namespace=namespace)
    mesh = Mesh(responder)

    @responder.on("calc.add")
    async def add(payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    @responder.on("calc.fail")
    async def fail(payload: Any) -> None:
        raise ValueError("no such thing")

    @responder.on("calc.bytes")
    async def raw(payload: Any) -> bytes:
        return b"\x00\x01"

    @responder.on("calc.block")
    async def block(payload: Any) -> str:
        mesh.blocked += 1
        try:
            await mesh.release.wait()
        except BaseException:
            mesh.block_cancelled += 1
            raise
        mesh.block_finished += 1
        return "released"

    @responder.on("echo")
    async def echo(payload: Any) -> Any:
        mesh.payloads.append(payload)
        return payload

    @responder.on("admin.secret")
    async def secret(payload: Any) -> str:
        mesh.secret_ran += 1
        return "the keys"

    publisher = meshrpc.Publisher(name="ticker", namespace=namespace)
    async with responder, publisher, anyio.create_task_group() as tg:

        async def tick() -> None:
            n = 0
            while True:
                n += 1
                publisher.publish_nowait("metrics.cpu", {"n": n})
                publisher.publish_nowait("secret.keys", {"n": n})
                await anyio.sleep(0.05)

        tg.start_soon(tick)
        try:
            yield mesh
        finally:
            mesh.release.set()
            tg.cancel_scope.cancel()


def bridge_for(namespace: str, **options: Any) -> Bridge:
    options.setdefault("requests", ["calc.*", "echo"])
    options.setdefault("topics", ["metrics.#"])
    return Bridge(namespace, **options)


@asynccontextmanager
async def running(namespace: str, **options: Any) -> AsyncIterator[Mesh]:
    """The services of ``namespace`` and a bridge to them served on loopback."""
    async with services(namespace) as mesh:
        mesh.bridge = bridge_for(namespace, **options)
        async with serve(mesh.bridge) as address:
            mesh.url = f"ws://{address}/"
            if mesh.bridge.requester is not None:
                await mesh.bridge.requester.wait_for_responders("calc.add", timeout=20)
            yield mesh


async def call(ws: ClientConnection, msg_id: int | str, type: str, payload: Any = None,
               **extra: Any) -> dict[str, Any]:  # fmt: skip
    # Unescaped, as JavaScript's JSON.stringify sends it.
    message = {"id": msg_id, "type": type, "payload": payload, **extra}
    await ws.send(json.dumps(message, ensure_ascii=False))
    return await reply(ws, msg_id)


async def reply(ws: ClientConnection, msg_id: int | str | None) -> dict[str, Any]:
    """The next message answering ``msg_id`` (events and the hello are skipped)."""
    with anyio.fail_after(15):
        while True:
            message = json.loads(await ws.recv())
            if "id" in message and message["id"] == msg_id:
                return dict(message)


async def subscribe(ws: ClientConnection, msg_id: int, pattern: str) -> dict[str, Any]:
    """Follow ``pattern``; the bridge's answer."""
    await ws.send(json.dumps({"op": "subscribe", "id": msg_id, "pattern": pattern}))
    return await reply(ws, msg_id)


async def hello(ws: ClientConnection) -> dict[str, Any]:
    with anyio.fail_after(10):
        message = json.loads(await ws.recv())
    assert message["op"] == "hello", message
    return dict(message)


@pytest.mark.anyio
async def test_calls_reach_responders_with_results_and_error_kinds(namespace: str) -> None:
    async with running(namespace, timeout=1.0) as mesh, connect(mesh.url) as ws:
        limits = (await hello(ws))["limits"]
        assert limits == {"max_message": 65536, "max_in_flight": 32, "max_subscriptions": 32,
                          "timeout": 1.0}  # fmt: skip
        assert await call(ws, 1, "calc.add", {"a": 1, "b": 2}) == {"id": 1, "result": 3}
        failed = await call(ws, "two", "calc.fail")
        assert failed["error"] == {
            "kind": "RemoteError",
            "message": "no such thing",
            "remote_type": "ValueError",
        }  # and never the remote traceback
        late = await call(ws, 3, "calc.block", timeout=0.2)
        assert late["error"]["kind"] == "DeadlineExceeded"
        # The browser may ask for more time than the bridge allows: capped at 1 s.
        started = time.monotonic()
        capped = await call(ws, 4, "calc.block", timeout=30)
        assert capped["error"]["kind"] == "DeadlineExceeded"
        assert time.monotonic() - started < 5
        unknown = await call(ws, 5, "calc.nothing", timeout=0.3)
        assert unknown["error"]["kind"] == "NoResponder"
        unrepresentable = await call(ws, 6, "calc.bytes")
        assert unrepresentable["error"]["kind"] == "BadResult"
        stats = mesh.bridge.statistics()
        assert stats["ok"] == 1
        assert stats["errors"] == {"RemoteError": 1, "DeadlineExceeded": 2, "NoResponder": 1,
                                   "BadResult": 1}  # fmt: skip


@pytest.mark.anyio
async def test_pages_learn_the_kind_of_a_mesh_error_but_no_peer_or_namespace(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(namespace) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        # The requester's own message names the namespace: the page gets a fixed one.
        unknown = await call(ws, 1, "calc.nothing", timeout=0.3)
        assert unknown["error"] == {
            "kind": "NoResponder",
            "message": "no responder for this type answered before the deadline",
        }
        assert namespace not in json.dumps(unknown)
        assert mesh.bridge.requester is not None

        async def lost(type: str, payload: Any, **options: Any) -> Any:
            raise meshrpc.PeerLost(f"{'calc'!r} at tcp://10.9.8.7:4242 stopped answering")

        monkeypatch.setattr(mesh.bridge.requester, "send", lost)
        gone = await call(ws, 2, "calc.add", {"a": 1, "b": 2})
        assert gone["error"]["kind"] == "PeerLost"
        assert "10.9.8.7" not in gone["error"]["message"]
        assert "calc" not in gone["error"]["message"]


@pytest.mark.anyio
async def test_types_and_patterns_not_exposed_are_forbidden_and_never_reach_the_mesh(
    namespace: str,
) -> None:
    async with running(namespace) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        sent_before = mesh.bridge.requester.statistics()["sent"]  # type: ignore[union-attr]
        received_before = mesh.responder.statistics()["received"]
        refused = await call(ws, 1, "admin.secret")
        assert refused["error"]["kind"] == "Forbidden"
        assert "admin.secret" in refused["error"]["message"]
        assert mesh.secret_ran == 0
        assert mesh.bridge.requester.statistics()["sent"] == sent_before  # type: ignore[union-attr]
        assert mesh.responder.statistics()["received"] == received_before
        for msg_id, pattern in enumerate(["secret.#", "#", "*.keys", "metricsx.*"], start=2):
            answer = await subscribe(ws, msg_id, pattern)
            assert answer["error"]["kind"] == "Forbidden", (pattern, answer)
        assert mesh.bridge.statistics()["subscriptions"] == 0
        assert mesh.bridge.statistics()["refused"] == 5


@pytest.mark.anyio
async def test_events_of_an_exposed_pattern_arrive_live_and_stop_on_unsubscribe(
    namespace: str,
) -> None:
    async with running(namespace) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        await ws.send(json.dumps({"op": "subscribe", "id": 1, "pattern": "metrics.*"}))
        seen: list[dict[str, Any]] = []
        with anyio.fail_after(20):
            while len(seen) < 3:
                message = json.loads(await ws.recv())
                if message.get("id") == 1:
                    assert message["result"] == {"subscribed": "metrics.*"}
                elif "event" in message:
                    seen.append(message)
        assert {m["event"] for m in seen} == {"metrics.cpu"}  # never secret.keys
        assert all(m["pattern"] == "metrics.*" for m in seen)
        numbers = [m["data"]["n"] for m in seen]
        assert numbers == sorted(numbers)
        assert mesh.bridge.statistics()["subscriptions"] == 1
        await ws.send(json.dumps({"op": "unsubscribe", "id": 2, "pattern": "metrics.*"}))
        assert (await reply(ws, 2))["result"] == {"unsubscribed": "metrics.*"}
        assert mesh.bridge.statistics()["subscriptions"] == 0
        subscriber = mesh.bridge.subscriber
        assert subscriber is not None
        await eventually(lambda: subscriber._streams == [])  # closed by its own task
        assert mesh.bridge.statistics()["events"] >= 3


@pytest.mark.anyio
async def test_pages_share_one_subscription_and_a_stalled_page_holds_up_no_one(
    namespace: str,
) -> None:
    async with running(namespace, max_buffered_events=8) as mesh:
        subscriber = mesh.bridge.subscriber
        assert subscriber is not None
        host, port = mesh.url.removeprefix("ws://").rstrip("/").split(":")
        # A page that stops reading: a small receive window, and a client that stops
        # taking frames off the socket once one is waiting.
        sock = socket.create_connection((host, int(port)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async with (
            connect(mesh.url, sock=sock, max_queue=1, compression=None) as stalled,
            connect(mesh.url, compression=None) as ws,
            connect(mesh.url) as other,
        ):
            for page in (stalled, ws, other):
                await hello(page)
                assert "result" in await subscribe(page, 1, "metrics.#")
            assert "result" in await subscribe(ws, 2, "metrics.cpu")
            # Three pages, two patterns: the subscriber has one stream per pattern.
            assert len(subscriber._streams) == 2
            assert mesh.bridge.statistics()["subscriptions"] == 4
            publisher = meshrpc.Publisher(name="bulk", namespace=namespace)
            async with publisher, anyio.create_task_group() as tg:
                await publisher.wait_for_subscribers(timeout=20)

                async def flood() -> None:
                    blob = base64.b64encode(os.urandom(6000)).decode()  # incompressible
                    for n in itertools.count():
                        publisher.publish_nowait("metrics.bulk", {"n": n, "blob": blob})
                        await anyio.sleep(0.001)

                tg.start_soon(flood)
                await eventually(lambda: mesh.bridge.statistics()["events_dropped"] > 0, 20)
                # The stalled page is at its limit; the others still get events live,
                # and calls answered.
                stalled_session = max(mesh.bridge._sessions, key=lambda s: len(s.outbox._items))
                assert len(stalled_session.outbox._items) <= 8
                with anyio.fail_after(10):
                    bulk = 0
                    while bulk < 50:
                        bulk += json.loads(await ws.recv()).get("event") == "metrics.bulk"
                assert (await call(other, 3, "calc.add", {"a": 1, "b": 1}))["result"] == 2
                tg.cancel_scope.cancel()
            # Tabs killed without a goodbye (a close handshake would wait for each
            # client to read its backlog).
            for page in (stalled, ws, other):
                page.transport.abort()
            await eventually(lambda: mesh.bridge.statistics()["connections"] == 0)
        await eventually(lambda: subscriber._streams == [])


@pytest.mark.anyio
async def test_an_oversized_message_gets_too_large_and_closes_the_socket(namespace: str) -> None:
    async with running(namespace, max_message=1000) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        assert (await call(ws, 1, "echo", "x" * 900))["result"] == "x" * 900
        # Counted in bytes, not characters: 300 three-byte characters are 900 bytes.
        assert (await call(ws, 2, "echo", "€" * 300))["result"] == "€" * 300
        await ws.send(
            json.dumps({"id": 3, "type": "echo", "payload": "€" * 400}, ensure_ascii=False)
        )
        error = await reply(ws, None)
        assert error["error"]["kind"] == "TooLarge"
        with pytest.raises(ConnectionClosed) as closed:
            with anyio.fail_after(10):
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        await eventually(lambda: mesh.bridge.statistics()["connections"] == 0)
        assert len(mesh.payloads) == 2


@pytest.mark.anyio
async def test_calls_beyond_the_in_flight_limit_are_refused_at_once(namespace: str) -> None:
    async with running(namespace, max_in_flight=2) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        for msg_id in (1, 2):
            await ws.send(json.dumps({"id": msg_id, "type": "calc.block"}))
        await eventually(lambda: mesh.blocked == 2, timeout=10)
        refused = await call(ws, 3, "calc.add", {"a": 1, "b": 1})
        assert refused["error"]["kind"] == "TooManyInFlight"
        assert mesh.bridge.statistics()["in_flight"] == 2
        mesh.release.set()
        assert (await reply(ws, 1))["result"] == "released"
        assert (await reply(ws, 2))["result"] == "released"
        assert (await call(ws, 4, "calc.add", {"a": 1, "b": 1}))["result"] == 2


@pytest.mark.anyio
async def test_bad_messages_are_answered_and_the_connection_stays(namespace: str) -> None:
    async with running(namespace) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        await ws.send("not json")
        assert (await reply(ws, None))["error"]["kind"] == "BadMessage"
        await ws.send(b"\x00binary")
        assert (await reply(ws, None))["error"]["kind"] == "BadMessage"
        await ws.send(json.dumps({"id": 7, "op": "dance"}))
        assert (await reply(ws, 7))["error"]["kind"] == "BadMessage"
        assert (await call(ws, 8, "calc.add", {"a": 2, "b": 2}))["result"] == 4
        assert mesh.bridge.statistics()["errors"] == {"BadMessage": 3}


@pytest.mark.anyio
async def test_text_with_no_utf8_form_is_refused_before_the_mesh(namespace: str) -> None:
    # A lone surrogate escape is valid JSON but no UTF-8 frame or msgpack string: a
    # subscription to one used to kill the connection and leave a stream subscribed.
    async with running(namespace) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        await ws.send('{"op": "subscribe", "id": 1, "pattern": "metrics.\\ud800"}')
        assert (await reply(ws, 1))["error"]["kind"] == "BadMessage"
        await ws.send('{"id": 2, "type": "echo", "payload": {"k": ["\\udfff"]}}')
        assert (await reply(ws, 2))["error"]["kind"] == "BadMessage"
        await ws.send('{"id": "\\ud800", "type": "echo"}')
        assert (await reply(ws, None))["error"]["kind"] == "BadMessage"
        assert (await call(ws, 3, "echo", "\U0001f600 ok"))["result"] == "\U0001f600 ok"
        assert mesh.payloads == ["\U0001f600 ok"]
        assert mesh.bridge.subscriber is not None
        assert mesh.bridge.subscriber._streams == []
        assert mesh.bridge.statistics()["errors"] == {"BadMessage": 3}


@pytest.mark.anyio
async def test_hooks_authenticate_refuse_and_rewrite(namespace: str) -> None:
    def on_connect(client: Client) -> None:
        token = client.query_params.get("token") or client.cookies.get("token")
        if token != "s3cret":
            raise Refused("log in first", kind="Unauthorized")
        client.state["user"] = "ada"

    async def authorize(client: Client, type: str, payload: Any) -> Any:
        if isinstance(payload, dict) and payload.get("amount", 0) > 100:
            return Refused("amounts over 100 need a human", kind="Forbidden")
        # Who asked is the bridge's to say, never the browser's.
        return {**payload, "user": client.state["user"]} if isinstance(payload, dict) else payload

    def no_metrics_for_ada(client: Client, pattern: str) -> None:
        raise Refused(f"{client.state['user']} may not follow {pattern}")

    async with running(
        namespace,
        on_connect=on_connect,
        authorize=authorize,
        authorize_subscription=no_metrics_for_ada,
    ) as mesh:
        with pytest.raises(InvalidStatus) as denied:
            async with connect(mesh.url):
                pass
        assert denied.value.response.status_code == 403
        assert b"Unauthorized: log in first" in denied.value.response.body
        async with connect(mesh.url + "?token=s3cret") as ws:
            await hello(ws)
            rewritten = await call(ws, 1, "echo", {"amount": 5, "user": "mallory"})
            assert rewritten["result"] == {"amount": 5, "user": "ada"}
            assert mesh.payloads == [{"amount": 5, "user": "ada"}]
            refused = await call(ws, 2, "echo", {"amount": 500})
            assert refused["error"] == {"kind": "Forbidden",
                                        "message": "amounts over 100 need a human"}  # fmt: skip
            assert len(mesh.payloads) == 1
            refused = await subscribe(ws, 3, "metrics.cpu")
            assert refused["error"]["message"] == "ada may not follow metrics.cpu"
        async with connect(mesh.url, additional_headers={"Cookie": "token=s3cret"}) as ws:
            await hello(ws)
            assert (await call(ws, 4, "calc.add", {"a": 1, "b": 2}))["result"] == 3
        stats = mesh.bridge.statistics()
        assert stats["connections_refused"] == 1
        assert stats["refused"] == 2


@pytest.mark.anyio
async def test_a_stuck_authorize_hook_answers_at_the_deadline_and_frees_its_slot(
    namespace: str,
) -> None:
    never = anyio.Event()

    async def authorize(client: Client, type: str, payload: Any) -> Any:
        if type == "echo":
            await never.wait()  # a database that does not answer
        return payload

    options = {"authorize": authorize, "timeout": 0.5, "max_in_flight": 1}
    async with running(namespace, **options) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        started = time.monotonic()
        stuck = await call(ws, 1, "echo", "x", timeout=30)
        assert stuck["error"]["kind"] == "DeadlineExceeded"
        assert 0.4 < time.monotonic() - started < 5
        assert mesh.payloads == []
        # The one slot of max_in_flight is free again.
        assert (await call(ws, 2, "calc.add", {"a": 1, "b": 1}))["result"] == 2


@pytest.mark.anyio
async def test_a_closed_socket_cancels_its_calls_and_drops_its_subscriptions(
    namespace: str,
) -> None:
    async with running(namespace) as mesh:
        assert mesh.bridge.requester is not None
        assert mesh.bridge.subscriber is not None
        async with connect(mesh.url) as ws:
            await hello(ws)
            for msg_id in (1, 2, 3):
                await ws.send(json.dumps({"id": msg_id, "type": "calc.block"}))
            for msg_id, pattern in [(4, "metrics.cpu"), (5, "metrics.#")]:
                assert "result" in await subscribe(ws, msg_id, pattern)
            await eventually(lambda: mesh.blocked == 3, timeout=10)
            stats = mesh.bridge.statistics()
            assert (stats["in_flight"], stats["subscriptions"], stats["connections"]) == (3, 2, 1)
            assert mesh.bridge.requester.statistics()["in_flight"] == 3
            assert len(mesh.bridge.subscriber._streams) == 2
        # The tab is gone: everything it held is released.
        await eventually(lambda: mesh.bridge.statistics()["in_flight"] == 0)
        await eventually(lambda: mesh.bridge.requester.statistics()["in_flight"] == 0)  # type: ignore[union-attr]
        stats = mesh.bridge.statistics()
        assert (stats["subscriptions"], stats["connections"]) == (0, 0)
        await eventually(lambda: mesh.bridge.subscriber._streams == [])  # type: ignore[union-attr]
        # No CANCEL on the wire: the handlers run on until they finish by themselves.
        assert mesh.block_cancelled == 0
        mesh.release.set()
        await eventually(lambda: mesh.block_finished == 3)
        assert mesh.bridge.statistics()["ok"] == 0


@pytest.mark.anyio
async def test_cross_site_origins_are_refused(namespace: str) -> None:
    async with running(namespace) as mesh:
        host = mesh.url.removeprefix("ws://").rstrip("/")
        with pytest.raises(InvalidStatus) as denied:
            async with connect(mesh.url, origin="http://evil.example"):
                pass
        assert denied.value.response.status_code == 403
        async with connect(mesh.url, origin=f"http://{host}") as ws:
            await hello(ws)
        assert mesh.bridge.statistics()["connections_refused"] == 1
    async with running(namespace + "-2", allowed_origins=["https://app.example"]) as mesh:
        async with connect(mesh.url, origin="https://app.example") as ws:
            assert (await call(ws, 1, "calc.add", {"a": 2, "b": 3}))["result"] == 5
        with pytest.raises(InvalidStatus):
            async with connect(mesh.url, origin=f"http://{host}"):
                pass


@pytest.mark.anyio
async def test_connections_beyond_the_limit_are_refused_with_503(namespace: str) -> None:
    async with running(namespace, max_connections=1) as mesh, connect(mesh.url) as ws:
        await hello(ws)
        with pytest.raises(InvalidStatus) as denied:
            async with connect(mesh.url):
                pass
        assert denied.value.response.status_code == 503
        assert (await call(ws, 1, "calc.add", {"a": 1, "b": 1}))["result"] == 2
        await ws.close()
        await eventually(lambda: mesh.bridge.statistics()["connections"] == 0)
        async with connect(mesh.url) as again:
            await hello(again)
        assert mesh.bridge.statistics()["connections_refused"] == 1


@pytest.mark.anyio
async def test_a_stopped_bridge_refuses_upgrades_with_503(namespace: str) -> None:
    bridge = Bridge(namespace, requests=["calc.*"])
    async with bridge.lifespan():
        pass
    async with serve(bridge, lifespan="off") as address:
        with pytest.raises(InvalidStatus) as denied:
            async with connect(f"ws://{address}/"):
                pass
        assert denied.value.response.status_code == 503
        assert b"Unavailable: the bridge is stopping" in denied.value.response.body
        async with httpx.AsyncClient(trust_env=False) as http:
            js = await http.get(f"http://{address}/meshrpc.js")
        assert js.headers["x-content-type-options"] == "nosniff"


@pytest.mark.anyio
async def test_one_bridge_per_namespace_on_its_own_path(namespace: str) -> None:
    other = Bridge(namespace + "-other", requests=["calc.*"], timeout=0.5)
    async with running(namespace) as mesh:
        # The same services, now reached through an app with two bridges mounted.
        ours = Bridge(namespace, requests=["calc.*"])
        app = Starlette(
            routes=[Mount(f"/mesh/{namespace}", ours), Mount("/mesh/other", other)],
            lifespan=lifespan(ours, other),
        )
        async with serve(app) as address:
            assert ours.requester is not None
            await ours.requester.wait_for_responders("calc.add", timeout=20)
            async with connect(f"ws://{address}/mesh/{namespace}/") as ws:
                await hello(ws)
                assert (await call(ws, 1, "calc.add", {"a": 1, "b": 1}))["result"] == 2
            async with connect(f"ws://{address}/mesh/other/") as ws:
                await hello(ws)
                assert (await call(ws, 1, "calc.add", {"a": 1, "b": 1}))["error"][
                    "kind"
                ] == "NoResponder"
            async with httpx.AsyncClient(trust_env=False) as http:
                js = await http.get(f"http://{address}/mesh/{namespace}/meshrpc.js")
            assert js.status_code == 200
            assert js.headers["content-type"].startswith("text/javascript")
            assert "function connect(" in js.text
        assert mesh.bridge.statistics()["calls"] == 0


# -- the example page in headless Chromium ------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client, attached to one page."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = 0
        self.session: str | None = None

    async def __call__(self, method: str, **params: Any) -> dict[str, Any]:
        self._ids += 1
        message: dict[str, Any] = {"id": self._ids, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self._ws.send(json.dumps(message))
        with anyio.fail_after(30):
            while True:
                answer = json.loads(await self._ws.recv())
                if answer.get("id") == self._ids:
                    assert "error" not in answer, answer
                    return dict(answer["result"])

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page (a Promise is awaited)."""
        result = await self(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        )

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Poll ``expression`` until it is truthy (the page has no event to await)."""
        with anyio.move_on_after(timeout):
            while True:
                if value := await self.evaluate(expression):
                    return value
                await anyio.sleep(0.05)
        page = await self.evaluate("document.body.innerText")
        raise AssertionError(f"{expression!r} still false; the page says:\n{page}")


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium of this test's own; yields its DevTools WebSocket URL."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (CI installs it)")
    profile = tmp_path / "profile"
    log = (tmp_path / "chromium.log").open("wb")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-proxy-server",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=log,
        stderr=log,
        start_new_session=True,  # its own process group: its helpers die with it
    )  # fmt: skip
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            assert browser.poll() is None, (tmp_path / "chromium.log").read_text()
            assert time.monotonic() < deadline, "chromium never opened its DevTools port"
            time.sleep(0.05)  # chromium writes the file; there is nothing to await
        port, path = active.read_text().splitlines()[:2]
        yield f"ws://127.0.0.1:{port}{path}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(browser.pid, signal.SIGKILL)  # the group we started, by its PID
        browser.wait(timeout=10)
        log.close()


@asynccontextmanager
async def page(browser: str) -> AsyncIterator[DevTools]:
    """A new 1200x900 tab of ``browser``."""
    async with connect(browser, max_size=None) as ws:
        devtools = DevTools(ws)
        target = (await devtools("Target.createTarget", url="about:blank"))["targetId"]
        attached = await devtools("Target.attachToTarget", targetId=target, flatten=True)
        devtools.session = attached["sessionId"]
        await devtools("Page.enable")
        await devtools("Emulation.setDeviceMetricsOverride", width=1200, height=900,
                       deviceScaleFactor=1, mobile=False)  # fmt: skip
        yield devtools


async def load_client(tab: DevTools, address: str) -> None:
    """Load the bridge's meshrpc.js into a page of the bridge's origin (the script's own)."""
    await tab.navigate(f"http://{address}/meshrpc.js")
    assert await tab.evaluate("""new Promise((resolve, reject) => {
        const s = document.createElement("script");
        s.src = "/meshrpc.js"; s.onload = () => resolve(true); s.onerror = reject;
        document.head.appendChild(s);
    })""")


@pytest.mark.anyio
async def test_the_js_client_in_chromium_calls_follows_and_survives_a_bridge_restart(
    namespace: str, chromium: str
) -> None:
    outcome = "(p) => p.then((r) => ['ok', r], (e) => [e.kind, e.remote_type || null])"
    async with services(namespace) as mesh, page(chromium) as tab:
        first = bridge_for(namespace, max_message=1000)
        async with serve(first) as address:
            assert first.requester is not None
            await first.requester.wait_for_responders("calc.add", timeout=20)
            await load_client(tab, address)
            await tab.evaluate("""
                window.seen = []; window.changes = [];
                window.mesh = meshrpc.connect("/", {minDelay: 50, maxDelay: 400});
                mesh.on("metrics.cpu", (data, topic) => seen.push([topic, data.n]));
                mesh.addEventListener("open", () => changes.push("open"));
                mesh.addEventListener("close", () => changes.push("close"));
                true""")
            assert await tab.evaluate("mesh.send('calc.add', {a: 2, b: 3})") == 5
            assert await tab.evaluate(f"({outcome})(mesh.send('calc.fail'))") == [
                "RemoteError",
                "ValueError",
            ]
            assert await tab.evaluate(f"({outcome})(mesh.send('admin.secret'))") == [
                "Forbidden",
                None,
            ]
            # Over the bridge's limit (from its hello): refused in the page, never sent.
            big = "mesh.send('echo', 'x'.repeat(5000))"
            assert await tab.evaluate(f"({outcome})({big})") == ["TooLarge", None]
            assert first.statistics()["connections"] == 1
            await tab.wait_for("seen.length >= 2")
            assert await tab.evaluate("seen.every(([topic]) => topic === 'metrics.cpu')")
            # A call held by a responder when the bridge goes away rejects, never hangs.
            await tab.evaluate(f"window.held = ({outcome})(mesh.send('calc.block')); 1")
            await eventually(lambda: mesh.blocked == 1, timeout=10)
        assert first.statistics()["in_flight"] == 0
        assert await tab.evaluate("held") == ["Disconnected", None]
        # Made while disconnected: waits for the connection, within its own timeout.
        queued = "mesh.send('calc.add', {a: 1, b: 1}, {timeout: 20})"
        await tab.evaluate(f"window.queued = ({outcome})({queued}); 1")
        before = await tab.evaluate("seen.length")
        second = bridge_for(namespace, max_message=1000)
        async with serve(second, port=int(address.rsplit(":", 1)[1])):
            assert await tab.evaluate("queued") == ["ok", 2]
            await tab.wait_for(f"seen.length >= {before} + 2")  # subscribed again
            assert await tab.evaluate("changes") == ["open", "close", "open"]
            assert second.statistics()["subscriptions"] == 1
            await tab.evaluate("mesh.close(); 1")
            assert await tab.evaluate(f"({outcome})(mesh.send('calc.add'))") == ["Closed", None]
            await eventually(lambda: second.statistics()["connections"] == 0)


def start_example(namespace: str) -> tuple[subprocess.Popen[str], str]:
    port = procs.free_port()
    proc = subprocess.Popen(
        [sys.executable, str(procs.EXAMPLES / "web" / "run.py"), "--port", str(port),
         "--namespace", namespace],
        env=procs.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def stop_example(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    return err


def wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/", timeout=5, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the example never answered"
        time.sleep(0.1)  # a separate process: polling its port is all there is


def png_facts(data: bytes) -> tuple[int, int, int]:
    """Width, height, and how many distinct byte values the decoded pixels hold."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, offset = b"", 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            idat += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.mark.anyio
async def test_the_example_page_in_chromium_shows_results_and_live_events(
    namespace: str, chromium: str, tmp_path: Path
) -> None:
    proc, url = start_example(namespace)
    try:
        wait_until_up(url)
        async with page(chromium) as tab:
            await tab.navigate(url + "/")
            # The page calls shop.info once connected, and shows the metrics events.
            await tab.wait_for("document.querySelector('#info').dataset.state === 'ok'")
            info = await tab.evaluate("document.querySelector('#info').textContent")
            assert "Served by quotes" in info
            await tab.wait_for("Number(document.querySelector('#event-count').textContent) >= 2")
            await tab.wait_for("document.querySelector('#load').textContent !== '…'")
            await tab.evaluate(
                "document.querySelector('#item').value = 'cable';"
                "document.querySelector('#qty').value = '3';"
                "document.querySelector('#quote-form').requestSubmit(); 1"
            )
            await tab.wait_for("document.querySelector('#quote-result').dataset.state === 'ok'")
            quote = await tab.evaluate("document.querySelector('#quote-result').textContent")
            assert quote == "3 \u00d7 cable at 9.50 = 28.50 (via web)"  # the hook's rewrite
            # The publisher's next tick counts the quote the form asked for.
            await tab.wait_for("document.querySelector('#quotes').textContent === '1'")
            await tab.evaluate("document.querySelector('#forbidden').click(); 1")
            await tab.wait_for("document.querySelector('#forbidden-result').textContent")
            refused = await tab.evaluate("document.querySelector('#forbidden-result').textContent")
            assert refused.startswith("Forbidden: request type 'admin.reset' is not exposed")
            shot = base64.b64decode((await tab("Page.captureScreenshot", format="png"))["data"])
        screenshot = tmp_path / "web-example.png"  # kept by pytest for a look
        screenshot.write_bytes(shot)
        width, height, distinct = png_facts(shot)
        assert (width, height) == (1200, 900)
        assert len(shot) > 10_000
        assert distinct > 20, "the screenshot is nearly one colour"
    finally:
        stop_example(proc)


@pytest.mark.anyio
async def test_the_js_client_gives_a_queued_call_what_is_left_of_its_timeout(
    namespace: str, chromium: str
) -> None:
    outcome = "(p) => p.then((r) => ['ok', r], (e) => [e.kind, e.message])"
    async with services(namespace), page(chromium) as tab:
        bridge = bridge_for(namespace, max_in_flight=1)
        async with serve(bridge) as address:
            assert bridge.requester is not None
            await bridge.requester.wait_for_responders("calc.block", timeout=20)
            await load_client(tab, address)
            await tab.evaluate("""
                window.errors = [];
                window.mesh = meshrpc.connect("/");
                mesh.addEventListener("error", (e) => errors.push(e.detail.kind));
                true""")
            await tab.wait_for("mesh.connected")
            # One slot: the second call waits for the first, which takes its whole 1 s.
            await tab.evaluate(f"""
                window.first = ({outcome})(mesh.send("calc.block", null, {{timeout: 1}}));
                window.second = ({outcome})(mesh.send("calc.block", null, {{timeout: 1.6}}));
                1""")
            assert (await tab.evaluate("first"))[0] == "DeadlineExceeded"
            # Sent with the 0.6 s it had left, the bridge answers it before the page's
            # own timer (1.6 s + 1 s) fires: the page never believes a slot free that
            # the bridge still holds.
            assert await tab.evaluate("second") == [
                "DeadlineExceeded",
                "no outcome before the deadline",
            ]
            assert "TooManyInFlight" not in bridge.statistics()["errors"]
            for bad in ["mesh.send(42)", "mesh.send('calc.add', {}, {timeout: -1})"]:
                assert (await tab.evaluate(f"({outcome})({bad})"))[0] == "BadMessage"
            assert await tab.evaluate("errors") == []
