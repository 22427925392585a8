"""Subscriber: receives the events of its mesh's publishers whose topics match its patterns.

Handlers of one subscriber run one at a time, in arrival order, in a consumer task;
events wait in a bounded buffer. When the buffer is full, new events are dropped and
counted (``dropped``) rather than letting memory grow: a slow subscriber never slows a
publisher. Events the network dropped (ZeroMQ's high-water marks) show up as
sequence gaps (``missed``).
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Self, TypeVar, overload

import anyio
from anyio.abc import TaskGroup, TaskStatus

from meshrpc._components.common import Component
from meshrpc._components.context import CallContext, _set
from meshrpc._protocol import codec
from meshrpc._protocol import topics as topic_rules
from meshrpc._protocol.advertisement import Advertisement
from meshrpc._protocol.envelope import PROTOCOL_VERSION
from meshrpc._runtime import Completion, Runtime, current_runtime
from meshrpc.discovery.base import Discovery, DiscoveryEvent
from meshrpc.errors import ConfigError, NoResponder, ProtocolError
from meshrpc.security import Secret
from meshrpc.transport.base import PeerState, Subscription, Transport

__all__ = ["EventStream", "Subscriber"]

logger = logging.getLogger("meshrpc.subscriber")

EventHandler = Callable[[Any], Any]
H = TypeVar("H", bound=EventHandler)

_MAX_STREAMS = 100_000  # sequence counters kept per publisher before they are reset
_GROUP_STREAM = "\0group"


@dataclass(frozen=True, slots=True)
class _Route:
    pattern: str
    fn: EventHandler
    is_async: bool


class EventStream:
    """Events matching one pattern, from :meth:`Subscriber.events`; subscribed until closed."""

    __slots__ = ("_owner", "_runtime", "buffer", "dropped", "limit", "pattern", "wake")

    def __init__(self, owner: Subscriber, pattern: str, limit: int, runtime: Runtime) -> None:
        self._owner = owner
        self._runtime = runtime
        self.pattern = pattern
        self.limit = limit
        self.buffer: deque[tuple[str, Any]] = deque()
        self.dropped = 0
        self.wake: Completion | None = None

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        while not self.buffer:
            if self not in self._owner._streams:
                raise StopAsyncIteration
            self.wake = self._runtime.completion()
            await self.wake.wait(math.inf)
        return self.buffer.popleft()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Unsubscribe; events already buffered are discarded."""
        self._owner._close_stream(self)
        self.buffer.clear()
        if self.wake is not None:
            self.wake.set()


class _Source:
    """One publisher instance and our subscription to it."""

    __slots__ = ("ad", "seqs", "sub", "welcomed")

    def __init__(self, ad: Advertisement) -> None:
        self.ad = ad
        self.sub: Subscription | None = None
        self.welcomed = False
        self.seqs: dict[str, int] = {}


