"""The in-process discovery backend: same semantics as mDNS, no network."""

from __future__ import annotations

import os

os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"

import dataclasses
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import meshrpc.discovery
from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery import Discovery, DiscoveryEvent, MemoryDiscovery, MemoryRegistry
from meshrpc.errors import ConfigError, MeshError, ProtocolError

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_ad(port: int = 7001, **changes: object) -> Advertisement:
    ad = Advertisement(
        instance_id=uuid.uuid4().hex,
        name="svc",
        kind="responder",
        endpoint=f"tcp://127.0.0.1:{port}",
        namespace="ns",
        types=("add",),
    )
    return dataclasses.replace(ad, **changes)  # type: ignore[arg-type]


async def next_event(events: AsyncIterator[DiscoveryEvent], timeout: float = 2.0) -> DiscoveryEvent:
    with anyio.fail_after(timeout):
        return await anext(events)


async def no_event(events: AsyncIterator[DiscoveryEvent]) -> None:
    """Nothing is pending now (every event is ready at once in memory)."""
    with anyio.move_on_after(0.05) as scope:
        event = await anext(events)
    assert scope.cancelled_caught, f"unexpected {event}"


async def started(registry: MemoryRegistry) -> MemoryDiscovery:
    d = MemoryDiscovery(registry)
    await d.start()
    return d


async def test_added_updated_removed() -> None:
    registry = MemoryRegistry()
    a, b = await started(registry), await started(registry)
    assert isinstance(a, Discovery)
    async with b.watch() as events:
        ad = make_ad()
        await a.register(ad)
        assert await next_event(events) == DiscoveryEvent("added", ad)
        moved = dataclasses.replace(ad, endpoint="tcp://127.0.0.1:7002")
        await a.register(moved)
        assert await next_event(events) == DiscoveryEvent("updated", moved)
        await a.register(moved)  # the same again: nothing to report
        await b.unregister(moved)  # not b's: a no-op
        await a.unregister(moved)
        assert await next_event(events) == DiscoveryEvent("removed", moved)
        await a.unregister(moved)  # no-op
        await no_event(events)
    assert registry.statistics() == {
        "added": 1,
        "updated": 1,
        "removed": 1,
        "overflow": 0,
        "known": 0,
        "watchers": 0,
    }
    await a.aclose()
    await b.aclose()


async def test_snapshot_and_two_watchers() -> None:
    registry = MemoryRegistry()
    a, b = await started(registry), await started(registry)
    ads = [make_ad(7100 + i) for i in range(3)]
    for ad in ads:
        await a.register(ad)
    async with a.watch() as first, b.watch() as second:
        for events in (first, second):
            assert [await next_event(events) for _ in ads] == [
                DiscoveryEvent("added", ad) for ad in ads
            ]
        await a.unregister(ads[1])
        for events in (first, second):
            assert await next_event(events) == DiscoveryEvent("removed", ads[1])
    await a.aclose()
    await b.aclose()


async def test_events_coalesce_per_instance() -> None:
    registry = MemoryRegistry()
    d = await started(registry)
    async with d.watch() as events:
        ad = make_ad()
        for port in range(7000, 8000):  # the consumer reads nothing meanwhile
            await d.register(dataclasses.replace(ad, endpoint=f"tcp://127.0.0.1:{port}"))
        last = dataclasses.replace(ad, endpoint="tcp://127.0.0.1:7999")
        assert await next_event(events) == DiscoveryEvent("added", last)
        await no_event(events)

        gone = make_ad()
        await d.register(gone)
        await d.unregister(gone)  # never seen by the consumer: nothing at all
        await d.unregister(last)
        assert await next_event(events) == DiscoveryEvent("removed", last)
        await no_event(events)
    await d.aclose()


async def test_instance_cap_bounds_memory() -> None:
    registry = MemoryRegistry(max_instances=3)
    d = await started(registry)
    ads = [make_ad() for _ in range(5)]
    for ad in ads:
        await d.register(ad)
    assert registry.advertisements() == ads[:3]
    stats = registry.statistics()
    assert stats["overflow"] == 2
    assert stats["known"] == 3
    await d.aclose()
    assert registry.advertisements() == []


