"""The browser bridge: WebSocket clients call exposed request types and follow exposed topics.

One :class:`Bridge` serves one namespace through its own Requester and Subscriber,
which live as long as the app (its lifespan). Each WebSocket connection is a
``_Session``: one reader (the handler's task) and, in the session's task group, one
task per call in flight and one writer of events, which ``_fanout`` queues in the
session's bounded outbox (one subscription per pattern for all sessions). The
session's socket writes go through one lock, so a browser that stops reading holds
up only its own session: calls wait to reply (bounded by ``max_in_flight``) and its
outbox fills, then drops its newest events, counted.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from functools import cache
from importlib import resources
from typing import Any, Final

import anyio
from anyio.abc import TaskGroup
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from meshrpc import errors
from meshrpc._components.requester import Requester
from meshrpc._components.subscriber import Subscriber
from meshrpc.errors import ConfigError, MeshError, RemoteError
from meshrpc.web._fanout import Fanout, Outbox
from meshrpc.web._rules import (
    AllowList,
    BadMessage,
    Call,
    MessageId,
    Subscribe,
    Unsubscribe,
    dumps,
    error_reply,
    normalise_origin,
    origin_allowed,
    parse,
)

__all__ = ["Bridge", "Client", "Refused", "lifespan", "script"]

logger = logging.getLogger("meshrpc.web")

_CLOSE_TIMEOUT: Final = 5.0  # s to say goodbye to a browser, or to wait for sessions to end
_TOO_LARGE: Final = 1009  # WebSocket close code "message too big"
_GOING_AWAY: Final = 1001
_UNAVAILABLE: Final = frozenset({"TooManyConnections", "Unavailable"})  # refusals -> HTTP 503
# What a page learns of a mesh error besides its kind. The exceptions' own messages are
# for operators: they name responders, their endpoints (tcp://10.0.0.7:41234) and the
# namespace, which the rest of the web has no business knowing.
_PUBLIC_MESSAGES: Final = {
    "DeadlineExceeded": "no outcome before the deadline",
    "NoResponder": "no responder for this type answered before the deadline",
    "PeerLost": "the responder was lost while it held the call: it may have run",
    "Overloaded": "the responders refused the call without running it (busy or stopping)",
    "MessageTooLarge": "the call is over the mesh's size limit",
    "ProtocolError": "the mesh cannot carry this call or its reply (e.g. an integer "
    "beyond 64 bits)",
}


class Refused(Exception):
    """Raise (or return) from a hook to refuse: the browser gets ``kind`` and ``message``.

    ``kind`` defaults to ``"Forbidden"``; an app may use its own (``"Unauthorized"``).
    """

    def __init__(self, message: str = "refused by the bridge", *, kind: str = "Forbidden") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class Client:
    """One browser connection, as the hooks see it.

    ``state`` is the app's: ``on_connect`` may store who the user is for ``authorize``.
    """

    __slots__ = ("id", "state", "websocket")

    def __init__(self, id: int, websocket: WebSocket) -> None:
        self.id = id
        self.websocket = websocket
        self.state: dict[str, Any] = {}

    @property
    def headers(self) -> Headers:
        return self.websocket.headers

    @property
    def cookies(self) -> dict[str, str]:
        return self.websocket.cookies

    @property
    def query_params(self) -> QueryParams:
        return self.websocket.query_params

    @property
    def origin(self) -> str | None:
        return self.websocket.headers.get("origin")

    def __repr__(self) -> str:
        peer = self.websocket.client
        where = f"{peer.host}:{peer.port}" if peer is not None else "?"
        return f"<Client {self.id} from {where}>"


ConnectHook = Callable[[Client], Awaitable[None] | None]
AuthorizeHook = Callable[[Client, str, Any], Any]
SubscriptionHook = Callable[[Client, str], Awaitable[None] | None]


@cache
def script() -> str:
    """The JavaScript client (``meshrpc.js``), as the bridge serves it."""
    return resources.files(__package__).joinpath("meshrpc.js").read_text(encoding="utf-8")


class Bridge:
    """An ASGI app bridging browser WebSockets to one namespace of the mesh.

    Mount it (``Mount("/mesh/shop", bridge)``) and run its lifespan with the app's
    (``Starlette(..., lifespan=bridge.lifespan)``, or :func:`lifespan` for several);
    or serve it alone (``uvicorn module:bridge``). It answers:

    - ``<mount>/`` — the WebSocket (protocol in ``docs/web.md``);
    - ``<mount>/meshrpc.js`` — the JavaScript client.

    Only the request types matching ``requests`` and the topic patterns inside
    ``topics`` are reachable (exact names, ``*`` one segment, ``#`` any depth); any
    other is refused with ``Forbidden`` before it reaches the mesh.

    Hooks (sync or async; raise or return :class:`Refused` to refuse):

    - ``on_connect(client)`` before the WebSocket is accepted (refusal: HTTP 403);
    - ``authorize(client, type, payload)`` before each call: returns the payload to
      send, the browser's or a rewritten one;
    - ``authorize_subscription(client, pattern)`` before each subscription.

    ``allowed_origins``: the page origins (``"https://app.example.com"``) allowed to
    connect; default: only the bridge's own origin (the ``Host`` header). ``"*"``
    allows any page on the web to use the browser's cookies here: avoid.

    Raises:
        ConfigError: a bad pattern, origin, limit, or component option.
    """

    def __init__(
        self,
        namespace: str | None = None,
        *,
        requests: Iterable[str] = (),
        topics: Iterable[str] = (),
        authorize: AuthorizeHook | None = None,
        authorize_subscription: SubscriptionHook | None = None,
        on_connect: ConnectHook | None = None,
        allowed_origins: Iterable[str] | None = None,
        timeout: float = 10.0,
        max_message: int = 65536,
        max_in_flight: int = 32,
        max_subscriptions: int = 32,
        max_connections: int = 1000,
        max_buffered_events: int = 256,
        name: str = "web-bridge",
        key: str | None = None,
        environment: str | None = None,
        secret: str | None = None,
        requester_options: Mapping[str, Any] | None = None,
        subscriber_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.requests = AllowList(requests, "requests")
        self.topics = AllowList(topics, "topics")
        if not self.requests and not self.topics:
            raise ConfigError("a bridge must expose some request types or topics")
        if isinstance(allowed_origins, str):
            raise ConfigError("allowed_origins must be a list of origins, not one string")
        self.allowed_origins: frozenset[str] | None = (
            None
            if allowed_origins is None
            else frozenset(normalise_origin(o) for o in allowed_origins)
        )
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        for what, value in (
            ("max_message", max_message),
            ("max_in_flight", max_in_flight),
            ("max_subscriptions", max_subscriptions),
            ("max_connections", max_connections),
            ("max_buffered_events", max_buffered_events),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{what} must be a positive integer, got {value!r}")
        self.max_message = max_message
        self.max_in_flight = max_in_flight
        self.max_subscriptions = max_subscriptions
        self.max_connections = max_connections
        self.max_buffered_events = max_buffered_events
        self._authorize = authorize
        self._authorize_subscription = authorize_subscription
        self._on_connect = on_connect
        identity: dict[str, Any] = {
            "namespace": namespace,
            "key": key,
            "environment": environment,
            "secret": secret,
        }
        # Built now (no I/O) so that bad options fail here; entered by the lifespan.
        self.requester: Requester | None = (
            Requester(name, **identity, **(requester_options or {})) if self.requests else None
        )
        self.subscriber: Subscriber | None = (
            Subscriber(name, **identity, **(subscriber_options or {})) if self.topics else None
        )
        component = self.requester if self.requester is not None else self.subscriber
        assert component is not None
        self.namespace = component.namespace
        self._running = False
        self._started = False
        self._ids = itertools.count(1)
        self._sessions: set[_Session] = set()
        self._admitted = 0  # connections past the limit check, sessions included
        self._drained: anyio.Event | None = None
        self._in_flight = 0
        self._stats = dict.fromkeys(
            (
                "connections_total",
                "connections_refused",
                "calls",
                "ok",
                "refused",
                "events",
                "events_dropped",
                "events_unrepresentable",
            ),
            0,
        )
        self._errors: dict[str, int] = {}
        self._fanout = (
            None if self.subscriber is None else Fanout(self.subscriber, self.topics, self._stats)
        )
        self._router = Router(
            routes=[
                WebSocketRoute("/", self._websocket),
                Route("/meshrpc.js", self._script, methods=["GET", "HEAD"]),
            ],
            lifespan=self.lifespan,
        )

    def __repr__(self) -> str:
        return (
            f"<Bridge namespace={self.namespace!r} requests={self.requests!r} "
            f"topics={self.topics!r}>"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._router(scope, receive, send)

    def statistics(self) -> dict[str, Any]:
        """Counters since start; ``connections``, ``in_flight`` and ``subscriptions`` now.

        ``errors`` counts error replies by kind; ``refused`` the calls and subscriptions
        the allow-lists or hooks refused; ``connections_refused`` the refused upgrades.
        """
        stats = dict(self._stats)
        if self._fanout is not None:
            stats["events_dropped"] += self._fanout.dropped()
        return {
            **stats,
            "errors": dict(self._errors),
            "connections": len(self._sessions),
            "in_flight": self._in_flight,
            "subscriptions": sum(len(s.subscriptions) for s in self._sessions),
        }

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Join the mesh (its Requester and Subscriber) for the app's life; on leaving,
        close every WebSocket (1001) and leave the mesh.

        Raises:
            RuntimeError: the bridge was already started once.
        """
        if self._started:
            raise RuntimeError("a Bridge's lifespan runs once")
        self._started = True
        async with AsyncExitStack() as stack:
            for component in (self.requester, self.subscriber):
                if component is not None:
                    await stack.enter_async_context(component)
            if self._fanout is not None:
                await stack.enter_async_context(self._fanout.running())
            self._running = True
            try:
                yield
            finally:
                self._running = False
                await self._close_sessions()

    # -- connections ----------------------------------------------------------------

    async def _script(self, request: Request) -> Response:
        return Response(
            script(),
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def _websocket(self, websocket: WebSocket) -> None:
        if not self._started:
            raise RuntimeError(
                "the bridge is not running: run its lifespan with the app's "
                "(Starlette(lifespan=bridge.lifespan) or meshrpc.web.lifespan(...))"
            )
        client = Client(next(self._ids), websocket)
        refusal = self._check_admission(client)
        if refusal is None:
            self._admitted += 1
            try:
                refusal = await self._run_connect_hook(client)
                if refusal is None:
                    # Registered before accepting, so that a lifespan ending now sees it.
                    session = _Session(self, client, websocket)
                    self._sessions.add(session)
                    try:
                        await websocket.accept()
                        self._stats["connections_total"] += 1
                        await session.run()
                    finally:
                        self._sessions.discard(session)
                        if not self._sessions and self._drained is not None:
                            self._drained.set()
            finally:
                self._admitted -= 1
        if refusal is not None:
            self._stats["connections_refused"] += 1
            logger.info("bridge %r refused %r: %s", self.namespace, client, refusal.message)
            await _deny(websocket, refusal)

    def _check_admission(self, client: Client) -> Refused | None:
        if not self._running:
            # Stopping (the server still takes connections while its lifespan ends).
            return Refused("the bridge is stopping", kind="Unavailable")
        origin = client.origin
        if not origin_allowed(origin, client.headers.get("host"), self.allowed_origins):
            return Refused(f"origin {origin!r} may not connect to this bridge")
        if self._admitted >= self.max_connections:
            return Refused("too many connections", kind="TooManyConnections")
        return None

    async def _run_connect_hook(self, client: Client) -> Refused | None:
        if self._on_connect is None:
            return None
        try:
            outcome = await _maybe_await(self._on_connect(client))
        except Refused as exc:
            return exc
        if isinstance(outcome, Refused):
            return outcome
        if not self._running:
            return Refused("the bridge is stopping", kind="Unavailable")
        return None

    async def _close_sessions(self) -> None:
        self._drained = anyio.Event()
        for session in list(self._sessions):
            session.scope.cancel()
        with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
            if self._sessions:
                await self._drained.wait()
        if self._sessions:
            logger.warning(
                "bridge %r: %d WebSocket session(s) still open after %.0f s",
                self.namespace,
                len(self._sessions),
                _CLOSE_TIMEOUT,
            )

    # -- what sessions call -----------------------------------------------------------

    def _count_error(self, kind: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1

    async def _authorized_payload(self, client: Client, type: str, payload: Any) -> Any:
        if self._authorize is None:
            return payload
        outcome = await _maybe_await(self._authorize(client, type, payload))
        if isinstance(outcome, Refused):
            raise outcome
        return outcome

    async def _authorize_pattern(self, client: Client, pattern: str) -> None:
        if self._authorize_subscription is None:
            return
        outcome = await _maybe_await(self._authorize_subscription(client, pattern))
        if isinstance(outcome, Refused):
            raise outcome


class _Session:
    """One accepted WebSocket: its calls in flight and its subscriptions."""

    def __init__(self, bridge: Bridge, client: Client, websocket: WebSocket) -> None:
        self.bridge = bridge
        self.client = client
        self.websocket = websocket
        self.in_flight = 0
        self.outbox = Outbox(bridge.max_buffered_events, bridge._stats)
        self.scope = anyio.CancelScope()  # cancelled when the bridge stops
        self._lock = anyio.Lock()
        self._tg: TaskGroup | None = None

    async def run(self) -> None:
        """Serve until the browser leaves, breaks a limit, or the bridge stops."""
        bridge = self.bridge
        goodbye: tuple[int, str, str | None] | None = (
            _GOING_AWAY,
            "the bridge is stopping",
            None,
        )
        try:
            with self.scope:
                goodbye = await self._serve()
        finally:
            if bridge._fanout is not None:
                for pattern in list(self.subscriptions):
                    bridge._fanout.unfollow(pattern, self.outbox)
        if goodbye is not None:
            code, reason, last_words = goodbye
            with anyio.move_on_after(_CLOSE_TIMEOUT, shield=True):
                if last_words is not None:
                    await self.send(last_words)
                await self._close(code, reason)

    @property
    def subscriptions(self) -> set[str]:
        """The patterns this connection follows."""
        return self.outbox.patterns

    async def _serve(self) -> tuple[int, str, str | None] | None:
        bridge = self.bridge
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if bridge._fanout is not None:
                tg.start_soon(self._write_events)
            hello = {
                "op": "hello",
                "limits": {
                    "max_message": bridge.max_message,
                    "max_in_flight": bridge.max_in_flight,
                    "max_subscriptions": bridge.max_subscriptions,
                    "timeout": bridge.timeout,
                },
            }
            await self.send(dumps(hello))
            goodbye = await self._read()
            # The browser is gone (or is being sent away): its calls are cancelled
            # here, which ends their waits in the requester. The mesh has no CANCEL
            # message: a handler already running runs on, and its reply is dropped
            # as late. Its subscriptions end in run().
            tg.cancel_scope.cancel()
        return goodbye

    async def send(self, text: str) -> bool:
        """Send one message; False when the browser is gone (the reader sees it leave)."""
        async with self._lock:
            if self.websocket.application_state != WebSocketState.CONNECTED:
                return False
            try:
                await self.websocket.send_text(text)
            except (WebSocketDisconnect, OSError) as exc:
                logger.debug("%r left while we were sending: %r", self.client, exc)
                return False
        return True

    async def _close(self, code: int, reason: str) -> None:
        async with self._lock:
            if self.websocket.application_state != WebSocketState.CONNECTED:
                return
            try:
                await self.websocket.close(code, reason)
            except (WebSocketDisconnect, OSError) as exc:
                logger.debug("%r left while we were closing: %r", self.client, exc)

    async def _error(self, msg_id: MessageId, kind: str, message: str, **extra: Any) -> None:
        self.bridge._count_error(kind)
        await self.send(error_reply(msg_id, kind, message, **extra))

    async def _refuse(self, msg_id: MessageId, refusal: Refused) -> None:
        self.bridge._stats["refused"] += 1
        await self._error(msg_id, refusal.kind, refusal.message)

    async def _read(self) -> tuple[int, str, str | None] | None:
        """Read and dispatch messages; None when the browser left, else how to close."""
        limit = self.bridge.max_message
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return None
            text: str | None = message.get("text")
            if text is not None:
                # A character is 1 to 4 bytes: encode only when the count cannot tell
                # (never a 16 MiB frame, which the server may have let through).
                too_large = len(text) > limit or (
                    len(text) * 4 > limit and len(text.encode()) > limit
                )
            else:
                too_large = len(message.get("bytes") or b"") > limit
            if too_large:
                self.bridge._count_error("TooLarge")
                why = f"a message over the bridge's limit of {limit} bytes"
                logger.info("closing %r: %s", self.client, why)
                return _TOO_LARGE, "message too large", error_reply(None, "TooLarge", why)
            if text is None:
                await self._error(None, "BadMessage", "send JSON text frames, not binary ones")
                continue
            try:
                request = parse(text)
            except BadMessage as exc:
                await self._error(exc.id, "BadMessage", str(exc))
                continue
            if isinstance(request, Call):
                await self._start_call(request)
            elif isinstance(request, Subscribe):
                await self._subscribe(request)
            else:
                await self._unsubscribe(request)

    # -- calls ------------------------------------------------------------------------

    async def _start_call(self, call: Call) -> None:
        bridge = self.bridge
        if not bridge.requests.allows(call.type):
            await self._refuse(
                call.id, Refused(f"request type {call.type!r} is not exposed by this bridge")
            )
            return
        if self.in_flight >= bridge.max_in_flight:
            await self._error(
                call.id,
                "TooManyInFlight",
                f"this connection already has {self.in_flight} calls in flight "
                f"(the limit is {bridge.max_in_flight})",
            )
            return
        self.in_flight += 1
        bridge._in_flight += 1
        bridge._stats["calls"] += 1
        assert self._tg is not None
        self._tg.start_soon(self._call, call)

    async def _call(self, call: Call) -> None:
        bridge = self.bridge
        try:
            reply = await self._outcome(call)
            await self.send(reply)
        finally:
            self.in_flight -= 1
            bridge._in_flight -= 1

    async def _outcome(self, call: Call) -> str:
        bridge = self.bridge
        assert bridge.requester is not None  # requests are exposed
        timeout = bridge.timeout if call.timeout is None else min(call.timeout, bridge.timeout)
        # The deadline covers the hook too: a hook stuck on its database must not hold a
        # slot of max_in_flight for ever, nor outlive the page's own timer.
        deadline = anyio.current_time() + timeout
        with anyio.CancelScope(deadline=deadline) as hook:
            try:
                payload = await bridge._authorized_payload(self.client, call.type, call.payload)
            except Refused as exc:
                bridge._stats["refused"] += 1
                bridge._count_error(exc.kind)
                return error_reply(call.id, exc.kind, exc.message)
            except Exception:
                # Never the payload in the log: the browser's, maybe large or secret.
                logger.exception(
                    "bridge %r: the authorize hook failed on a %r call of %r",
                    bridge.namespace,
                    call.type,
                    self.client,
                )
                bridge._count_error("InternalError")
                return error_reply(call.id, "InternalError", "the bridge's authorize hook failed")
        remaining = deadline - anyio.current_time()
        if hook.cancelled_caught or remaining <= 0:
            bridge._count_error("DeadlineExceeded")
            return error_reply(
                call.id, "DeadlineExceeded", "the bridge's authorize hook took the whole deadline"
            )
        try:
            result = await bridge.requester.send(call.type, payload, timeout=remaining)
        except RemoteError as exc:
            kind = _kind(exc)
            bridge._count_error(kind)
            # Never the remote traceback: it is for the service's operators.
            return error_reply(call.id, kind, exc.remote_message, remote_type=exc.remote_type)
        except MeshError as exc:
            kind = _kind(exc)
            bridge._count_error(kind)
            logger.debug("bridge %r: %r from %r: %s", bridge.namespace, call.type, self.client, exc)
            return error_reply(call.id, kind, _PUBLIC_MESSAGES.get(kind, "the call failed"))
        except Exception:
            logger.exception(
                "bridge %r: sending a %r call of %r failed",
                bridge.namespace,
                call.type,
                self.client,
            )
            bridge._count_error("InternalError")
            return error_reply(call.id, "InternalError", "the bridge failed to send the call")
        try:
            reply = dumps({"id": call.id, "result": result})
        except (TypeError, ValueError, RecursionError) as exc:
            bridge._count_error("BadResult")
            return error_reply(call.id, "BadResult", f"the result has no JSON form: {exc}")
        bridge._stats["ok"] += 1
        return reply

    # -- subscriptions --------------------------------------------------------------

    async def _subscribe(self, request: Subscribe) -> None:
        bridge = self.bridge
        pattern = request.pattern
        if not bridge.topics.allows_pattern(pattern):
            await self._refuse(
                request.id, Refused(f"topic pattern {pattern!r} is not exposed by this bridge")
            )
            return
        try:
            await bridge._authorize_pattern(self.client, pattern)
        except Refused as exc:
            await self._refuse(request.id, exc)
            return
        except Exception:
            logger.exception(
                "bridge %r: the authorize_subscription hook failed on %r",
                bridge.namespace,
                pattern,
            )
            await self._error(request.id, "InternalError", "the bridge's subscription hook failed")
            return
        if pattern not in self.subscriptions:
            if len(self.subscriptions) >= bridge.max_subscriptions:
                await self._error(
                    request.id,
                    "TooManySubscriptions",
                    f"this connection already has {bridge.max_subscriptions} subscriptions",
                )
                return
            assert bridge._fanout is not None  # topics are exposed
            bridge._fanout.follow(pattern, self.outbox)
        await self.send(dumps({"id": request.id, "result": {"subscribed": pattern}}))

    async def _unsubscribe(self, request: Unsubscribe) -> None:
        if self.bridge._fanout is not None:
            self.bridge._fanout.unfollow(request.pattern, self.outbox)
        await self.send(dumps({"id": request.id, "result": {"unsubscribed": request.pattern}}))

    async def _write_events(self) -> None:
        stats = self.bridge._stats
        while True:
            if await self.send(await self.outbox.get()):
                stats["events"] += 1


def lifespan(*bridges: Bridge) -> Callable[[object], AbstractAsyncContextManager[None]]:
    """One Starlette lifespan running several bridges' (``Starlette(lifespan=...)``)."""

    @asynccontextmanager
    async def run(app: object = None) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for bridge in bridges:
                await stack.enter_async_context(bridge.lifespan(app))
            yield

    return run


def _kind(exc: MeshError) -> str:
    """The public meshrpc error class an exception is (internal subclasses hidden)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == errors.__name__ and cls.__name__ in errors.__all__:
            return cls.__name__
    return "MeshError"


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def _deny(websocket: WebSocket, refusal: Refused) -> None:
    """Refuse an upgrade: HTTP 503 for capacity, else 403 (browsers only see a failure)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        status = 503 if refusal.kind in _UNAVAILABLE else 403
        body = f"{refusal.kind}: {refusal.message}\n"
        await websocket.send_denial_response(PlainTextResponse(body, status_code=status))
    else:
        await websocket.close(code=1008)  # before accept, the server answers 403
