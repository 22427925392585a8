"""Per-call primitives on the running event loop, with a fast path for each backend.

anyio's portable task groups, events and cancel scopes cost tens of microseconds per
use on asyncio, which at one of each per call was most of meshrpc's overhead. The hot
path needs only three things — start a task, wait for a completion until a deadline,
run a coroutine until a deadline — and each backend has a cheap native way to do
them. Everything else in meshrpc stays on plain anyio.

Deadlines are :func:`time.monotonic` values throughout; asyncio's loop clock is the
same clock (uvloop's too, at millisecond resolution: its timers fire within about a
millisecond of the deadline), trio's is converted.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from anyio.abc import TaskGroup

__all__ = ["Completion", "Runtime", "current_backend", "current_runtime"]

logger = logging.getLogger("meshrpc")


class Completion(Protocol):
    """Set once by whoever finishes a call; awaited by the caller until a deadline."""

    result: Any
    error: BaseException | None

    def set(self) -> None: ...

    def is_set(self) -> bool: ...

    async def wait(self, deadline: float) -> bool:
        """Wait until set (``True``) or until ``deadline`` passes (``False``)."""
        ...


class Runtime(Protocol):
    """Cheap task spawning and deadlines on the current event loop."""

    name: str

    def completion(self) -> Completion: ...

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task owned by the component; errors are logged."""
        ...

    async def run_until(
        self, deadline: float, fn: Callable[[Any], Awaitable[Any]], arg: Any
    ) -> tuple[bool, Any]:
        """``(True, await fn(arg))``, or ``(False, None)`` if cancelled at ``deadline``."""
        ...

    async def cancel_all(self) -> None:
        """Cancel the tasks still running and wait for them to finish."""
        ...


def current_backend() -> str:
    """``"asyncio"`` or ``"trio"``: the loop this is called from."""
    try:
        import sniffio
    except ModuleNotFoundError:  # trio depends on sniffio, so without it: asyncio
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return "asyncio"


def current_runtime(task_group: TaskGroup) -> Runtime:
    """The runtime for the running loop; spawned tasks belong to ``task_group`` on trio."""
    if current_backend() == "asyncio":
        return _AsyncioRuntime()
    return _TrioRuntime(task_group)


