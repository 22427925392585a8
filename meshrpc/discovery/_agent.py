"""Discovery backends whose work is done by one agent per process (Redis, static).

An agent is a background worker (a thread) that registers this process's
advertisements and fills a :class:`~meshrpc.discovery._bridge.Hub` with what it learns.
Components each create their own backend object; :class:`AgentDiscovery` makes them
share one agent per key (the Redis URL, the seed list...) with a reference count, and
implements the ``Discovery`` protocol on top of it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, Protocol, TypeVar

import anyio

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery._bridge import Hub
from meshrpc.discovery.base import DiscoveryEvent
from meshrpc.errors import MeshError

__all__ = ["Agent", "AgentDiscovery", "SharedAgents"]


class Agent(Protocol):
    """What :class:`AgentDiscovery` needs of an agent (all called from worker threads)."""

    @property
    def hub(self) -> Hub: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def register(self, ad: Advertisement) -> None: ...

    def unregister(self, key: str) -> None: ...


A = TypeVar("A", bound=Agent)


class SharedAgents(Generic[A]):
    """Agents by key, started with their first user and stopped with their last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._agents: dict[Hashable, tuple[A, int]] = {}

    def acquire(self, key: Hashable, make: Callable[[], A]) -> A:
        with self._lock:
            entry = self._agents.get(key)
            if entry is None:
                agent: A = make()
                agent.start()
                entry = (agent, 0)
            self._agents[key] = (entry[0], entry[1] + 1)
            return entry[0]

    def release(self, key: Hashable) -> None:
        with self._lock:
            agent, users = self._agents[key]
            if users > 1:
                self._agents[key] = (agent, users - 1)
                return
            del self._agents[key]
        agent.stop()


class AgentDiscovery(Generic[A]):
    """The ``Discovery`` protocol on a shared agent; subclasses say which agent."""

    _shared: SharedAgents[A]
    _closed_message = "this discovery backend was closed; create a new one"

    def __init__(self, key: Hashable) -> None:
        self._key = key
        self._agent: A | None = None
        self._closed = False
        self._registered: dict[str, Advertisement] = {}

    def _make_agent(self) -> A:
        raise NotImplementedError

    async def start(self) -> None:
        """Join (or start) this process's agent; idempotent. Does not wait for the
        network: a component may start while its peers or servers are down.

        Raises:
            MeshError: the object was closed.
        """
        if self._closed:
            raise MeshError(self._closed_message)
        if self._agent is None:
            self._agent = await anyio.to_thread.run_sync(
                self._shared.acquire, self._key, self._make_agent
            )

    async def aclose(self) -> None:
        """Withdraw what this object registered and let go of the agent; idempotent."""
        if self._closed:
            return
        self._closed = True
        agent, self._agent = self._agent, None
        if agent is None:
            return
        for key in list(self._registered):
            await anyio.to_thread.run_sync(agent.unregister, key)
        self._registered.clear()
        await anyio.to_thread.run_sync(self._shared.release, self._key)

    async def register(self, advertisement: Advertisement) -> None:
        """Announce ``advertisement`` (kept alive by the agent)."""
        agent = self._need()
        self._registered[advertisement.instance_id] = advertisement
        await anyio.to_thread.run_sync(agent.register, advertisement)

    async def unregister(self, advertisement: Advertisement) -> None:
        """Withdraw it (peers hear of it at once); a no-op when not registered."""
        agent = self._need()
        if self._registered.pop(advertisement.instance_id, None) is None:
            return
        await anyio.to_thread.run_sync(agent.unregister, advertisement.instance_id)

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[DiscoveryEvent]]:
        """Follow the mesh's advertisements (see the ``Discovery`` protocol)."""
        watcher = self._need().hub.subscribe()
        try:
            yield watcher
        finally:
            watcher.close()

    def statistics(self) -> dict[str, int]:
        """The agent's counters (added, updated, removed, malformed...)."""
        return self._agent.hub.statistics() if self._agent else {}

    def _need(self) -> A:
        if self._agent is None:
            raise MeshError("start the discovery first (await discovery.start())")
        return self._agent
