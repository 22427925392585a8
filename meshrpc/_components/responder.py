"""Responder: answers requests for the message types it registered handlers for."""

from __future__ import annotations

import inspect
import logging
import math
import time
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar, overload

import anyio
from anyio.abc import TaskGroup

from meshrpc._components.common import Component
from meshrpc._components.context import CallContext, _set
from meshrpc._protocol import codec
from meshrpc._protocol.advertisement import Advertisement, check_type_name
from meshrpc._protocol.envelope import Draining, Gossip, Info, InfoRequest, Ping, Pong, Request
from meshrpc._runtime import Runtime, current_runtime
from meshrpc.discovery.base import Discovery
from meshrpc.errors import ConfigError, MessageTooLarge, ProtocolError
from meshrpc.security import Secret
from meshrpc.transport.base import Listener, Transport

__all__ = ["Handler", "Responder"]

logger = logging.getLogger("meshrpc.responder")

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)

_MAX_REMEMBERED_PEERS = 10_000  # requesters told DRAINING on shutdown (bounded LRU)
_MAX_ERROR_TEXT = 32_768
_CLOCK_WINDOW = 30.0  # s per window of the transit baseline (_delay_ms)
_DRAIN_GRACE = 0.2  # s between telling requesters DRAINING and closing, at least


@dataclass(frozen=True, slots=True)
class _Route:
    fn: Handler
    is_async: bool
    idempotent: bool


