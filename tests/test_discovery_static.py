"""Static discovery between processes on loopback: seeds, gossip, crashes, leaves."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshrpc import NoResponder, Requester
from meshrpc.discovery.static import StaticDiscovery
from tests.chaos import Child
from tests.procs import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


def static_env(*seeds: str) -> dict[str, str]:
    return {"MESHRPC_DISCOVERY": "static", "MESHRPC_PEERS": ",".join(seeds)}


def requester(namespace: str, *seeds: str) -> Requester:
    from meshrpc._backends import default_transport
    from meshrpc.config import load_settings

    settings = load_settings()
    return Requester(
        name="client",
        namespace=namespace,
        discovery=StaticDiscovery(seeds, lambda: default_transport(settings)),
    )


async def test_one_live_seed_is_enough_to_find_everyone(
    namespace: str, tmp_path: Path, children: list[Child]
) -> None:
    port_a, port_b = free_port(), free_port()
    seed = f"tcp://127.0.0.1:{port_a}"
    dead_seed = f"tcp://127.0.0.1:{free_port()}"
    a = Child("a", namespace, tmp_path, "--port", str(port_a), env=static_env(seed))
    children.append(a)
    a.wait_ready()
    # b knows only the seed; the client knows a dead seed and the live one.
    b = Child("b", namespace, tmp_path, "--port", str(port_b), env=static_env(seed))
    children.append(b)
    b.wait_ready()
    started = time.monotonic()
    async with requester(namespace, dead_seed, seed) as client:
        assert await client.wait_for_responders("work", 2, timeout=15) == 2
        found = time.monotonic() - started
        spread = Counter(
            [(await client.send("work", {"n": i}, timeout=5))["by"] for i in range(60)]
        )
        assert set(spread) == {"a", "b"}
        assert found < 5

        # The seed crashes: b is still checked directly and keeps serving.
        a.kill()
        a.wait()
        await eventually(lambda: client.statistics()["usable_peers"] == 1, timeout=5)
        assert {
            (await client.send("work", {"n": 100 + i}, timeout=5))["by"] for i in range(10)
        } == {"b"}
        # A clean leave is seen at once by whoever polls the leaver (DRAINING on the
        # gossip connection), here as soon as b has been asked directly once.
        gossip = client._discovery
        assert isinstance(gossip, StaticDiscovery)
        answers = gossip.statistics()["answers"]
        await eventually(lambda: gossip.statistics()["answers"] >= answers + 2, timeout=5)
        b.signal(signal.SIGTERM)
        assert b.wait() == 0
        await eventually(lambda: all(ad.name != "b" for ad in client.responders()), timeout=1.5)
        with pytest.raises(NoResponder):
            await client.send("work", {"n": 0}, timeout=0.5)


async def test_a_crashed_member_is_forgotten_after_the_ttl(
    namespace: str, tmp_path: Path, children: list[Child]
) -> None:
    port_a, port_b = free_port(), free_port()
    seed = f"tcp://127.0.0.1:{port_a}"
    a = Child("a", namespace, tmp_path, "--port", str(port_a), env=static_env(seed))
    b = Child("b", namespace, tmp_path, "--port", str(port_b), env=static_env(seed))
    children.extend([a, b])
    a.wait_ready()
    b.wait_ready()
    async with requester(namespace, seed) as client:
        assert await client.wait_for_responders("work", 2, timeout=15) == 2
        b.kill()
        b.wait()
        killed = time.monotonic()
        # Not heard of directly nor through the seed any more: gone after the 5 s TTL.
        await eventually(lambda: len(client.responders()) == 1, timeout=15)
        assert 4.0 < time.monotonic() - killed < 10.0
