"""mDNS discovery on loopback: in one process, between processes, hostile records.

Network rule: everything binds 127.0.0.1 (set below before anything reads it, and
passed explicitly). Other processes on the machine may announce too, so every test
uses its own namespace and ignores events of other namespaces.
"""

from __future__ import annotations

import os

os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"

import asyncio
import dataclasses
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from zeroconf import ServiceInfo

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery import Discovery, DiscoveryEvent, mdns
from meshrpc.discovery.mdns import SERVICE_TYPE, MdnsDiscovery
from meshrpc.errors import ConfigError, MeshError, ProtocolError

LOOPBACK = ["127.0.0.1"]
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ns() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def make_ad(ns: str, port: int = 7001, **changes: object) -> Advertisement:
    ad = Advertisement(
        instance_id=uuid.uuid4().hex,
        name="svc",
        kind="responder",
        endpoint=f"tcp://127.0.0.1:{port}",
        namespace=ns,
        version="1.2",
        types=("add", "mul"),
        host="testhost",
        pid=os.getpid(),
    )
    return dataclasses.replace(ad, **changes)  # type: ignore[arg-type]


async def next_event(
    events: AsyncIterator[DiscoveryEvent], ns: str, timeout: float = 5.0
) -> DiscoveryEvent:
    """The next event of namespace ``ns`` (others' announcements are skipped)."""
    with anyio.fail_after(timeout):
        async for event in events:
            if event.advertisement.namespace == ns:
                return event
    raise AssertionError("the watch ended")


def zeroconf_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if "_run_loop" in t.name]


async def test_register_update_unregister_in_one_process(ns: str) -> None:
    a, b = MdnsDiscovery(LOOPBACK), MdnsDiscovery(LOOPBACK)
    assert isinstance(a, Discovery)
    await a.start()
    await b.start()
    try:
        async with b.watch() as events:
            ad = make_ad(ns)
            start = time.perf_counter()
            await a.register(ad)
            registered = time.perf_counter() - start
            event = await next_event(events, ns, timeout=1.0)
            added = time.perf_counter() - start
            assert event == DiscoveryEvent("added", ad)

            moved = dataclasses.replace(ad, endpoint="tcp://127.0.0.1:7002")
            start = time.perf_counter()
            await a.register(moved)
            assert await next_event(events, ns, timeout=1.0) == DiscoveryEvent("updated", moved)
            updated = time.perf_counter() - start

            start = time.perf_counter()
            await a.unregister(moved)
            unregistered = time.perf_counter() - start
            assert await next_event(events, ns, timeout=1.0) == DiscoveryEvent("removed", moved)
            removed = time.perf_counter() - start
            await a.unregister(moved)  # no-op
        print(
            f"\n[mdns same process] register returned in {registered * 1e3:.1f} ms, "
            f"added after {added * 1e3:.1f} ms, updated after {updated * 1e3:.1f} ms, "
            f"unregister returned in {unregistered * 1e3:.1f} ms, "
            f"removed after {removed * 1e3:.1f} ms"
        )
        # Three announcements take 450 ms; register returns after the first one.
        assert registered < 0.4
        assert unregistered < 0.4
        stats = a.statistics()
        assert stats["added"] >= 1
        assert stats["updated"] >= 1
        assert stats["removed"] >= 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_requester_without_endpoint(ns: str) -> None:
    d = MdnsDiscovery(LOOPBACK)
    await d.start()
    try:
        async with d.watch() as events:
            ad = make_ad(ns, kind="requester", endpoint="")
            await d.register(ad)
            assert await next_event(events, ns) == DiscoveryEvent("added", ad)
    finally:
        await d.aclose()


async def test_watchers_share_state_and_get_a_snapshot(ns: str) -> None:
    a, b, c = MdnsDiscovery(LOOPBACK), MdnsDiscovery(LOOPBACK), MdnsDiscovery(LOOPBACK)
    for d in (a, b, c):
        await d.start()
    try:
        assert a._shared is b._shared is c._shared
        assert len(zeroconf_threads()) == 1
        ads = [make_ad(ns, port=7100 + i) for i in range(3)]
        async with a.watch() as first:
            for ad in ads:
                await a.register(ad)
            seen = {(await next_event(first, ns)).advertisement for _ in ads}
            assert seen == set(ads)
            # A watcher opened later starts with everything known now.
            async with b.watch() as second, c.watch() as third:
                for events in (second, third):
                    snapshot = [await next_event(events, ns) for _ in ads]
                    assert {e.kind for e in snapshot} == {"added"}
                    assert {e.advertisement for e in snapshot} == set(ads)
                await a.unregister(ads[0])
                for events in (first, second, third):
                    assert await next_event(events, ns) == DiscoveryEvent("removed", ads[0])
    finally:
        for d in (a, b, c):
            await d.aclose()


