"""The ``Discovery`` protocol: who exists on the mesh (not whether they are alive).

Liveness is the transport's job; discovery only announces and reports
advertisements. A backend is entered once per component and shared internally
however it likes (mDNS keeps one zeroconf instance per process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from meshrpc._protocol.advertisement import Advertisement

__all__ = ["Discovery", "DiscoveryEvent"]


@dataclass(frozen=True, slots=True)
class DiscoveryEvent:
    """A change in what is advertised.

    ``added``: a new instance; ``updated``: a known instance (same ``instance_id``)
    changed its advertisement (for example restarted on a new port); ``removed``: it
    withdrew (a clean unregister; crashes are not reported by every backend).
    """

    kind: Literal["added", "updated", "removed"]
    advertisement: Advertisement


@runtime_checkable
class Discovery(Protocol):
    """Announce advertisements and watch those of others.

    Lifecycle: ``await start()`` before anything else, ``await aclose()`` at the end
    (it unregisters whatever is still registered). Both are idempotent.
    """

    async def start(self) -> None:
        """Acquire the backend's resources (sockets, threads, connections)."""
        ...

    async def aclose(self) -> None:
        """Withdraw anything still registered and release resources."""
        ...

    async def register(self, advertisement: Advertisement) -> None:
        """Announce ``advertisement``; re-registering the same instance id updates it."""
        ...

    async def unregister(self, advertisement: Advertisement) -> None:
        """Withdraw ``advertisement``; a no-op when it is not registered."""
        ...

    def watch(self) -> AbstractAsyncContextManager[AsyncIterator[DiscoveryEvent]]:
        """Follow advertisements: first ``added`` for each one known now, then changes.

        The iterator is bounded internally: a consumer that falls behind never makes
        the backend's memory grow without limit (events for the same instance coalesce).
        """
        ...
