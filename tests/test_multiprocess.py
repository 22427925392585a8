"""Separate Python processes discovering each other over real mDNS on 127.0.0.1."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest

from meshrpc import DeadlineExceeded, NoResponder, RemoteError, Requester
from tests import procs
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_discovery_balancing_errors_and_timeouts_across_processes(
    namespace: str, anyio_backend: str
) -> None:
    with procs.responders(namespace, ["p1", "p2", "p3"], backend=anyio_backend) as children:
        async with Requester(name="mp-client", namespace=namespace) as client:
            assert await client.wait_for_responders("add", 3, timeout=20) == 3
            spread = Counter()
            for i in range(300):
                reply = await client.send("add", {"a": i, "b": 1}, timeout=5)
                assert reply["sum"] == i + 1
                spread[reply["by"]] += 1
            assert set(spread) == {"p1", "p2", "p3"}
            assert min(spread.values()) >= 70, spread

            with pytest.raises(RemoteError) as info:
                await client.send("divide", {"a": 1, "b": 0}, timeout=5)
            assert info.value.remote_type == "ZeroDivisionError"

            started = time.monotonic()
            with pytest.raises(DeadlineExceeded):
                await client.send("slow", {"seconds": 5}, timeout=0.3)
            assert time.monotonic() - started < 1.0

            remaining = await client.send("deadline", timeout=3)
            assert 2.0 < remaining <= 3.0

            with pytest.raises(NoResponder):
                await client.send("not-a-type", timeout=0.3)

            # A clean stop (SIGTERM drains and withdraws) takes the process out of rotation.
            assert procs.stop([children[0]]) == [0]
            await eventually(lambda: client.statistics()["usable_peers"] == 2)
            later = Counter(
                [(await client.send("add", {"a": 0, "b": 0}, timeout=5))["by"] for _ in range(30)]
            )
            assert set(later) == {"p2", "p3"}
        codes = procs.stop(children[1:], signal.SIGINT)
    assert codes == [0, 0]


async def test_requester_process_finds_responders_started_after_it(namespace: str) -> None:
    async with Requester(name="early", namespace=namespace) as client:
        with procs.responders(namespace, ["late"]):
            reply = await client.send("add", {"a": 1, "b": 1}, timeout=20)
    assert reply == {"sum": 2, "by": "late"}