async def test_aclose_sends_goodbyes_and_ends_its_watchers(ns: str) -> None:
    a, b = MdnsDiscovery(LOOPBACK), MdnsDiscovery(LOOPBACK)
    await a.start()
    await b.start()
    try:
        async with b.watch() as events, a.watch() as own:
            ad = make_ad(ns)
            await a.register(ad)
            assert (await next_event(events, ns)).kind == "added"
            await a.aclose()
            assert await next_event(events, ns) == DiscoveryEvent("removed", ad)
            with anyio.fail_after(1):
                assert [e async for e in own] == []  # a's watcher ended
        await a.aclose()  # idempotent
        with pytest.raises(MeshError):
            await a.register(ad)
        with pytest.raises(MeshError):
            await a.start()
    finally:
        await a.aclose()
        await b.aclose()


async def test_bad_advertisements_are_refused_at_register(ns: str) -> None:
    d = MdnsDiscovery(LOOPBACK)
    with pytest.raises(MeshError):
        await d.register(make_ad(ns))  # not started
    await d.start()
    try:
        with pytest.raises(ProtocolError):
            await d.register(make_ad(ns, kind="bogus"))
        with pytest.raises(ProtocolError):
            await d.register(make_ad(ns, endpoint="tcp://somewhere:1"))
        with pytest.raises(ConfigError):
            await d.register(make_ad(ns, name="n" * 300))
        assert d.statistics()["registered"] == 0
    finally:
        await d.aclose()


async def test_malformed_records_are_dropped_and_counted(ns: str) -> None:
    d = MdnsDiscovery(LOOPBACK)
    await d.start()
    shared = mdns._SHARED
    assert shared is not None
    tag = uuid.uuid4().hex[:12]

    def raw(label: str, props: dict[str, str]) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            f"{label}-{tag}.{SERVICE_TYPE}",
            port=9,
            properties=props,
            server=f"{label}-{tag}.local.",
            parsed_addresses=["127.0.0.1"],
        )

    bad = raw("bad", {"v": "1", "id": "x", "k": "nonsense", "ns": ns})
    good = make_ad(ns)
    turning = make_ad(ns)
    turning_info = raw("turning", turning.to_properties())
    try:
        async with d.watch() as events:
            before = d.statistics()["malformed"]
            await shared.call(shared.async_register(bad))
            await d.register(good)  # announced after the bad one, so handled after it
            assert await next_event(events, ns) == DiscoveryEvent("added", good)
            assert d.statistics()["malformed"] >= before + 1

            # A known instance whose record turns malformed is gone.
            await shared.call(shared.async_register(turning_info))
            assert await next_event(events, ns) == DiscoveryEvent("added", turning)
            props = {**turning.to_properties(), "v": "not-a-number"}
            await shared.call(shared.async_register(raw("turning", props)))
            assert await next_event(events, ns) == DiscoveryEvent("removed", turning)
            assert d.statistics()["malformed"] >= before + 2
    finally:
        await shared.call(shared.async_unregister([bad, turning_info]))
        await d.aclose()


def test_parse_txt() -> None:
    assert mdns._parse_txt(b"") == {}
    assert mdns._parse_txt(b"\x03a=1\x03a=2\x01b\x00\x04c==x") == {
        b"a": b"1",  # the first occurrence wins (RFC 6763 6.4)
        b"b": None,
        b"c": b"=x",
    }
    assert mdns._parse_txt(b"\x09k=v") == {b"k": b"v"}  # truncated: what is there


async def test_no_zeroconf_thread_or_loop_left_after_close() -> None:
    before = zeroconf_threads()
    assert before == []
    ds = [MdnsDiscovery(LOOPBACK) for _ in range(3)]
    for d in ds:
        await d.start()
    shared = mdns._SHARED
    assert shared is not None
    assert shared.refs == 3
    # Zeroconf runs its own loop in its own thread, never on the caller's loop.
    assert len(zeroconf_threads()) == 1
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None  # trio
    assert shared.loop is not running
    for d in ds[:2]:
        await d.aclose()
    assert mdns._SHARED is shared
    assert len(zeroconf_threads()) == 1
    await ds[2].aclose()
    assert mdns._SHARED is None
    assert zeroconf_threads() == []
    assert shared.loop.is_closed()


async def test_interfaces_are_checked() -> None:
    with pytest.raises(ConfigError):
        MdnsDiscovery(["eth0"])
    with pytest.raises(ConfigError):
        MdnsDiscovery([])
    with pytest.raises(ConfigError):
        MdnsDiscovery("127.0.0.1")
    # Not an address of this host (TEST-NET-3): refused before anything is sent.
    with pytest.raises(ConfigError):
        await MdnsDiscovery(["203.0.113.7"]).start()
    assert mdns._SHARED is None
    d = MdnsDiscovery(LOOPBACK)
    await d.start()
    try:
        # One zeroconf per process: a second object must use the same interfaces.
        with pytest.raises(ConfigError):
            await MdnsDiscovery(["127.0.0.2"]).start()
        assert mdns._SHARED is not None
        assert mdns._SHARED.refs == 1
    finally:
        await d.aclose()


