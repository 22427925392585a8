"""The per-call primitives: completions and handler runs end at their deadlines."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from meshrpc._runtime import current_runtime

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

GRAIN = 0.002  # the asyncio deadline wheel's slot
SLACK = 0.05  # a busy machine may run a timer this late


async def test_completion_times_out_at_its_deadline_never_before() -> None:
    async with anyio.create_task_group() as tg:
        runtime = current_runtime(tg)
        for delay in (0.0, 0.001, 0.013, 0.05):
            call = runtime.completion()
            deadline = time.monotonic() + delay
            assert await call.wait(deadline) is False
            late = time.monotonic() - deadline
            assert 0 <= late <= GRAIN + SLACK, (delay, late)


async def test_completion_set_before_the_deadline_wins() -> None:
    async with anyio.create_task_group() as tg:
        runtime = current_runtime(tg)
        calls = [runtime.completion() for _ in range(50)]
        deadline = time.monotonic() + 0.2
        for call in calls[::2]:
            call.result = "done"
            call.set()
        results = [await call.wait(deadline) for call in calls[::2]]
        assert results == [True] * 25
        # The other half share the deadline (one wheel slot) and all expire.
        expired = [await call.wait(deadline) for call in calls[1::2]]
        assert expired == [False] * 25
        assert time.monotonic() >= deadline


async def test_run_until_cancels_at_the_deadline_and_returns_early_results() -> None:
    async with anyio.create_task_group() as tg:
        runtime = current_runtime(tg)

        async def slow(seconds: float) -> str:
            await anyio.sleep(seconds)
            return "finished"

        deadline = time.monotonic() + 0.03
        assert await runtime.run_until(deadline, slow, 5) == (False, None)
        assert 0 <= time.monotonic() - deadline <= GRAIN + SLACK
        assert await runtime.run_until(time.monotonic() + 5, slow, 0.001) == (True, "finished")


async def test_run_until_leaves_a_foreign_cancellation_alone() -> None:
    """A cancellation from outside is not mistaken for the deadline."""
    async with anyio.create_task_group() as tg:
        runtime = current_runtime(tg)
        outcome: list[str] = []

        async def runner() -> None:
            try:
                await runtime.run_until(time.monotonic() + 5, anyio.sleep, 5)
            except BaseException as exc:  # the backend's own cancellation class
                outcome.append(type(exc).__name__)
                raise

        async with anyio.create_task_group() as inner:
            inner.start_soon(runner)
            await anyio.wait_all_tasks_blocked()  # the runner is inside run_until
            inner.cancel_scope.cancel()
        assert outcome
        assert outcome[0] in ("CancelledError", "Cancelled")


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the asyncio runtime's wheel
async def test_many_calls_share_a_few_loop_timers(anyio_backend: str) -> None:
    async with anyio.create_task_group() as tg:
        runtime = current_runtime(tg)
        loop = asyncio.get_running_loop()
        before = len(loop._scheduled)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 1.0
        calls = [runtime.completion() for _ in range(200)]
        waiters = [asyncio.ensure_future(call.wait(deadline)) for call in calls]
        await asyncio.sleep(0)
        assert len(loop._scheduled) - before <= 2  # type: ignore[attr-defined]
        for call in calls:
            call.set()
        assert await asyncio.gather(*waiters) == [True] * 200
        # Finished calls leave no timer behind to wake an idle loop.
        assert len(loop._scheduled) - before == 0  # type: ignore[attr-defined]