class _DeadlineWheel:
    """Deadlines rounded up to the next ``_GRAIN`` slot, with one loop timer per slot.

    A loop timer per call cost more than the call's own work at 64 in flight: asyncio
    keeps timers in a heap ordered by a Python ``__lt__``, and a cancelled one stays
    there until it comes due. Calls that end in the same 2 ms share one timer here, and
    forgetting one is a dict removal. Deadlines fire late by at most the grain, never
    early.
    """

    __slots__ = ("_loop", "_slots", "_timers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: dict[int, dict[Any, Callable[[Any], None]]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, deadline: float, key: Any, expire: Callable[[Any], None]) -> int:
        """Call ``expire(key)`` once ``deadline`` passed, unless removed before."""
        slot = int(deadline * _SLOTS_PER_S) + 1
        waiting = self._slots.get(slot)
        if waiting is None:
            waiting = self._slots[slot] = {}
            # asyncio's (and uvloop's) loop clock is time.monotonic().
            self._timers[slot] = self._loop.call_at(slot / _SLOTS_PER_S, self._fire, slot)
        waiting[key] = expire
        return slot

    def remove(self, slot: int, key: Any) -> None:
        waiting = self._slots.get(slot)
        if waiting is not None:
            waiting.pop(key, None)
            if not waiting:
                # Nothing left to expire: no wake-up for it (an idle loop stays idle).
                del self._slots[slot]
                self._timers.pop(slot).cancel()

    def _fire(self, slot: int) -> None:
        self._timers.pop(slot, None)
        waiting = self._slots.pop(slot, None)
        if waiting:
            for key, expire in waiting.items():
                expire(key)


_SLOTS_PER_S: Final = 500  # a 2 ms grain


class _AsyncioCompletion:
    __slots__ = ("_fut", "_wheel", "error", "result")

    def __init__(self, loop: asyncio.AbstractEventLoop, wheel: _DeadlineWheel) -> None:
        self._fut: asyncio.Future[bool] = loop.create_future()
        self._wheel = wheel
        self.result: Any = None
        self.error: BaseException | None = None

    def set(self) -> None:
        if not self._fut.done():
            self._fut.set_result(True)

    def is_set(self) -> bool:
        return self._fut.done() and not self._fut.cancelled() and self._fut.result()

    async def wait(self, deadline: float) -> bool:
        fut = self._fut
        if not fut.done():
            if deadline == math.inf:
                await fut
                return fut.result()
            wheel = self._wheel
            slot = wheel.add(deadline, fut, _expire)
            try:
                await fut
            finally:
                wheel.remove(slot, fut)
        return fut.result()


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


class _Run:
    """A handler running until a deadline; ``expired`` once the deadline cancelled it."""

    __slots__ = ("expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.expired = False


def _cancel_at_deadline(run: _Run) -> None:
    run.expired = True
    run.task.cancel()


class _AsyncioRuntime:
    name = "asyncio"

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wheel = _DeadlineWheel(self._loop)
        self._tasks: set[asyncio.Task[Any]] = set()

    def completion(self) -> Completion:
        return _AsyncioCompletion(self._loop, self._wheel)

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        task: asyncio.Task[Any] = self._loop.create_task(self._run(fn, args))
        self._tasks.add(task)

    async def _run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        # Bookkeeping inside the task rather than in a done callback, which would cost
        # one more scheduled callback per call.
        try:
            await fn(*args)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("meshrpc task failed")
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)

    async def run_until(
        self, deadline: float, fn: Callable[[Any], Awaitable[Any]], arg: Any
    ) -> tuple[bool, Any]:
        task = asyncio.current_task()
        assert task is not None
        run = _Run(task)
        slot = self._wheel.add(deadline, run, _cancel_at_deadline)
        try:
            return True, await fn(arg)
        except asyncio.CancelledError:
            # Ours only if the deadline fired and nobody else asked for a cancellation.
            if not run.expired or task.cancelling() != 1:
                raise
            task.uncancel()
            return False, None
        finally:
            self._wheel.remove(slot, run)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


class _TrioCompletion:
    __slots__ = ("_event", "error", "result")

    def __init__(self) -> None:
        import trio

        self._event = trio.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self, deadline: float) -> bool:
        import trio

        if not self._event.is_set():
            with trio.move_on_at(_trio_deadline(deadline)):
                await self._event.wait()
        return self._event.is_set()


class _TrioRuntime:
    name = "trio"

    def __init__(self, task_group: TaskGroup) -> None:
        # anyio's task group on trio is a thin wrapper over a nursery: cheap enough.
        self._task_group = task_group

    def completion(self) -> Completion:
        return _TrioCompletion()

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        self._task_group.start_soon(self._run, fn, args)

    async def _run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        # As on asyncio: a bug in one task is logged, it does not end the component.
        try:
            await fn(*args)
        except Exception:
            logger.exception("meshrpc task failed")

    async def run_until(
        self, deadline: float, fn: Callable[[Any], Awaitable[Any]], arg: Any
    ) -> tuple[bool, Any]:
        import trio

        with trio.move_on_at(_trio_deadline(deadline)):
            return True, await fn(arg)
        return False, None

    async def cancel_all(self) -> None:
        # The tasks live in the component's task group; cancelling and exiting it (which
        # the component does right after) ends and awaits them.
        return


def _trio_deadline(deadline: float) -> float:
    import trio

    # trio's clock has a random offset from time.monotonic(); convert by difference.
    return trio.current_time() + (deadline - time.monotonic())