class Subscriber(Component):
    """Receives events from the publishers of its mesh.

    ``group``: subscribers sharing a group name share its events — each event from a
    publisher goes to one live member of the group whose patterns match (round-robin),
    while ungrouped subscribers still get every event.
    """

    kind = "subscriber"

    def __init__(
        self,
        name: str,
        namespace: str | None = None,
        key: str | None = None,
        environment: str | None = None,
        *,
        group: str | None = None,
        max_buffered: int = 10_000,
        interfaces: str | list[str] | tuple[str, ...] | None = None,
        max_message: int | None = None,
        secret: str | Secret | None = None,
        handshake_timeout: float | None = None,
        max_peers: int | None = None,
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
            interfaces=interfaces,
            stats_interval=stats_interval,
            secret=secret,
            handshake_timeout=handshake_timeout,
            max_peers=max_peers,
            max_message=max_message,
        )
        if group is not None and (not group or "\0" in group or ":" in group):
            raise ConfigError(f"group {group!r} must be a non-empty name without ':'")
        if max_buffered < 1:
            raise ConfigError("max_buffered must be at least 1")
        self.group = group
        self._max_buffered = max_buffered
        self._routes: list[_Route] = []
        self._streams: list[EventStream] = []
        self._prefix_refs: dict[bytes, int] = {}
        self._match_cache: dict[str, list[_Route]] = {}
        self._queue: deque[tuple[str, Any, str, list[_Route]]] = deque()
        self._wake: Completion | None = None
        self._known: dict[str, Advertisement] = {}
        self._sources: dict[str, _Source] = {}
        self._changed: anyio.Event | None = None
        self._tg: TaskGroup | None = None
        self._runtime: Runtime | None = None
        self._discovery: Discovery | None = None
        self._transport: Transport | None = None
        self._member = self.instance_id.encode()
        self._stats = dict.fromkeys(
            (
                "received",
                "missed",
                "resets",
                "dropped",
                "handled",
                "handler_errors",
                "malformed",
                "forged_ads",
                "foreign_ads",
                "peers_refused",
                "unmatched",
            ),
            0,
        )

    # -- registration -------------------------------------------------------------

    @overload
    def on(self, pattern: str, fn: None = None) -> Callable[[H], H]: ...

    @overload
    def on(self, pattern: str, fn: H) -> H: ...

    def on(self, pattern: str, fn: H | None = None) -> H | Callable[[H], H]:
        """Run ``fn(payload)`` for each event whose topic matches ``pattern``.

        ``*`` matches one topic segment, ``#`` any number (``price.*``, ``price.#``).
        ``async def`` handlers run on the event loop, plain ones in a worker thread.
        ``meshrpc.current_call().type`` is the event's topic.

        Raises:
            ConfigError: bad pattern, not callable, or registered after start.
        """
        topic_rules.check_pattern(pattern)

        def register(handler: H) -> H:
            if not callable(handler):
                raise ConfigError(f"handler for {pattern!r} is not callable: {handler!r}")
            if self._entered:
                raise ConfigError("register handlers before the subscriber starts")
            is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
                getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
            )
            self._routes.append(_Route(pattern, handler, is_async))
            return handler

        return register if fn is None else register(fn)

    def events(self, pattern: str, *, max_buffered: int = 1000) -> EventStream:
        """Subscribe to ``pattern`` now; iterate ``(topic, payload)`` as events arrive.

        ``async with subscriber.events("price.*") as stream: async for topic, payload
        in stream: ...`` — leaving the block unsubscribes. At most ``max_buffered``
        events wait unread; beyond that new ones are dropped and counted.

        Raises:
            ConfigError: bad pattern.
            RuntimeError: the subscriber is not started.
        """
        topic_rules.check_pattern(pattern)
        if self._runtime is None:
            raise RuntimeError(f"enter the subscriber first: `async with {self!r}:`")
        stream = EventStream(self, pattern, max(1, max_buffered), self._runtime)
        self._streams.append(stream)
        self._add_pattern(pattern)
        return stream

    def _close_stream(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)
            self._stats["dropped"] += stream.dropped
            self._remove_pattern(stream.pattern)

    async def wait_for_publishers(self, n: int = 1, *, timeout: float | None = None) -> int:
        """Wait until ``n`` publishers have confirmed our subscriptions; returns how many.

        Events published after this returns reach this subscriber (barring loss).

        Raises:
            NoResponder: fewer than ``n`` before the timeout (default ``MESHRPC_TIMEOUT``).
        """
        if self._changed is None:
            raise RuntimeError(f"enter the subscriber first: `async with {self!r}:`")
        with anyio.move_on_after(self.settings.timeout if timeout is None else timeout):
            while self._welcomed() < n:
                await self._changed.wait()
        count = self._welcomed()
        if count < n:
            raise NoResponder(f"{count} of {n} publishers after the timeout")
        return count

    def statistics(self) -> dict[str, Any]:
        """Counters (``missed``: sequence gaps; ``dropped``: buffer overflow), publishers."""
        return {
            **self._stats,
            "publishers": len(self._sources),
            "confirmed_publishers": self._welcomed(),
            "buffered": len(self._queue),
        }

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._claim()
        discovery, transport = self._backends()
        self._transport = transport
        self._changed = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._runtime = current_runtime(tg)
        for route in self._routes:
            self._add_pattern(route.pattern)
        try:
            await discovery.start()
            self._discovery = discovery
            tg.start_soon(self._consume, name=f"meshrpc-consume {self.name}")
            await tg.start(self._watch, name=f"meshrpc-watch {self.name}")
        except BaseException:
            await self._shutdown()
            raise
        await self._report(True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        with anyio.CancelScope(shield=True):
            await self._report(False)
            tg.cancel_scope.cancel()
            for stream in list(self._streams):
                await stream.aclose()  # ends any `async for` over it
            try:
                for source in list(self._sources.values()):
                    if source.sub is not None:
                        await source.sub.aclose()
                self._sources.clear()
            finally:
                if self._discovery is not None:
                    await self._discovery.aclose()
        await tg.__aexit__(None, None, None)

    # -- publishers ---------------------------------------------------------------

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        assert self._discovery is not None
        async with self._discovery.watch() as events:
            task_status.started()
            async for event in events:
                await self._on_discovery(event)

    async def _on_discovery(self, event: DiscoveryEvent) -> None:
        ad = event.advertisement
        if (
            ad.kind != "publisher"
            or ad.protocol != PROTOCOL_VERSION
            or not ad.endpoint
            or not self._admit(ad, self._stats)
        ):
            return
        old = self._sources.get(ad.instance_id)
        if event.kind == "removed" or (old is not None and old.ad.endpoint != ad.endpoint):
            self._known.pop(ad.instance_id, None)
            if old is not None:
                await self._drop(old)
            if event.kind == "removed":
                return
        if ad.instance_id not in self._known and len(self._known) >= self.settings.max_peers:
            self._stats["peers_refused"] += 1
            logger.warning(
                "subscriber %r ignores publisher %r at %s: already %d known (max_peers)",
                self.name,
                ad.name,
                ad.endpoint,
                len(self._known),
            )
            return
        self._known[ad.instance_id] = ad
        await self._connect_relevant()

    async def _connect_relevant(self) -> None:
        transport = self._transport
        assert transport is not None
        for instance_id, ad in list(self._known.items()):
            tg = self._tg
            if tg is None:
                return  # leaving (a pattern added or a publisher seen as it began)
            if instance_id in self._sources or not self._wants(ad):
                continue
            source = _Source(ad)
            self._sources[instance_id] = source
            try:
                source.sub = await transport.subscribe_to(
                    tg,
                    ad.endpoint,
                    partial(self._on_event, source),
                    partial(self._on_state, source),
                )
            except ConfigError as exc:
                logger.warning("ignoring publisher %r at %r: %s", ad.name, ad.endpoint, exc)
                del self._sources[instance_id]
                continue
            if self._tg is None:
                # Shutdown began while connecting and may have closed the sources it
                # saw: this one is ours to close.
                await self._drop(source)
                return
            for prefix in self._prefix_refs:
                source.sub.subscribe(prefix)
            # Last: its answer proves the subscriptions above are live at the publisher.
            source.sub.subscribe(b"w:" + self._member)
        self._notify()

    def _wants(self, ad: Advertisement) -> bool:
        patterns = [r.pattern for r in self._routes] + [s.pattern for s in self._streams]
        if not ad.types:
            return True
        return any(topic_rules.may_overlap(p, t) for p in patterns for t in ad.types)

    async def _drop(self, source: _Source) -> None:
        self._sources.pop(source.ad.instance_id, None)
        if source.sub is not None:
            await source.sub.aclose()
        self._notify()

    def _on_state(self, source: _Source, state: PeerState) -> None:
        if state == "down":
            # Reconnecting resends the subscriptions and earns a new welcome.
            source.welcomed = False
            self._notify()

    def _welcomed(self) -> int:
        return sum(1 for s in self._sources.values() if s.welcomed)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    # -- subscriptions ------------------------------------------------------------

    def _prefixes(self, pattern: str) -> list[bytes]:
        if self.group is None:
            return [b"t:" + topic_rules.zmq_prefix(pattern).encode()]
        # A group member receives only what publishers address to it, and tells them
        # what it wants with a subscription that never matches a frame.
        return [
            b"g:" + self._member + b":",
            b"p:" + self.group.encode() + b"\0" + self._member + b"\0" + pattern.encode(),
        ]

    def _add_pattern(self, pattern: str) -> None:
        self._match_cache.clear()
        for prefix in self._prefixes(pattern):
            count = self._prefix_refs.get(prefix, 0)
            self._prefix_refs[prefix] = count + 1
            if count == 0:
                for source in self._sources.values():
                    if source.sub is not None:
                        source.sub.subscribe(prefix)
        if self._tg is not None and self._known:
            self._tg.start_soon(self._connect_relevant)

    def _remove_pattern(self, pattern: str) -> None:
        self._match_cache.clear()
        for prefix in self._prefixes(pattern):
            count = self._prefix_refs.get(prefix, 0) - 1
            if count > 0:
                self._prefix_refs[prefix] = count
                continue
            self._prefix_refs.pop(prefix, None)
            for source in self._sources.values():
                if source.sub is not None:
                    source.sub.unsubscribe(prefix)
                # Events not received while unsubscribed are not gaps: new baselines.
                source.seqs.clear()

    # -- receiving ----------------------------------------------------------------

    def _on_event(self, source: _Source, topic_frame: bytes, frame: bytes) -> None:
        try:
            event = codec.decode_event(frame, max_size=self.settings.max_message)
        except ProtocolError as exc:
            self._stats["malformed"] += 1
            logger.debug("malformed event from %s: %s", source.ad.endpoint, exc)
            return
        if event is None:  # WELCOME: our subscriptions are live at this publisher
            if not source.welcomed:
                source.welcomed = True
                self._notify()
            return
        _, _, seq, topic, _, payload = event
        self._stats["received"] += 1
        self._count_gaps(source, _GROUP_STREAM if topic_frame[:2] == b"g:" else topic, seq)
        routes = self._match_cache.get(topic)
        if routes is None:
            try:
                routes = [r for r in self._routes if topic_rules.matches(r.pattern, topic)]
            except (TypeError, ValueError):
                routes = []
            if len(self._match_cache) > 10_000:
                self._match_cache.clear()
            self._match_cache[topic] = routes
        matched = bool(routes)
        if routes:
            if len(self._queue) >= self._max_buffered:
                self._stats["dropped"] += 1
            else:
                self._queue.append((topic, payload, source.ad.name, routes))
                wake = self._wake
                if wake is not None:
                    self._wake = None
                    wake.set()
        for stream in self._streams:
            if topic_rules.matches(stream.pattern, topic):
                matched = True
                if len(stream.buffer) >= stream.limit:
                    stream.dropped += 1
                    continue
                stream.buffer.append((topic, payload))
                if stream.wake is not None:
                    stream.wake.set()
                    stream.wake = None
        if not matched:
            self._stats["unmatched"] += 1  # a prefix matched, the precise pattern did not

    def _count_gaps(self, source: _Source, stream: str, seq: int) -> None:
        seqs = source.seqs
        last = seqs.get(stream)
        if last is not None:
            if seq > last + 1:
                self._stats["missed"] += seq - last - 1
            elif seq <= last:
                self._stats["resets"] += 1  # the publisher restarted its numbering
        elif len(seqs) >= _MAX_STREAMS:
            seqs.clear()
        seqs[stream] = seq

    async def _consume(self) -> None:
        assert self._runtime is not None
        queue = self._queue
        contexts: dict[tuple[str, str], CallContext] = {}
        current: CallContext | None = None
        while True:
            while queue:
                topic, payload, publisher, routes = queue.popleft()
                # One context per (topic, publisher), made once: handlers see the same
                # values, and building one per event showed up in profiles.
                ctx = contexts.get((topic, publisher))
                if ctx is None:
                    if len(contexts) > 10_000:
                        contexts.clear()
                    ctx = CallContext(
                        type=topic,
                        call_id=0,
                        deadline=math.inf,
                        caller=publisher,
                        responder=self.name,
                    )
                    contexts[(topic, publisher)] = ctx
                if ctx is not current:
                    _set(ctx)
                    current = ctx
                for route in routes:
                    try:
                        if route.is_async:
                            await route.fn(payload)
                        else:
                            await anyio.to_thread.run_sync(route.fn, payload)
                    except Exception:
                        self._stats["handler_errors"] += 1
                        logger.exception(
                            "subscriber %r: handler for %r failed on topic %r",
                            self.name,
                            route.pattern,
                            topic,
                        )
                    else:
                        self._stats["handled"] += 1
            self._wake = self._runtime.completion()
            await self._wake.wait(math.inf)
