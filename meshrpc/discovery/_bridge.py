"""Thread-safe fan-out of discovery state to async watchers, on any anyio backend.

Producers (zeroconf's own thread, another event loop's thread) call :meth:`Hub.put`
and :meth:`Hub.remove`; they never block on a consumer. Each :class:`Watcher` keeps
only the latest state per key (latest wins), so its memory is bounded by the number of
keys, which the hub caps. A socketpair wakes the consumer: the producer writes one
byte without blocking (a full buffer means a wake-up is already pending), and the
consumer waits with :func:`anyio.wait_readable`, which works on asyncio and trio.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import deque
from collections.abc import Mapping
from typing import Final

import anyio
import anyio.lowlevel

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery.base import DiscoveryEvent

__all__ = ["DEFAULT_MAX_INSTANCES", "Hub", "Watcher", "roundtrip"]

logger = logging.getLogger("meshrpc.discovery")

DEFAULT_MAX_INSTANCES: Final = 10_000
_OVERFLOW_LOG_EVERY: Final = 1000


def roundtrip(props: Mapping[str, str]) -> Advertisement:
    """Decode TXT properties as a peer would.

    Raises:
        ProtocolError: they would not decode.
    """
    typed: dict[bytes | str, bytes | str | None] = {k: v for k, v in props.items()}
    return Advertisement.from_properties(typed)


class Hub:
    """The current advertisements by key, fanned out to every subscribed watcher."""

    def __init__(
        self, *, max_instances: int = DEFAULT_MAX_INSTANCES, counters: tuple[str, ...] = ()
    ) -> None:
        self._lock = threading.Lock()
        self._ads: dict[str, Advertisement] = {}
        self._watchers: set[Watcher] = set()
        self._max = max_instances
        names = ("added", "updated", "removed", "overflow", *counters)
        self._counters: dict[str, int] = dict.fromkeys(names, 0)

    def put(self, key: str, ad: Advertisement) -> bool:
        """Record ``ad`` under ``key`` (added or updated); False when over the cap."""
        with self._lock:
            old = self._ads.get(key)
            if old == ad:
                return True
            if old is None and len(self._ads) >= self._max:
                self._counters["overflow"] += 1
                if self._counters["overflow"] % _OVERFLOW_LOG_EVERY == 1:
                    logger.warning(
                        "discovery tracks %d instances already; dropped %r (%d dropped so far)",
                        self._max,
                        key,
                        self._counters["overflow"],
                    )
                return False
            self._ads[key] = ad
            self._counters["added" if old is None else "updated"] += 1
            for watcher in self._watchers:
                watcher.push(key, ad, present=True)
            return True

    def remove(self, key: str) -> Advertisement | None:
        """Forget ``key``; watchers get ``removed`` with its last advertisement."""
        with self._lock:
            ad = self._ads.pop(key, None)
            if ad is None:
                return None
            self._counters["removed"] += 1
            for watcher in self._watchers:
                watcher.push(key, ad, present=False)
            return ad

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (backends count their own drops here)."""
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n

    def snapshot(self) -> dict[str, Advertisement]:
        """A copy of the current advertisements by key."""
        with self._lock:
            return dict(self._ads)

    def statistics(self) -> dict[str, int]:
        """Counters, plus ``known`` (instances now) and ``watchers``."""
        with self._lock:
            return {**self._counters, "known": len(self._ads), "watchers": len(self._watchers)}

    def subscribe(self) -> Watcher:
        """A new watcher whose first events are ``added`` for everything known now."""
        watcher = Watcher(self)
        with self._lock:
            for key, ad in self._ads.items():
                watcher.push(key, ad, present=True)
            self._watchers.add(watcher)
        return watcher

    def _unsubscribe(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)


class Watcher:
    """An async iterator of :class:`DiscoveryEvent`, fed from any thread.

    ``push`` and ``end`` are thread-safe and never block; iterate and ``close`` in the
    consumer's event loop.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._lock = threading.Lock()
        self._rsock, self._wsock = socket.socketpair()
        self._rsock.setblocking(False)
        self._wsock.setblocking(False)
        self._pending: dict[str, tuple[Advertisement, bool]] = {}
        self._signalled = False
        self._ended = False
        self._closed = False
        self._seen: dict[str, Advertisement] = {}  # what the consumer has been told
        self._ready: deque[DiscoveryEvent] = deque()

    def push(self, key: str, ad: Advertisement, *, present: bool) -> None:
        """Set the latest state of ``key`` (thread-safe, never blocks)."""
        with self._lock:
            if self._ended:
                return
            self._pending[key] = (ad, present)
            if not self._signalled:
                self._signalled = True
                self._wake()

    def end(self) -> None:
        """Stop the iteration (thread-safe); the consumer sees the end at its next step."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            self._pending.clear()
            self._wake()
        self._hub._unsubscribe(self)

    def close(self) -> None:
        """End and release the sockets; call from the consumer's event loop."""
        self.end()
        if self._closed:
            return
        self._closed = True
        # A task may still wait on the descriptor: wake it before the number is reused.
        anyio.notify_closing(self._rsock)
        self._rsock.close()
        self._wsock.close()

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> DiscoveryEvent:
        while True:
            if self._ended:
                raise StopAsyncIteration
            if self._ready:
                await anyio.lowlevel.checkpoint()
                if self._ended:
                    raise StopAsyncIteration
                return self._ready.popleft()
            try:
                await anyio.wait_readable(self._rsock)
            except (anyio.ClosedResourceError, OSError):
                raise StopAsyncIteration from None
            self._drain()

    def _wake(self) -> None:
        # Called with the lock held and before the sockets are closed.
        try:
            self._wsock.send(b"\0")
        except BlockingIOError:
            pass  # the buffer is full of wake-ups already
        except OSError as exc:
            logger.warning("cannot wake a discovery watcher: %s", exc)

    def _drain(self) -> None:
        # Empty the socket first, then take the pending states: a producer that pushes
        # after the take sees ``_signalled`` False and writes a new byte.
        try:
            while self._rsock.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            batch, self._pending = self._pending, {}
            self._signalled = False
        for key, (ad, present) in batch.items():
            seen = self._seen.get(key)
            if not present:
                if seen is not None:
                    del self._seen[key]
                    last = ad if ad.instance_id == seen.instance_id else seen
                    self._ready.append(DiscoveryEvent("removed", last))
            elif seen is None:
                self._seen[key] = ad
                self._ready.append(DiscoveryEvent("added", ad))
            elif seen != ad:
                self._seen[key] = ad
                if seen.instance_id == ad.instance_id:
                    self._ready.append(DiscoveryEvent("updated", ad))
                else:  # another instance took over the name
                    self._ready.append(DiscoveryEvent("removed", seen))
                    self._ready.append(DiscoveryEvent("added", ad))
