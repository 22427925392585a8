"""Conformance suite for :class:`~meshrpc.discovery.base.Discovery` backends.

Subclass :class:`DiscoveryConformance` in a test module and provide the fixture
``discovery_factory``: an async context manager factory yielding a *started* backend
instance; all instances from one factory must see each other (one registry, one LAN,
one Redis). Tests isolate themselves by a unique namespace, so a shared medium (a real
Redis, a real LAN) is fine::

    class TestMyBackend(DiscoveryConformance):
        @pytest.fixture
        def discovery_factory(self):
            @asynccontextmanager
            async def make():
                d = MyDiscovery(...)
                await d.start()
                try:
                    yield d
                finally:
                    await d.aclose()
            return make
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

import anyio
import pytest

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery.base import Discovery, DiscoveryEvent
from meshrpc.errors import MeshError

__all__ = ["DiscoveryConformance", "Factory"]

Factory = Callable[[], AbstractAsyncContextManager[Discovery]]
EVENT_TIMEOUT = 10.0  # s: generous, for backends with polling and shared machines


def advertisement(namespace: str, port: int = 7001, **changes: Any) -> Advertisement:
    ad = Advertisement(
        instance_id=uuid.uuid4().hex,
        name="conformance",
        kind="responder",
        endpoint=f"tcp://127.0.0.1:{port}",
        namespace=namespace,
        types=("ping",),
    )
    return replace(ad, **changes)


async def next_event(
    events: AsyncIterator[DiscoveryEvent], namespace: str, timeout: float = EVENT_TIMEOUT
) -> DiscoveryEvent:
    """The next event of ``namespace`` (other tests' events on a shared medium skipped)."""
    with anyio.fail_after(timeout):
        async for event in events:
            if event.advertisement.namespace == namespace:
                return event
    raise AssertionError("the watch ended")


async def quiet(events: AsyncIterator[DiscoveryEvent], namespace: str, seconds: float) -> None:
    """Assert no event of ``namespace`` arrives for ``seconds``."""
    with anyio.move_on_after(seconds):
        event = await next_event(events, namespace, timeout=math.inf)
        raise AssertionError(f"unexpected {event}")


@pytest.mark.anyio
class DiscoveryConformance:
    """What every backend must do (see the ``Discovery`` protocol)."""

    @pytest.fixture
    def ns(self) -> str:
        return f"conf-{uuid.uuid4().hex[:10]}"

    async def test_added_updated_removed_across_instances(
        self, discovery_factory: Factory, ns: str
    ) -> None:
        async with (
            discovery_factory() as announcer,
            discovery_factory() as observer,
            observer.watch() as events,
        ):
            ad = advertisement(ns)
            await announcer.register(ad)
            event = await next_event(events, ns)
            assert (event.kind, event.advertisement) == ("added", ad)
            moved = replace(ad, endpoint="tcp://127.0.0.1:7002", types=("ping", "pong"))
            await announcer.register(moved)
            event = await next_event(events, ns)
            assert (event.kind, event.advertisement) == ("updated", moved)
            await announcer.unregister(moved)
            event = await next_event(events, ns)
            assert event.kind == "removed"
            assert event.advertisement.instance_id == ad.instance_id

    async def test_a_new_watcher_first_gets_what_exists(
        self, discovery_factory: Factory, ns: str
    ) -> None:
        async with discovery_factory() as announcer:
            ads = [advertisement(ns, 7001 + i) for i in range(3)]
            for ad in ads:
                await announcer.register(ad)
            async with discovery_factory() as late, late.watch() as events:
                seen: dict[str, Advertisement] = {}
                while len(seen) < 3:
                    event = await next_event(events, ns)
                    assert event.kind == "added"
                    seen[event.advertisement.instance_id] = event.advertisement
                assert sorted(seen.values(), key=lambda a: a.endpoint) == ads

    async def test_two_watchers_see_the_same_changes(
        self, discovery_factory: Factory, ns: str
    ) -> None:
        async with (
            discovery_factory() as announcer,
            discovery_factory() as observer,
            observer.watch() as first,
            observer.watch() as second,
        ):
            ad = advertisement(ns)
            await announcer.register(ad)
            assert (await next_event(first, ns)).advertisement == ad
            assert (await next_event(second, ns)).advertisement == ad

    async def test_aclose_withdraws_what_was_registered(
        self, discovery_factory: Factory, ns: str
    ) -> None:
        async with discovery_factory() as observer, observer.watch() as events:
            ad = advertisement(ns)
            async with discovery_factory() as announcer:
                await announcer.register(ad)
                assert (await next_event(events, ns)).kind == "added"
            event = await next_event(events, ns)
            assert (event.kind, event.advertisement.instance_id) == ("removed", ad.instance_id)

    async def test_unregistering_the_unknown_is_a_no_op(
        self, discovery_factory: Factory, ns: str
    ) -> None:
        async with discovery_factory() as d, d.watch() as events:
            await d.unregister(advertisement(ns))
            await quiet(events, ns, 0.3)

    async def test_own_registrations_are_seen_by_own_watchers(
        self, discovery_factory: Factory, ns: str
    ) -> None:
        async with discovery_factory() as d, d.watch() as events:
            ad = advertisement(ns)
            await d.register(ad)
            assert (await next_event(events, ns)).advertisement == ad

    async def test_closed_backend_refuses_use(self, discovery_factory: Factory, ns: str) -> None:
        async with discovery_factory() as d:
            pass
        with pytest.raises(MeshError):
            await d.register(advertisement(ns))
