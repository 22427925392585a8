"""Fault matrix rows from shared/RELIABILITY.md, on real processes and sockets.

Each test runs load through a recording harness (tests/chaos.py), injects one fault,
and checks the whole history: one outcome per call, none lost, nothing run after its
deadline, non-idempotent calls run at most once. Figures (kill -> outcome times and
so on) are measured by bench/chaos.py, not asserted here beyond generous bounds.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from meshrpc import Requester
from tests.chaos import Child, History, children_factory
from tests.procs import free_port
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


@pytest.fixture
def chaos(namespace: str, tmp_path: Path) -> Iterator[tuple[History, object]]:
    start, started = children_factory(namespace, tmp_path)
    try:
        yield History(tmp_path), start
    finally:
        for child in started:
            child.close()


async def test_p1_kill_9_mid_call_ends_in_flight_calls_at_once(
    chaos: tuple[History, object], namespace: str
) -> None:
    history, start = chaos
    children: list[Child] = [start(f"r{i}") for i in range(3)]  # type: ignore[operator]
    async with Requester(name="p1", namespace=namespace) as client:
        await client.wait_for_responders("work", 3, timeout=20)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: history.load(client, stop, workers=12, sleep=0.2))
            tg.start_soon(lambda: history.load(client, stop, workers=6, type="iwork", sleep=0.2))
            await eventually(lambda: sum(1 for c in history.calls if c.outcome == "OK") > 30)
            killed_at = time.time()
            children[0].kill()
            await eventually(lambda: client.statistics()["usable_peers"] == 2, timeout=3)
            noticed = time.time() - killed_at
            await anyio.sleep(1.0)
            stop.set()
        summary = history.check(allowed={"OK", "PeerLost"})
    lost = [c for c in history.calls if c.outcome == "PeerLost"]
    assert all(not c.idempotent for c in lost), "idempotent calls must be retried elsewhere"
    assert lost, summary  # some calls were in flight on the killed process
    assert max(c.ended for c in lost) - killed_at < 1.0  # type: ignore[operator]
    assert noticed < 1.0
    after = [c for c in history.calls if c.sent > killed_at + 0.5 and c.outcome == "OK"]
    assert after
    assert all(c.by != "r0" for c in after)


async def test_p2_restart_on_the_same_endpoint_runs_no_stale_request(
    chaos: tuple[History, object], namespace: str
) -> None:
    history, start = chaos
    port = str(free_port())
    old = start("same", "--port", port)  # type: ignore[operator]
    start("other")  # type: ignore[operator]
    async with Requester(name="p2", namespace=namespace) as client:
        await client.wait_for_responders("work", 2, timeout=20)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: history.load(client, stop, workers=8, sleep=0.1, timeout=3))
            await eventually(lambda: len(history.calls) > 40)
            old.kill()
            old.wait()
            new = start("same", "--port", port, ready=False)  # type: ignore[operator]
            await new.ready()
            await eventually(
                lambda: any(c.by == "same" and c.sent > new.started for c in history.calls),
                timeout=10,
            )
            stop.set()
        history.check(allowed={"OK", "PeerLost"})
    by_n = {c.n: c for c in history.calls}
    stale = [
        run
        for run in history.executions()
        if run["pid"] == new.proc.pid and by_n[run["n"]].outcome != "OK"
    ]
    assert stale == []


async def test_p4_sigterm_drains_under_load_and_fails_nothing(
    chaos: tuple[History, object], namespace: str, anyio_backend: str
) -> None:
    history, start = chaos
    children: list[Child] = [start(f"d{i}") for i in range(3)]  # type: ignore[operator]
    async with Requester(name="p4", namespace=namespace) as client:
        await client.wait_for_responders("work", 3, timeout=20)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: history.load(client, stop, workers=12, sleep=0.05))
            await eventually(lambda: len(history.calls) > 60)
            term_at = time.time()
            children[0].signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(children[0].wait) == 0
            exited = time.time() - term_at
            await anyio.sleep(0.5)
            stop.set()
        summary = history.check(allowed={"OK"})
    assert exited < 5, summary
    assert all(c.by != "d0" for c in history.calls if c.sent > term_at + exited)


async def test_p5_rolling_upgrade_v1_to_v2_under_load_fails_nothing(
    chaos: tuple[History, object], namespace: str, anyio_backend: str
) -> None:
    history, start = chaos
    v1: list[Child] = [start(f"v1-{i}", "--version", "1.0") for i in range(3)]  # type: ignore[operator]
    async with Requester(name="p5", namespace=namespace) as client:
        await client.wait_for_responders("work", 3, timeout=20)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: history.load(client, stop, workers=8, sleep=0.02, timeout=5))
            tg.start_soon(lambda: history.load(client, stop, workers=4, sleep=0.02, type="iwork"))
            for i, old in enumerate(v1):
                new = start(f"v2-{i}", "--version", "2.0", ready=False)  # type: ignore[operator]
                await new.ready()
                name = new.name
                await eventually(lambda: any(c.by == name for c in history.calls), timeout=10)  # noqa: B023
                old.signal(signal.SIGTERM)
                assert await anyio.to_thread.run_sync(old.wait) == 0
            upgraded = time.time()
            await eventually(lambda: sum(1 for c in history.calls if c.sent > upgraded) > 50)
            stop.set()
        summary = history.check(allowed={"OK"})
    assert summary["outcomes"]["OK"] > 200
    late = {c.by for c in history.calls if c.sent > upgraded}
    assert late <= {"v2-0", "v2-1", "v2-2"}


async def test_p7_hung_handler_times_out_is_ejected_and_comes_back(
    chaos: tuple[History, object], namespace: str, tmp_path: Path, anyio_backend: str
) -> None:
    history, start = chaos
    hang = tmp_path / "hang"
    hang.touch()
    start("stuck", "--hang-flag", str(hang))  # type: ignore[operator]
    start("fine-1")  # type: ignore[operator]
    start("fine-2")  # type: ignore[operator]
    async with Requester(name="p7", namespace=namespace) as client:
        await client.wait_for_responders("work", 3, timeout=20)
        started = time.monotonic()
        while client.statistics()["ejections"] == 0:
            assert time.monotonic() - started < 20, client.statistics()
            await history.call(client, timeout=0.3)
        ejected_after = time.monotonic() - started
        assert {c.outcome for c in history.calls} <= {"OK", "DeadlineExceeded"}
        timeouts = sum(1 for c in history.calls if c.outcome == "DeadlineExceeded")
        assert 5 <= timeouts <= 8, history.outcomes()
        before = len(history.calls)
        hang.unlink()
        # Calls go to the others while it is out; once back, it serves again.
        seen: Counter[str] = Counter()
        while seen["stuck"] == 0:
            assert time.monotonic() - started < 30, (seen, client.statistics())
            seen[(await history.call(client, timeout=2)).by or "?"] += 1
            await anyio.sleep(0.01)
        history.check(allowed={"OK", "DeadlineExceeded"})
        assert all(c.outcome == "OK" for c in history.calls[before:])
    assert ejected_after < 10


async def test_p8_sigstop_is_detected_and_expired_requests_never_run_on_resume(
    chaos: tuple[History, object], namespace: str
) -> None:
    history, start = chaos
    frozen = start("frozen")  # type: ignore[operator]
    start("awake")  # type: ignore[operator]
    async with Requester(name="p8", namespace=namespace) as client:
        await client.wait_for_responders("work", 2, timeout=20)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: history.load(client, stop, workers=8, sleep=0.05, timeout=1.0))
            await eventually(lambda: len(history.calls) > 40)
            frozen.signal(signal.SIGSTOP)
            stopped_at = time.monotonic()
            await eventually(lambda: client.statistics()["usable_peers"] == 1, timeout=5)
            detected = time.monotonic() - stopped_at
            await anyio.sleep(max(0.0, 3.0 - detected))
            frozen.signal(signal.SIGCONT)
            await eventually(lambda: client.statistics()["usable_peers"] == 2, timeout=10)
            await anyio.sleep(0.5)
            stop.set()
        summary = history.check(allowed={"OK", "PeerLost", "DeadlineExceeded"})
    assert detected < 3.0, summary


async def test_o2_burst_beyond_capacity_is_shed_with_overloaded(
    chaos: tuple[History, object], namespace: str, anyio_backend: str
) -> None:
    history, start = chaos
    for i in range(2):
        start(f"small-{i}", "--max-concurrency", "4")  # type: ignore[operator]
    async with Requester(name="o2", namespace=namespace) as client:
        await client.wait_for_responders("work", 2, timeout=20)
        async with anyio.create_task_group() as tg:
            for _ in range(40):  # 5x the 8 calls the two can run at once
                tg.start_soon(lambda: history.call(client, sleep=0.2, timeout=0.5))
        summary = history.check(allowed={"OK", "Overloaded", "DeadlineExceeded"})
        stats = client.statistics()
    outcomes = summary["outcomes"]
    assert outcomes.get("OK", 0) >= 8, summary
    assert outcomes.get("Overloaded", 0) > 0, summary
    assert max(run["running"] for run in history.executions()) <= 4
    assert stats["refusals"] > 0


async def test_o4_failing_responder_is_ejected_probed_and_brought_back(
    chaos: tuple[History, object], namespace: str, tmp_path: Path, anyio_backend: str
) -> None:
    history, start = chaos
    fail = tmp_path / "fail"
    fail.touch()
    start("sick", "--fail-flag", str(fail))  # type: ignore[operator]
    start("ok-1")  # type: ignore[operator]
    start("ok-2")  # type: ignore[operator]
    async with Requester(name="o4", namespace=namespace) as client:
        await client.wait_for_responders("work", 3, timeout=20)
        for _ in range(200):
            await history.call(client)
            if client.statistics()["ejected_peers"]:
                break
        assert client.statistics()["ejected_peers"] == 1
        opened_after = Counter(c.outcome for c in history.calls)
        assert opened_after["RemoteError"] >= 5
        before = len(history.calls)
        for _ in range(30):
            await history.call(client)  # only the healthy two while it is out
        assert all(c.outcome == "OK" for c in history.calls[before:])
        fail.unlink()
        started = time.monotonic()
        while not any(c.by == "sick" for c in history.calls[before:]):
            assert time.monotonic() - started < 10, client.statistics()
            await history.call(client)
            await anyio.sleep(0.01)
        assert client.statistics()["ejected_peers"] == 0
        history.check(allowed={"OK", "RemoteError"})


async def test_p7b_blocked_event_loop_is_found_by_ping_and_idempotent_calls_fail_over(
    chaos: tuple[History, object], namespace: str, tmp_path: Path, anyio_backend: str
) -> None:
    # ZeroMQ heartbeats are answered by libzmq's own thread, so a process whose event
    # loop is stuck looks alive to them; only the application-level PING notices.
    history, start = chaos
    block = tmp_path / "block"
    start("blocker", "--block-flag", str(block))  # type: ignore[operator]
    start("free")  # type: ignore[operator]
    async with Requester(name="p7b", namespace=namespace) as client:
        await client.wait_for_responders("iwork", 2, timeout=20)
        for _ in range(10):
            await history.call(client, "iwork")  # both warm and answering
        block.touch()
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: history.load(client, stop, workers=4, type="iwork", timeout=8))
            await eventually(lambda: client.statistics()["unresponsive"] >= 1, timeout=6)
            await eventually(lambda: len(history.calls) > 60, timeout=10)
            stop.set()
        block.unlink()
        history.check(allowed={"OK"})
        assert client.statistics()["ejections"] >= 1