async def test_aclose_unregisters_and_ends_watchers() -> None:
    registry = MemoryRegistry()
    a, b = await started(registry), await started(registry)
    ad = make_ad()
    async with b.watch() as events, a.watch() as own:
        await a.register(ad)
        assert await next_event(events) == DiscoveryEvent("added", ad)
        assert await next_event(own) == DiscoveryEvent("added", ad)
        await a.aclose()
        assert await next_event(events) == DiscoveryEvent("removed", ad)
        with anyio.fail_after(1):
            assert [e async for e in own] == []
    await a.aclose()  # idempotent
    with pytest.raises(MeshError):
        await a.register(ad)
    with pytest.raises(MeshError):
        await a.start()
    await b.aclose()


async def test_a_watcher_waiting_in_another_task_ends() -> None:
    d = await started(MemoryRegistry())
    received: list[DiscoveryEvent] = []
    got_one = anyio.Event()
    ended = anyio.Event()

    async def follow(events: AsyncIterator[DiscoveryEvent]) -> None:
        async for event in events:
            received.append(event)
            got_one.set()
        ended.set()

    async with d.watch() as events, anyio.create_task_group() as tg:
        tg.start_soon(follow, events)
        await d.register(ad := make_ad())
        with anyio.fail_after(2):
            await got_one.wait()
        await d.aclose()  # ends the iteration waiting in the other task
        with anyio.fail_after(2):
            await ended.wait()
    assert received == [DiscoveryEvent("added", ad)]


async def test_leaving_watch_ends_an_iteration_waiting_in_another_task() -> None:
    d = await started(MemoryRegistry())
    got_one = anyio.Event()
    ended = anyio.Event()

    async def follow(events: AsyncIterator[DiscoveryEvent]) -> None:
        async for _ in events:
            got_one.set()  # then back to waiting on the socket
        ended.set()

    async with anyio.create_task_group() as tg:
        async with d.watch() as events:
            tg.start_soon(follow, events)
            await d.register(make_ad())
            with anyio.fail_after(2):
                await got_one.wait()
        # The sockets are closed under the waiting task: it ends, nothing leaks.
        with anyio.fail_after(2):
            await ended.wait()
    await d.aclose()


async def test_misuse_is_reported() -> None:
    d = MemoryDiscovery(MemoryRegistry())
    with pytest.raises(MeshError):
        await d.register(make_ad())
    with pytest.raises(MeshError):
        async with d.watch():
            pass
    await d.start()
    await d.start()  # idempotent
    with pytest.raises(ProtocolError):
        await d.register(make_ad(kind="bogus"))
    with pytest.raises(ConfigError):
        await d.register(make_ad(name="n" * 300))
    assert d.statistics()["registered"] == 0
    await d.aclose()


async def test_registry_shared_with_another_threads_loop() -> None:
    """The sync facade runs components in a loop of its own thread."""
    registry = MemoryRegistry()
    d = await started(registry)
    ad = make_ad()
    unregister = threading.Event()

    async def other_loop() -> None:
        other = await started(registry)
        await other.register(ad)
        await anyio.to_thread.run_sync(unregister.wait)
        await other.aclose()

    thread = threading.Thread(target=anyio.run, args=(other_loop,))
    async with d.watch() as events:
        thread.start()
        try:
            assert await next_event(events) == DiscoveryEvent("added", ad)
        finally:
            unregister.set()
        assert await next_event(events) == DiscoveryEvent("removed", ad)
    await anyio.to_thread.run_sync(thread.join)
    await d.aclose()


async def test_default_registry_is_shared() -> None:
    a, b = MemoryDiscovery(), MemoryDiscovery()
    assert a.registry is b.registry
    await a.start()
    await b.start()
    ad = make_ad(namespace=uuid.uuid4().hex)
    async with b.watch() as events:
        await a.register(ad)
        with anyio.fail_after(2):
            async for event in events:
                if event.advertisement.namespace == ad.namespace:
                    assert event == DiscoveryEvent("added", ad)
                    break
    await a.aclose()
    await b.aclose()


def test_package_exports_and_lazy_zeroconf() -> None:
    assert meshrpc.discovery.__all__ == sorted(meshrpc.discovery.__all__)
    for name in meshrpc.discovery.__all__:
        assert getattr(meshrpc.discovery, name) is not None
    code = (
        "import sys, meshrpc.discovery\n"
        "assert 'zeroconf' not in sys.modules\n"
        "from meshrpc.discovery import MdnsDiscovery\n"
        "assert 'zeroconf' in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=30)
