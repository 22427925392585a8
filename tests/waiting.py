"""Waiting for a condition that has no event to await (a counter in statistics())."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Return once ``condition()`` is true; fail the test after ``timeout`` seconds."""
    step = 0.01
    for _ in range(int(timeout / step) + 1):
        if condition():
            return
        await anyio.sleep(step)
    raise AssertionError(f"condition still false after {timeout} s")
