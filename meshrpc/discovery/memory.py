"""In-process discovery for fast component tests: a registry shared in memory.

Same semantics as mDNS (a first ``added`` snapshot, then ``added``/``updated``/
``removed``, coalescing per instance, a cap on tracked instances) without a network.
The registry is thread-safe, so components running in another thread's event loop
(the sync facade) and the test's own loop can share one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.lowlevel

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery._bridge import DEFAULT_MAX_INSTANCES, Hub, Watcher, roundtrip
from meshrpc.discovery.base import DiscoveryEvent
from meshrpc.errors import MeshError

__all__ = ["MemoryDiscovery", "MemoryRegistry"]


class MemoryRegistry:
    """The advertisements of every :class:`MemoryDiscovery` that shares this registry."""

    def __init__(self, *, max_instances: int = DEFAULT_MAX_INSTANCES) -> None:
        self._hub = Hub(max_instances=max_instances)

    def advertisements(self) -> list[Advertisement]:
        """What is registered now."""
        return list(self._hub.snapshot().values())

    def statistics(self) -> dict[str, int]:
        """``added``, ``updated``, ``removed``, ``overflow`` (over the cap), ``known``."""
        return self._hub.statistics()


_DEFAULT_REGISTRY = MemoryRegistry()


class MemoryDiscovery:
    """A :class:`~meshrpc.discovery.base.Discovery` backed by a :class:`MemoryRegistry`.

    Without ``registry`` it uses one module-level registry shared by the process;
    tests create their own for isolation.
    """

    def __init__(self, registry: MemoryRegistry | None = None) -> None:
        self.registry = _DEFAULT_REGISTRY if registry is None else registry
        self._started = False
        self._closed = False
        self._registered: dict[str, Advertisement] = {}
        self._watchers: set[Watcher] = set()

    async def start(self) -> None:
        """Nothing to acquire; idempotent.

        Raises:
            MeshError: the object was closed.
        """
        await anyio.lowlevel.checkpoint()
        if self._closed:
            raise MeshError("this MemoryDiscovery is closed; create a new one")
        self._started = True

    async def aclose(self) -> None:
        """Unregister what this object registered and end its watchers."""
        await anyio.lowlevel.checkpoint()
        if self._closed:
            return
        self._closed = True
        for watcher in list(self._watchers):
            watcher.end()
        for instance_id in list(self._registered):
            del self._registered[instance_id]
            self.registry._hub.remove(instance_id)

    async def register(self, advertisement: Advertisement) -> None:
        """Announce ``advertisement``; the same ``instance_id`` again updates it.

        Raises:
            ConfigError: a property is too long to advertise.
            ProtocolError: the advertisement would not decode on the other side.
            MeshError: not started, or closed.
        """
        await anyio.lowlevel.checkpoint()
        self._check()
        # The same round trip mDNS makes, so both backends accept the same ads.
        ad = roundtrip(advertisement.to_properties())
        self._registered[ad.instance_id] = ad
        self.registry._hub.put(ad.instance_id, ad)

    async def unregister(self, advertisement: Advertisement) -> None:
        """Withdraw ``advertisement``; a no-op unless this object registered it."""
        await anyio.lowlevel.checkpoint()
        if self._registered.pop(advertisement.instance_id, None) is not None:
            self.registry._hub.remove(advertisement.instance_id)

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[DiscoveryEvent]]:
        """Follow advertisements: ``added`` for each known now, then changes.

        Raises:
            MeshError: not started, or closed.
        """
        self._check()
        watcher = self.registry._hub.subscribe()
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)
            watcher.close()

    def statistics(self) -> dict[str, int]:
        """The registry's counters plus ``registered`` (by this object)."""
        return {**self.registry.statistics(), "registered": len(self._registered)}

    def _check(self) -> None:
        if self._closed:
            raise MeshError("this MemoryDiscovery is closed")
        if not self._started:
            raise MeshError("call start() before using this MemoryDiscovery")
