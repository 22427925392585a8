"""Publisher: broadcasts events to the subscribers of its mesh (at-most-once).

Topic frames on the wire (the first ZeroMQ frame, so prefix filtering works):

* ``t:<topic>`` — an event for every ungrouped subscriber whose pattern matches;
* ``g:<member-id>:<topic>`` — an event for one member of a balanced group;
* ``w:<subscriber-id>`` — the answer to a subscriber's welcome subscription.

Subscriptions the publisher reads back from its socket (the subscriber sends them):

* ``w:<subscriber-id>`` — sent after a subscriber's other subscriptions: answering it
  proves those are live here (the slow-joiner handshake);
* ``p:<group>\\0<member-id>\\0<pattern>`` — "member of ``group`` wants ``pattern``";
  never matches a frame, it only tells the publisher who is in which group.

ZeroMQ unsubscribes everything of a subscriber that disconnects, so group
membership and the welcomed set follow liveness with no extra protocol.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from meshrpc._components.common import Component
from meshrpc._protocol import codec
from meshrpc._protocol import topics as topic_rules
from meshrpc._protocol.advertisement import Advertisement
from meshrpc._protocol.envelope import Welcome
from meshrpc.discovery.base import Discovery
from meshrpc.errors import ConfigError, NoResponder
from meshrpc.security import Secret
from meshrpc.transport.base import EventSource, Transport

__all__ = ["Publisher"]

logger = logging.getLogger("meshrpc.publisher")

_MAX_TOPIC_SEQUENCES = 100_000  # distinct topics numbered before the numbering restarts
_YIELD_EVERY = 64
_WELCOME = codec.encode(Welcome())


class Publisher(Component):
    """Publishes events (:meth:`publish`) to subscribers of its mesh.

    ``topics``: patterns of what this publisher will publish, advertised so that
    subscribers interested in nothing it sends need not connect; ``None`` means any.
    """

    kind = "publisher"

    def __init__(
        self,
        name: str,
        namespace: str | None = None,
        key: str | None = None,
        environment: str | None = None,
        version: str | None = None,
        *,
        topics: Sequence[str] | None = None,
        port: int | tuple[int, int] | None = None,
        advertise_host: str | None = None,
        interfaces: str | list[str] | tuple[str, ...] | None = None,
        max_message: int | None = None,
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
            max_message=max_message,
        )
        if isinstance(topics, str):
            raise ConfigError("topics must be a list of patterns, not one string")
        self.version = version or ""
        self.topics = tuple(topic_rules.check_pattern(t) for t in topics) if topics else ()
        self._source: EventSource | None = None
        self._discovery: Discovery | None = None
        self._advertisement: Advertisement | None = None
        self._tg: TaskGroup | None = None
        # topic -> [last sequence number, topic frame]
        self._streams: dict[str, list[Any]] = {}
        self._since_yield = 0
        # Counted, not a set: XPUB_VERBOSER repeats (un)subscriptions, and a reconnect
        # may subscribe again before the old pipe's unsubscription arrives.
        self._welcomed: Counter[bytes] = Counter()
        self._subscribers_changed: anyio.Event | None = None
        # group -> member id -> patterns; per-group round-robin counters
        self._groups: dict[str, dict[bytes, list[str]]] = {}
        self._group_turn: dict[str, int] = {}
        self._group_cache: dict[tuple[str, str], list[bytes]] = {}
        self._member_seq: dict[bytes, int] = {}
        self._stats = dict.fromkeys(("published", "group_deliveries", "unmatched_groups"), 0)

    # -- publishing ---------------------------------------------------------------

    def publish_nowait(self, topic: str, payload: Any = None) -> None:
        """Send an event on ``topic`` to every matching subscriber; never blocks.

        Delivery is at-most-once: a subscriber that is not connected, or whose queue
        is full, misses it (and counts the gap when it next hears from this publisher).

        Raises:
            ConfigError: bad topic.
            ProtocolError: the payload is not serialisable (``MessageTooLarge``: too big).
            RuntimeError: the publisher is not started.
        """
        source = self._source
        if source is None:
            raise RuntimeError(f"enter the publisher first: `async with {self!r}:`")
        stream = self._streams.get(topic)
        if stream is None:
            topic_rules.check_topic(topic)
            if len(self._streams) >= _MAX_TOPIC_SEQUENCES:
                # Bounded memory: numbering restarts; subscribers see a reset, not a gap.
                self._streams.clear()
            stream = self._streams[topic] = [0, b"t:" + topic.encode()]
        seq = stream[0] + 1
        frame = codec.encode_event(seq, topic, payload, max_size=self.settings.max_message)
        stream[0] = seq
        source.send(stream[1], frame)
        self._stats["published"] += 1
        if self._groups:
            self._publish_to_groups(topic, payload)

    async def publish(self, topic: str, payload: Any = None) -> None:
        """:meth:`publish_nowait`, then let other tasks run (for loops that publish a lot).

        Raises:
            ConfigError: bad topic.
            ProtocolError: the payload is not serialisable (``MessageTooLarge``: too big).
            RuntimeError: the publisher is not started.
        """
        self.publish_nowait(topic, payload)
        # A cancellation point every time, but a full yield to other tasks only every
        # few events: yielding per event cost three quarters of the throughput.
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()

    async def wait_for_subscribers(self, n: int = 1, *, timeout: float | None = None) -> int:
        """Wait until ``n`` subscribers' subscriptions are live here; returns how many are.

        Raises:
            NoResponder: fewer than ``n`` before the timeout (default ``MESHRPC_TIMEOUT``).
        """
        if self._tg is None or self._subscribers_changed is None:
            raise RuntimeError(f"enter the publisher first: `async with {self!r}:`")
        with anyio.move_on_after(self.settings.timeout if timeout is None else timeout):
            while len(self._welcomed) < n:
                await self._subscribers_changed.wait()
        if len(self._welcomed) < n:
            raise NoResponder(f"{len(self._welcomed)} of {n} subscribers after the timeout")
        return len(self._welcomed)

    @property
    def endpoint(self) -> str | None:
        """The advertised endpoint once started, else ``None``."""
        return self._advertisement.endpoint if self._advertisement else None

    def statistics(self) -> dict[str, Any]:
        """Counters, plus live ``subscribers`` and ``groups`` (group -> member count)."""
        return {
            **self._stats,
            "subscribers": len(self._welcomed),
            "groups": {g: len(m) for g, m in self._groups.items()},
        }

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._claim()
        discovery, transport = self._backends()
        self._subscribers_changed = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            self._source = await self._bind_first_free(
                lambda port: transport.publish_on(
                    tg, self._bind_host(), port, self._on_subscription
                )
            )
            port = int(self._source.endpoint.rsplit(":", 1)[1])
            self._advertisement = Advertisement(
                endpoint=f"tcp://{self._advertise_host()}:{port}",
                version=self.version,
                types=self.topics,
                **self._identity(),
            )
            await discovery.start()
            self._discovery = discovery
            self._advertisement = self._sign(self._advertisement)
            await discovery.register(self._advertisement)
        except BaseException:
            await self._shutdown()
            raise
        logger.info("publisher %r at %s", self.name, self.endpoint)
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
            try:
                if self._discovery is not None:
                    if self._advertisement is not None:
                        await self._discovery.unregister(self._advertisement)
                    await self._discovery.aclose()
            finally:
                source, self._source = self._source, None
                if source is not None:
                    await source.aclose()
        await tg.__aexit__(None, None, None)

    # -- subscriptions ------------------------------------------------------------

    def _on_subscription(self, subscribed: bool, prefix: bytes) -> None:
        if prefix.startswith(b"w:"):
            subscriber = prefix[2:]
            if subscribed:
                self._welcomed[subscriber] += 1
                if self._source is not None:
                    self._source.send(prefix, _WELCOME)
            else:
                self._welcomed[subscriber] -= 1
                if self._welcomed[subscriber] <= 0:
                    del self._welcomed[subscriber]
            self._notify()
        elif prefix.startswith(b"p:"):
            self._on_group_subscription(subscribed, prefix[2:])

    def _on_group_subscription(self, subscribed: bool, body: bytes) -> None:
        try:
            group_b, member, pattern_b = body.split(b"\0", 2)
            group, pattern = group_b.decode(), pattern_b.decode()
            topic_rules.check_pattern(pattern)
        except (ValueError, ConfigError):
            logger.debug("ignored malformed group subscription %r", body)
            return
        members = self._groups.setdefault(group, {})
        patterns = members.setdefault(member, [])
        if subscribed:
            patterns.append(pattern)
        elif pattern in patterns:
            patterns.remove(pattern)
        if not patterns:
            del members[member]
            self._member_seq.pop(member, None)
        if not members:
            del self._groups[group]
        self._group_cache.clear()

    def _publish_to_groups(self, topic: str, payload: Any) -> None:
        assert self._source is not None
        # A snapshot: on trio a send may handle subscriptions that change the groups.
        for group, members in list(self._groups.items()):
            key = (group, topic)
            candidates = self._group_cache.get(key)
            if candidates is None:
                candidates = [
                    m
                    for m, pats in members.items()
                    if any(topic_rules.matches(p, topic) for p in pats)
                ]
                if len(self._group_cache) > 10_000:
                    self._group_cache.clear()
                self._group_cache[key] = candidates
            if not candidates:
                self._stats["unmatched_groups"] += 1
                continue
            turn = self._group_turn.get(group, 0)
            self._group_turn[group] = turn + 1
            member = candidates[turn % len(candidates)]
            seq = self._member_seq.get(member, 0) + 1
            self._member_seq[member] = seq
            frame = codec.encode_event(seq, topic, payload, max_size=self.settings.max_message)
            self._source.send(b"g:" + member + b":" + topic.encode(), frame)
            self._stats["group_deliveries"] += 1

    def _notify(self) -> None:
        if self._subscribers_changed is not None:
            self._subscribers_changed.set()
            self._subscribers_changed = anyio.Event()
