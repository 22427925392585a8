"""Events to browsers: one subscription per pattern, shared by every connection following it.

However many pages follow ``metrics.#``, the bridge's Subscriber has one stream for it,
and each event is checked against the allow-list and encoded once. Each connection
has an :class:`Outbox` its own writer drains: a browser that stops reading fills only
its outbox, whose newest events are then dropped and counted, and holds up no one.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import anyio
from anyio.abc import TaskGroup

from meshrpc._components.subscriber import EventStream, Subscriber
from meshrpc.web._rules import AllowList, dumps

__all__ = ["Fanout", "Outbox"]

logger = logging.getLogger("meshrpc.web")

_FEED_BUFFER: Final = 1000  # events of one pattern waiting for its forwarder (a busy loop)


class Outbox:
    """Encoded events waiting for one connection's writer: at most ``limit``.

    ``patterns`` are the ones the connection follows; an event of a pattern it has
    stopped following since is not sent.
    """

    __slots__ = ("_items", "_stats", "_wake", "limit", "patterns")

    def __init__(self, limit: int, stats: dict[str, int]) -> None:
        self.limit = limit
        self.patterns: set[str] = set()
        self._items: deque[tuple[str, str]] = deque()
        self._stats = stats
        self._wake: anyio.Event | None = None

    def put(self, pattern: str, text: str) -> None:
        """Queue one event, or drop it (counted in ``events_dropped``) when full."""
        if len(self._items) >= self.limit:
            self._stats["events_dropped"] += 1
            return
        self._items.append((pattern, text))
        if self._wake is not None:
            self._wake.set()
            self._wake = None

    async def get(self) -> str:
        """The next event of a pattern still followed; waits for one."""
        while True:
            while self._items:
                pattern, text = self._items.popleft()
                if pattern in self.patterns:
                    return text
            self._wake = anyio.Event()
            await self._wake.wait()


class _Feed:
    __slots__ = ("outboxes", "pattern", "scope", "stream")

    def __init__(self, pattern: str, stream: EventStream) -> None:
        self.pattern = pattern
        self.stream = stream
        self.outboxes: set[Outbox] = set()
        self.scope = anyio.CancelScope()


class Fanout:
    """The bridge's feeds: one stream of its Subscriber per pattern some page follows."""

    def __init__(self, subscriber: Subscriber, allowed: AllowList, stats: dict[str, int]) -> None:
        self._subscriber = subscriber
        self._allowed = allowed
        self._stats = stats
        self._feeds: dict[str, _Feed] = {}
        self._tg: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Forward events while inside (the Subscriber running); on leaving, stop all feeds."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    def dropped(self) -> int:
        """Events the feeds' own buffers dropped so far (a loop too busy to forward)."""
        return sum(feed.stream.dropped for feed in self._feeds.values())

    def follow(self, pattern: str, outbox: Outbox) -> None:
        """Send the events of ``pattern`` to ``outbox``, subscribing if no one did yet.

        Raises:
            RuntimeError: the fan-out is not running.
        """
        feed = self._feeds.get(pattern)
        if feed is None:
            if self._tg is None:
                raise RuntimeError("the bridge's fan-out is not running")
            stream = self._subscriber.events(pattern, max_buffered=_FEED_BUFFER)
            feed = self._feeds[pattern] = _Feed(pattern, stream)
            self._tg.start_soon(self._forward, feed)
        feed.outboxes.add(outbox)
        outbox.patterns.add(pattern)

    def unfollow(self, pattern: str, outbox: Outbox) -> None:
        """Stop sending ``pattern`` to ``outbox``; the last one out unsubscribes."""
        outbox.patterns.discard(pattern)
        feed = self._feeds.get(pattern)
        if feed is None:
            return
        feed.outboxes.discard(outbox)
        if not feed.outboxes:
            # Forgotten now, so that a page following the pattern again gets a new feed
            # rather than this closing one.
            del self._feeds[pattern]
            feed.scope.cancel()

    async def _forward(self, feed: _Feed) -> None:
        stats = self._stats
        try:
            with feed.scope:
                async for topic, data in feed.stream:
                    if not self._allowed.allows(topic):
                        continue  # cannot happen (the pattern is inside the allow-list)
                    try:
                        text = dumps({"event": topic, "data": data, "pattern": feed.pattern})
                    except (TypeError, ValueError, RecursionError) as exc:
                        stats["events_unrepresentable"] += 1
                        logger.debug("event on %r has no JSON form, not forwarded: %s", topic, exc)
                        continue
                    for outbox in feed.outboxes:
                        outbox.put(feed.pattern, text)
        finally:
            with anyio.CancelScope(shield=True):
                stats["events_dropped"] += feed.stream.dropped
                await feed.stream.aclose()
            if self._feeds.get(feed.pattern) is feed:
                del self._feeds[feed.pattern]