# -- between processes ------------------------------------------------------------

CHILD = """
import os, sys, time
os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"
import anyio
from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery.mdns import MdnsDiscovery

async def main() -> None:
    ns, instance_id, port, watch_ns = sys.argv[1:5]
    d = MdnsDiscovery(["127.0.0.1"])
    await d.start()
    try:
        if watch_ns != "-":
            started = time.perf_counter()
            async with d.watch() as events:
                with anyio.fail_after(5):
                    async for event in events:
                        if event.advertisement.namespace == watch_ns:
                            break
            seen = time.perf_counter() - started
            print("seen", seen, d.statistics()["direct_answers"], flush=True)
        ad = Advertisement(
            instance_id=instance_id, name="child", kind="responder",
            endpoint=f"tcp://127.0.0.1:{port}", namespace=ns, pid=os.getpid(),
        )
        print("registering", time.time(), flush=True)
        await d.register(ad)
        print("registered", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
    finally:
        await d.aclose()
    print("closed", flush=True)

anyio.run(main)
"""


async def spawn(ns: str, instance_id: str, port: int, watch_ns: str = "-") -> Process:
    env = {**os.environ, "MESHRPC_INTERFACES": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    return await anyio.open_process(
        [sys.executable, "-c", CHILD, ns, instance_id, str(port), watch_ns],
        env=env,
        stderr=None,
    )


async def read_line(stream: BufferedByteReceiveStream, prefix: str) -> list[str]:
    with anyio.fail_after(10):
        line = (await stream.receive_until(b"\n", 4096)).decode().split()
    assert line[:1] == [prefix], line
    return line[1:]


async def finish(proc: Process) -> None:
    if proc.returncode is None:
        proc.kill()
    with anyio.move_on_after(5, shield=True):
        await proc.aclose()


async def test_discovery_between_processes(ns: str) -> None:
    parent_ns = f"{ns}-parent"
    d = MdnsDiscovery(LOOPBACK)
    await d.start()
    parent_ad = make_ad(parent_ns)
    instance_id = uuid.uuid4().hex
    try:
        await d.register(parent_ad)
        async with d.watch() as events:
            proc = await spawn(ns, instance_id, 7201, watch_ns=parent_ns)
            try:
                assert proc.stdout is not None
                assert proc.stdin is not None
                out = BufferedByteReceiveStream(proc.stdout)
                seen, direct_answers = await read_line(out, "seen")
                # The new process's first look (a legacy unicast query) was answered
                # directly by the parent, without waiting for multicast.
                assert int(direct_answers) >= 1
                (registering,) = await read_line(out, "registering")
                event = await next_event(events, ns)
                latency = time.time() - float(registering)
                assert event.kind == "added"
                ad = event.advertisement
                assert (ad.instance_id, ad.name, ad.endpoint) == (
                    instance_id,
                    "child",
                    "tcp://127.0.0.1:7201",
                )
                assert ad.pid == proc.pid
                await read_line(out, "registered")
                await proc.stdin.send(b"stop\n")
                assert await next_event(events, ns) == DiscoveryEvent("removed", ad)
                await read_line(out, "closed")
                with anyio.fail_after(10):
                    assert await proc.wait() == 0
            finally:
                await finish(proc)
        print(
            f"\n[mdns cross-process] register -> added in the parent: {latency * 1e3:.1f} ms; "
            f"a new process found an existing instance in {float(seen) * 1e3:.1f} ms"
        )
    finally:
        await d.aclose()


async def test_restart_on_a_new_port_is_an_update(ns: str) -> None:
    """A crash (no goodbye) then a restart of the same instance on another port."""
    d = MdnsDiscovery(LOOPBACK)
    await d.start()
    instance_id = uuid.uuid4().hex
    try:
        async with d.watch() as events:
            first = await spawn(ns, instance_id, 7301)
            try:
                assert first.stdout is not None
                await read_line(BufferedByteReceiveStream(first.stdout), "registering")
                event = await next_event(events, ns)
                assert event.kind == "added"
                assert event.advertisement.endpoint == "tcp://127.0.0.1:7301"
                first.send_signal(signal.SIGKILL)
                with anyio.fail_after(10):
                    await first.wait()
            finally:
                await finish(first)
            second = await spawn(ns, instance_id, 7302)
            try:
                assert second.stdout is not None
                assert second.stdin is not None
                out = BufferedByteReceiveStream(second.stdout)
                await read_line(out, "registering")
                event = await next_event(events, ns)
                assert event.kind == "updated"
                assert event.advertisement.instance_id == instance_id
                assert event.advertisement.endpoint == "tcp://127.0.0.1:7302"
                await read_line(out, "registered")
                await second.stdin.send(b"stop\n")
                assert (await next_event(events, ns)).kind == "removed"
            finally:
                await finish(second)
    finally:
        await d.aclose()
