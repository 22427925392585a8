"""Components on the in-memory discovery backend (fast, isolated) and real ZeroMQ.

The real mDNS path is covered by test_mesh.py and test_multiprocess.py; here the
discovery seam lets a test script joins, restarts and crashes precisely.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import anyio
import pytest

from meshrpc import PeerLost, Requester, Responder
from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery import MemoryDiscovery, MemoryRegistry
from tests import procs
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def responder(registry: MemoryRegistry, label: str = "r", **kwargs: Any) -> Responder:
    r = Responder(name=label, namespace="ns", discovery=MemoryDiscovery(registry), **kwargs)

    @r.on("who")
    async def who(payload: object) -> str:
        return label

    return r


def requester(registry: MemoryRegistry, **kwargs: Any) -> Requester:
    return Requester(name="c", namespace="ns", discovery=MemoryDiscovery(registry), **kwargs)


async def test_discovery_seam_and_advertisement_contents() -> None:
    registry = MemoryRegistry()
    async with responder(registry, "one", version="2.1.0") as r, requester(registry) as client:
        assert await client.send("who", timeout=5) == "one"
        (ad,) = [a for a in registry.advertisements() if a.kind == "responder"]
        assert ad.endpoint == r.endpoint
        assert (ad.name, ad.namespace, ad.version, ad.types) == ("one", "ns", "2.1.0", ("who",))
        assert ad.instance_id == r.instance_id
    assert registry.advertisements() == []  # leaving withdrew it


async def test_a_restart_on_a_new_endpoint_is_followed() -> None:
    registry = MemoryRegistry()
    discovery = MemoryDiscovery(registry)
    await discovery.start()
    try:
        async with requester(registry) as client:
            first = responder(registry, "first")
            async with first:
                await client.wait_for_responders("who", timeout=5)
                ad = registry.advertisements()[0]
            # The same instance id re-advertised at another live endpoint (what mDNS
            # reports when a process restarts under the same name): calls follow it.
            second = responder(registry, "second")
            async with second:
                assert second.endpoint is not None
                moved = Advertisement(
                    **{
                        **{f: getattr(ad, f) for f in ad.__dataclass_fields__},
                        "endpoint": second.endpoint,
                    }
                )
                await discovery.register(moved)
                # Two records for one endpoint: the newest wins (the other is a process
                # that owned the port before).
                await eventually(lambda: client.responders() == [moved])
                answers = {await client.send("who", timeout=5) for _ in range(20)}
                assert answers == {"second"}
                await discovery.unregister(moved)
    finally:
        await discovery.aclose()


async def test_calls_in_flight_end_with_peer_lost_when_the_connection_drops() -> None:
    registry = MemoryRegistry()
    # The hung handler is still running when the responder leaves: a short drain.
    r = responder(registry, "doomed", drain_timeout=0.2)
    entered = anyio.Event()

    @r.on("hang")
    async def hang(payload: object) -> None:
        entered.set()
        await anyio.sleep(30)

    async with requester(registry) as client:
        async with r:
            outcome: list[BaseException] = []

            async def call() -> None:
                try:
                    await client.send("hang", timeout=20)
                except PeerLost as exc:
                    outcome.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await entered.wait()
                started = time.monotonic()
                # Close the socket under the handler without withdrawing, as a crash
                # would: the requester learns from the transport, not from discovery.
                assert r._listener is not None
                await r._listener.aclose()
            lost_after = time.monotonic() - started
        assert len(outcome) == 1
        assert "may or may not have run" in str(outcome[0])
        assert lost_after < 1.0, lost_after
        assert client.statistics()["peer_lost"] == 1


async def test_unreachable_advertisement_is_never_used() -> None:
    registry = MemoryRegistry()
    rogue_discovery = MemoryDiscovery(registry)
    await rogue_discovery.start()
    rogue = Advertisement(
        instance_id="rogue",
        name="rogue",
        kind="responder",
        endpoint="tcp://127.0.0.1:9",  # nothing listens there
        namespace="ns",
        types=("who",),
    )
    try:
        await rogue_discovery.register(rogue)
        async with responder(registry, "real"), requester(registry) as client:
            await client.wait_for_responders("who", timeout=5)
            assert {await client.send("who", timeout=5) for _ in range(30)} == {"real"}
            assert client.statistics()["peers"] == 2
            assert client.statistics()["usable_peers"] == 1
    finally:
        await rogue_discovery.aclose()


def test_meshrpc_run_serves_several_components_until_sigterm(namespace: str) -> None:
    script = textwrap.dedent(
        f"""
        import meshrpc
        a = meshrpc.Responder(name="a", namespace={namespace!r})
        b = meshrpc.Responder(name="b", namespace={namespace!r})
        a.on("ping-a", lambda payload: "a")
        b.on("ping-b", lambda payload: "b")
        print("serving", flush=True)
        meshrpc.run(a, b)
        print("stopped", flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=procs.env(), stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "serving"
        from meshrpc.sync import Requester as SyncRequester

        with SyncRequester(name="c", namespace=namespace) as client:
            assert client.send("ping-a", timeout=10) == "a"
            assert client.send("ping-b", timeout=10) == "b"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
