"""The ZeroMQ transport's batching: frames of one loop turn go out as one message, and
frames it accepted but then could not send are reported, never dropped silently."""

from __future__ import annotations

import anyio
import pytest

from meshrpc.transport.zmq import ZmqTransport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]


class Collect:
    """Frames received, and an event once ``want`` of them arrived."""

    def __init__(self, want: int) -> None:
        self.frames: list[tuple[bytes, bytes]] = []
        self.want = want
        self.full = anyio.Event()

    def __call__(self, peer: bytes, frame: bytes) -> None:
        self.frames.append((peer, frame))
        if len(self.frames) >= self.want:
            self.full.set()


async def test_frames_of_one_turn_arrive_in_order_and_whole() -> None:
    transport = ZmqTransport()
    got, replies = Collect(300), Collect(300)
    async with anyio.create_task_group() as tg:
        listener = await transport.listen(tg, "127.0.0.1", 0, got)
        up = anyio.Event()
        conn = await transport.connect(
            tg,
            listener.endpoint,
            lambda f: replies(b"", f),
            lambda state: state == "up" and up.set(),
            batch=True,
        )
        with anyio.fail_after(5):
            await up.wait()
        assert all(conn.send(b"call %d" % n) for n in range(300))  # over one batch's cap
        with anyio.fail_after(5):
            await got.full.wait()
        assert [f for _, f in got.frames] == [b"call %d" % n for n in range(300)]
        peer = got.frames[0][0]
        assert all(listener.send(peer, b"reply %d" % n) for n in range(300))
        with anyio.fail_after(5):
            await replies.full.wait()
        assert [f for _, f in replies.frames] == [b"reply %d" % n for n in range(300)]
        await conn.aclose()
        await listener.aclose()


async def test_a_batch_that_cannot_be_sent_is_reported() -> None:
    transport = ZmqTransport()
    got = Collect(2)
    unsent: list[tuple[bytes, list[bytes]]] = []
    reported = anyio.Event()

    def on_unsent(peer: bytes, frames: list[bytes]) -> None:
        unsent.append((peer, frames))
        reported.set()

    async with anyio.create_task_group() as tg:
        listener = await transport.listen(tg, "127.0.0.1", 0, got, on_unsent)
        up = anyio.Event()
        conn = await transport.connect(
            tg, listener.endpoint, lambda f: None, lambda s: s == "up" and up.set(), batch=True
        )
        with anyio.fail_after(5):
            await up.wait()
        # Two in one turn: the second rides in a multipart message, which tells the
        # listener this peer takes batches too.
        conn.send(b"hello")
        conn.send(b"again")
        with anyio.fail_after(5):
            await got.full.wait()
        peer = got.frames[0][0]
        # The first frame of the turn goes out at once; a batching requester that is no
        # longer there (ROUTER_MANDATORY) fails when its batch goes at the end of the turn.
        listener._batching[b"nobody"] = None  # as if it had sent a batch, then left
        assert listener.send(peer, b"first")
        assert listener.send(b"nobody", b"lost 1")
        assert listener.send(b"nobody", b"lost 2")
        # A peer never seen batching gets single frames, so failures show at once.
        assert not listener.send(b"stranger", b"refused")
        with anyio.fail_after(5):
            await reported.wait()
        assert unsent == [(b"nobody", [b"lost 1", b"lost 2"])]
        await conn.aclose()
        await listener.aclose()


async def test_closing_a_connection_reports_what_it_held_back() -> None:
    transport = ZmqTransport()
    held: list[list[bytes]] = []
    async with anyio.create_task_group() as tg:
        listener = await transport.listen(tg, "127.0.0.1", 0, lambda p, f: None)
        up = anyio.Event()
        conn = await transport.connect(
            tg,
            listener.endpoint,
            lambda f: None,
            lambda s: s == "up" and up.set(),
            held.append,
            batch=True,
        )
        with anyio.fail_after(5):
            await up.wait()
        assert conn.send(b"sent now")
        assert conn.send(b"held 1")
        assert conn.send(b"held 2")
        await conn.aclose()  # before the end of the turn: the held frames never leave
        assert held == [[b"held 1", b"held 2"]]
        await listener.aclose()