class Responder(Component):
    """Serves handlers registered with :meth:`on` to requesters of the same mesh.

    ``async with responder:`` binds, announces and serves; leaving it drains: the
    advertisement is withdrawn, connected requesters are told in-band, new calls are
    refused (they are retried elsewhere), and in-flight calls get ``drain_timeout``
    seconds to finish.
    """

    kind = "responder"

    def __init__(
        self,
        name: str,
        namespace: str | None = None,
        key: str | None = None,
        environment: str | None = None,
        version: str | None = None,
        *,
        port: int | tuple[int, int] | None = None,
        advertise_host: str | None = None,
        interfaces: str | list[str] | tuple[str, ...] | None = None,
        max_concurrency: int | None = None,
        drain_timeout: float | None = None,
        max_message: int | None = None,
        send_tracebacks: bool | None = None,
        secret: str | Secret | None = None,
        handshake_timeout: float | None = None,
        stats_interval: float | None = None,
        discovery: Discovery | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            name,
            namespace=namespace,
            key=key,
            environment=environment,
            discovery=discovery,
            transport=transport,
            port=port,
            advertise_host=advertise_host,
            interfaces=interfaces,
            stats_interval=stats_interval,
            secret=secret,
            handshake_timeout=handshake_timeout,
            max_concurrency=max_concurrency,
            drain_timeout=drain_timeout,
            max_message=max_message,
            send_tracebacks=send_tracebacks,
        )
        self.version = version or ""
        self._routes: dict[str, _Route] = {}
        self._listener: Listener | None = None
        self._discovery: Discovery | None = None
        self._advertisement: Advertisement | None = None
        self._tg: TaskGroup | None = None
        self._runtime: Runtime | None = None
        self._draining = False
        self._in_flight = 0
        self._idle: anyio.Event | None = None
        # Per requester: the smallest (receive wall time - send wall time) in the current
        # and previous window, so a request held up on the way (a frozen process, a
        # healed partition) shows its age (see _delay_ms).
        self._peers: OrderedDict[bytes, list[float]] = OrderedDict()
        self._stats = dict.fromkeys(
            (
                "received",
                "ok",
                "errors",
                "unknown_type",
                "overloaded",
                "refused_draining",
                "expired",
                "stale",
                "malformed",
                "replies_dropped",
                "pings",
                "info_requests",
            ),
            0,
        )

    # -- registration -------------------------------------------------------------

    @overload
    def on(self, type: str, fn: None = None, *, idempotent: bool = False) -> Callable[[H], H]: ...

    @overload
    def on(self, type: str, fn: H, *, idempotent: bool = False) -> H: ...

    def on(
        self, type: str, fn: H | None = None, *, idempotent: bool = False
    ) -> H | Callable[[H], H]:
        """Register ``fn`` as the handler of ``type`` (usable as a decorator).

        ``fn`` takes the payload and returns a msgpack-serialisable value; ``async def``
        handlers run on the event loop, plain ``def`` ones in a worker thread.
        ``idempotent=True`` declares it safe to run more than once for one call.

        Raises:
            ConfigError: bad type name, duplicate type, not callable, or registering
                after the responder started.
        """
        check_type_name(type)

        def register(handler: H) -> H:
            if not callable(handler):
                raise ConfigError(f"handler for {type!r} is not callable: {handler!r}")
            if type in self._routes:
                raise ConfigError(f"{self.name!r} already has a handler for {type!r}")
            if self._entered:
                raise ConfigError("register handlers before the responder starts")
            is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
            )
            self._routes[type] = _Route(handler, is_async, idempotent)
            return handler

        return register if fn is None else register(fn)

    @property
    def types(self) -> tuple[str, ...]:
        """The message types this responder answers."""
        return tuple(self._routes)

    @property
    def endpoint(self) -> str | None:
        """The advertised endpoint once started, else ``None``."""
        return self._advertisement.endpoint if self._advertisement else None

    def statistics(self) -> dict[str, Any]:
        """Counters since start, plus ``in_flight``, ``draining`` and ``peers`` (the
        requesters heard from, up to the last 10,000)."""
        return {
            **self._stats,
            "in_flight": self._in_flight,
            "draining": self._draining,
            "peers": len(self._peers),
        }

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._claim()
        if not self._routes:
            raise ConfigError(f"responder {self.name!r} has no handlers; use @responder.on(type)")
        discovery, transport = self._backends()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._runtime = current_runtime(tg)
        try:
            listener = await self._bind_first_free(
                lambda port: transport.listen(
                    tg, self._bind_host(), port, self._on_frame, self._on_unsent
                )
            )
            self._listener = listener
            port = int(listener.endpoint.rsplit(":", 1)[1])
            self._advertisement = Advertisement(
                endpoint=f"tcp://{self._advertise_host()}:{port}",
                batches=True,
                version=self.version,
                types=self.types,
                idempotent=tuple(t for t, r in self._routes.items() if r.idempotent),
                **self._identity(),
            )
            await discovery.start()
            self._discovery = discovery
            self._advertisement = self._sign(self._advertisement)
            await discovery.register(self._advertisement)
        except BaseException:
            await self._shutdown()
            raise
        logger.info("responder %r serving %s at %s", self.name, self.types, self.endpoint)
        await self._report(True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    async def stop(self) -> None:
        """Drain and close now (same as leaving ``async with``)."""
        await self._shutdown()

    async def _shutdown(self) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        with anyio.CancelScope(shield=True):
            await self._report(False)
            self._draining = True
            try:
                if self._discovery is not None:
                    if self._advertisement is not None:
                        await self._discovery.unregister(self._advertisement)
                    await self._discovery.aclose()
                self._tell_draining()
                told = time.monotonic()
                if self._in_flight:
                    # Created only now: an event per busy period would cost every call.
                    self._idle = anyio.Event()
                    with anyio.move_on_after(self.settings.drain_timeout):
                        await self._idle.wait()
                # Let the requesters read DRAINING before the socket closes: a process
                # that exits with their frames unread makes its kernel reset the
                # connections, and a reset discards what the peer had not read yet.
                grace = min(_DRAIN_GRACE, self.settings.drain_timeout) - (time.monotonic() - told)
                if grace > 0:
                    await anyio.sleep(grace)
                    if self._in_flight:
                        logger.warning(
                            "responder %r: %d calls still running after the %.1fs drain "
                            "timeout are cancelled",
                            self.name,
                            self._in_flight,
                            self.settings.drain_timeout,
                        )
                if self._runtime is not None:
                    await self._runtime.cancel_all()
                if self._listener is not None:
                    # A short linger so the last replies of the drain reach their callers.
                    await self._listener.aclose(linger=0.5)
            finally:
                tg.cancel_scope.cancel()
        # Outside the shield: the task group must be exited in the scope it was entered.
        await tg.__aexit__(None, None, None)

    def _tell_draining(self) -> None:
        if self._listener is None:
            return
        frame = codec.encode(Draining())
        # A snapshot: on trio a send may handle arriving frames, which touch _peers.
        for peer in list(self._peers):
            self._listener.send(peer, frame)

    # -- serving ------------------------------------------------------------------

    def _on_frame(self, peer: bytes, frame: bytes) -> None:
        clock = self._peers.get(peer)
        if clock is None:
            clock = self._peers[peer] = [math.inf, math.inf, time.time()]
            if len(self._peers) > _MAX_REMEMBERED_PEERS:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        try:
            message = codec.decode(frame, max_size=self.settings.max_message)
        except ProtocolError as exc:
            self._stats["malformed"] += 1
            call_id = codec.request_call_id(frame)
            logger.debug("malformed frame from %r: %s", peer, exc)
            if call_id is not None:
                self._reply_error(peer, call_id, "bad_request", "ProtocolError", str(exc))
            return
        if isinstance(message, Request):
            self._on_request(peer, message, clock)
        elif isinstance(message, Ping):
            self._stats["pings"] += 1
            self._send(peer, codec.encode(Pong(message.nonce)))
        elif isinstance(message, InfoRequest):
            self._answer_info(peer, message)
        else:
            self._stats["malformed"] += 1
            logger.debug("unexpected %s from %r dropped", type(message).__name__, peer)

    def _answer_info(self, peer: bytes, request: InfoRequest) -> None:
        # Static discovery asks every responder who it is and whom it knows; a backend
        # that gossips (StaticDiscovery) also takes in what the asker brought.
        self._stats["info_requests"] += 1
        gossip = getattr(self._discovery, "gossip", None)
        ad = self._advertisement
        if self._draining or ad is None:
            info = Info(request.nonce)  # leaving (its discovery is closed): not a member
        elif callable(gossip):
            info = gossip(request, ad)
        else:
            info = Info(request.nonce, (Gossip(ad.to_properties(), 0),))
        try:
            frame = codec.encode(info, max_size=self.settings.max_message)
        except ProtocolError as exc:  # more members than one message may carry
            logger.warning("responder %r cannot answer INFO_REQUEST: %s", self.name, exc)
            return
        self._send(peer, frame)

    def _on_request(self, peer: bytes, request: Request, clock: list[float]) -> None:
        self._stats["received"] += 1
        route = self._routes.get(request.type)
        if route is None:
            self._stats["unknown_type"] += 1
            self._reply_error(
                peer,
                request.call_id,
                "unknown_type",
                "UnknownType",
                f"responder {self.name!r} has no handler for {request.type!r} "
                f"(it answers {sorted(self._routes)})",
            )
            return
        if self._draining:
            self._stats["refused_draining"] += 1
            self._reply_error(peer, request.call_id, "draining", "Draining", "responder draining")
            return
        left_ms = request.deadline_ms - _delay_ms(clock, request.meta.get("t"))
        if left_ms <= 0:
            stale = request.deadline_ms > 0
            self._stats["stale" if stale else "expired"] += 1
            why = "held up on the way past its deadline" if stale else "expired"
            self._reply_error(peer, request.call_id, "expired", "DeadlineExceeded", why)
            return
        if self._in_flight >= self.settings.max_concurrency:
            self._stats["overloaded"] += 1
            self._reply_error(
                peer,
                request.call_id,
                "overloaded",
                "Overloaded",
                f"{self._in_flight} calls in flight (max_concurrency)",
            )
            return
        assert self._runtime is not None
        deadline = time.monotonic() + left_ms / 1000.0
        self._in_flight += 1
        self._runtime.spawn(self._run_call, peer, request, route, deadline)

    async def _run_call(
        self, peer: bytes, request: Request, route: _Route, deadline: float
    ) -> None:
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # Queued behind other work past its deadline: the caller gave up, so
                # running it now could only do harm.
                self._stats["expired"] += 1
                return
            meta = request.meta
            user_meta = meta.get("m")
            _set(
                CallContext(
                    type=request.type,
                    call_id=request.call_id,
                    deadline=deadline,
                    caller=str(meta.get("from", "")),
                    attempt=request.attempt,
                    meta=user_meta if isinstance(user_meta, dict) else {},
                    responder=self.name,
                )
            )
            try:
                if route.is_async:
                    assert self._runtime is not None
                    finished, result = await self._runtime.run_until(
                        deadline, route.fn, request.payload
                    )
                    if not finished:
                        self._stats["expired"] += 1
                        return  # the caller already has DeadlineExceeded; nothing to say
                else:
                    # The thread may start late (the worker-thread limit): it checks the
                    # deadline itself. Abandoned on cancellation so a hung handler cannot
                    # hold up shutdown; its result is then discarded.
                    finished, result = await anyio.to_thread.run_sync(
                        _run_before, deadline, route.fn, request.payload, abandon_on_cancel=True
                    )
                    if not finished:
                        self._stats["expired"] += 1
                        return
            except Exception as exc:
                self._handler_failed(peer, request, exc)
                return
            try:
                frame = codec.encode_reply(
                    request.call_id, result, max_size=self.settings.max_message
                )
            except (MessageTooLarge, ProtocolError) as exc:
                self._stats["errors"] += 1
                self._reply_error(
                    peer,
                    request.call_id,
                    "bad_result",
                    type(exc).__name__,
                    f"result of {request.type!r} cannot be sent: {exc}",
                )
                return
            self._stats["ok"] += 1
            self._send(peer, frame)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0 and self._idle is not None:
                self._idle.set()

    def _handler_failed(self, peer: bytes, request: Request, exc: Exception) -> None:
        self._stats["errors"] += 1
        logger.debug("handler for %r raised", request.type, exc_info=exc)
        tb = "".join(traceback.format_exception(exc)) if self.settings.send_tracebacks else None
        self._reply_error(peer, request.call_id, "remote", type(exc).__qualname__, str(exc), tb)

    def _reply_error(
        self,
        peer: bytes,
        call_id: int,
        code: str,
        error_type: str,
        message: str,
        tb: str | None = None,
    ) -> None:
        # Bounded so a huge exception message cannot make the error itself undeliverable.
        message = message[:_MAX_ERROR_TEXT]
        tb = tb[-_MAX_ERROR_TEXT:] if tb else tb
        self._send(peer, codec.encode_error(call_id, code, error_type[:200], message, tb))

    def _on_unsent(self, peer: bytes, frames: list[bytes]) -> None:
        self._stats["replies_dropped"] += len(frames)

    def _send(self, peer: bytes, frame: bytes) -> None:
        if self._listener is None or not self._listener.send(peer, frame):
            self._stats["replies_dropped"] += 1


def _delay_ms(clock: list[float], sent_ms: Any) -> float:
    """How much longer than usual a request took to arrive, from its send time.

    Clocks of two hosts differ, so the absolute transit time is unknown; but the
    smallest (receive - send) difference seen from one requester is that offset plus
    the fastest transit, and a request whose difference is larger sat somewhere (a
    frozen process, a partition that healed) and has that much less time left. The
    smallest is taken over the current and the previous window of ``_CLOCK_WINDOW``
    seconds, so a stepped clock is forgotten within two windows.
    ``clock`` is the requester's ``[current minimum, previous minimum, window start]``.
    """
    if not isinstance(sent_ms, int) or isinstance(sent_ms, bool):
        return 0.0  # an older or foreign requester: only the relative deadline applies
    now = time.time()
    observed = now * 1000.0 - sent_ms
    if now - clock[2] > _CLOCK_WINDOW:
        clock[0], clock[1], clock[2] = math.inf, clock[0], now
    if observed < clock[0]:
        clock[0] = observed
    return observed - min(clock[0], clock[1])


def _run_before(deadline: float, fn: Handler, payload: Any) -> tuple[bool, Any]:
    if time.monotonic() >= deadline:
        return False, None
    return True, fn(payload)


async def _await(value: Awaitable[Any] | Any) -> Any:
    return await value if inspect.isawaitable(value) else value