async def test_a_requester_sends_unsent_calls_elsewhere(namespace: str) -> None:
    from meshrpc import Requester, Responder
    from meshrpc.transport.zmq import ZmqConnection

    responders = [Responder(name=f"r{i}", namespace=namespace) for i in range(2)]
    for r in responders:

        @r.on("who")
        async def who(payload: object, name: str = r.name) -> str:
            return name

    async with responders[0], responders[1], Requester(name="c", namespace=namespace) as client:
        await client.wait_for_responders("who", 2, timeout=10)
        # r0's connection takes the first call of each turn, then cannot send its batch
        # (as if the connection dropped within the turn): libzmq's EAGAIN, reported.
        broken = next(p.conn for p in client._peers.values() if p.ad.name == "r0")
        assert isinstance(broken, ZmqConnection)
        broken._send_batch = lambda frames: broken._on_unsent(frames)  # type: ignore[assignment,method-assign,misc]
        async with anyio.create_task_group() as tg:
            answers: list[str] = []

            async def call() -> None:
                answers.append(await client.send("who", timeout=5))

            for _ in range(64):
                tg.start_soon(call)
        assert len(answers) == 64
        assert "r1" in answers
        stats = client.statistics()
        assert stats["ok"] == 64
        assert stats["sent"] == 64  # calls held back and not sent are not counted as sent


LIMITS = """
import resource, sys
import anyio
from meshrpc.errors import ConfigError
from meshrpc.transport.zmq import ZmqTransport

async def main(n: int, nofile: int) -> None:
    if nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    transport = ZmqTransport()
    conns = []
    async with anyio.create_task_group() as tg:
        listener = await transport.listen(tg, "127.0.0.1", 0, lambda p, f: None)
        try:
            for _ in range(n):
                conns.append(
                    await transport.connect(tg, listener.endpoint, lambda f: None, lambda s: None)
                )
        except ConfigError as exc:
            print("ConfigError", len(conns), exc)
        else:
            print("ok", len(conns))
        for conn in conns:
            await conn.aclose()
        await listener.aclose()

anyio.run(main, int(sys.argv[1]), int(sys.argv[2]))
"""


def test_many_connections_fit_and_past_the_limit_the_error_is_clear() -> None:
    import subprocess
    import sys

    def run(n: int, nofile: int) -> str:
        out = subprocess.run(
            [sys.executable, "-c", LIMITS, str(n), str(nofile)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return out.stdout.strip()

    # 400 connections are 1,200 sockets: past libzmq's default of 1,023 per context.
    assert run(400, 0) == "ok 400"
    # Out of file descriptors: a ConfigError that says what to raise, not a crash.
    out = run(400, 128)
    assert out.startswith("ConfigError"), out
    assert "ulimit -n" in out


async def test_held_frames_are_reported_before_the_connection_is_reported_lost() -> None:
    transport = ZmqTransport()
    events: list[object] = []
    async with anyio.create_task_group() as tg:
        listener = await transport.listen(tg, "127.0.0.1", 0, lambda p, f: None)
        up = anyio.Event()

        def on_state(state: str) -> None:
            events.append(state)
            if state == "up":
                up.set()

        conn = await transport.connect(
            tg, listener.endpoint, lambda f: None, on_state, events.append, batch=True
        )
        with anyio.fail_after(5):
            await up.wait()
        assert conn.send(b"sent now")
        assert conn.send(b"held")
        conn._state_changed("down")  # what the monitor reports on a disconnect
        assert events == ["up", [b"held"], "down"]
        await conn.aclose()
        await listener.aclose()
