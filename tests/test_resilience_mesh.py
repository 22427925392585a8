"""Retries, ejection, versions and stale requests on real sockets in one process."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import anyio
import pytest

from meshrpc import ConfigError, DeadlineExceeded, Overloaded, Requester, Responder
from meshrpc._components.responder import _delay_ms
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def versioned(namespace: str, label: str, version: str) -> Responder:
    responder = Responder(name=label, namespace=namespace, version=version)

    @responder.on("who")
    async def who(payload: Any) -> str:
        return label

    if version.startswith("2"):

        @responder.on("new-in-v2")
        async def new(payload: Any) -> str:
            return label

    return responder


async def test_requester_selects_responders_by_version_specifier(namespace: str) -> None:
    async with (
        versioned(namespace, "old", "1.4"),
        versioned(namespace, "new", "2.1"),
        Requester(name="any", namespace=namespace) as anyone,
        Requester(name="v2", namespace=namespace, version=">=2,<3") as v2,
    ):
        await anyone.wait_for_responders("who", 2, timeout=10)
        await v2.wait_for_responders("who", 1, timeout=10)
        assert {await anyone.send("who", timeout=5) for _ in range(20)} == {"old", "new"}
        assert {await v2.send("who", timeout=5) for _ in range(20)} == {"new"}
        # Mixed versions: a type only v2 has goes to v2 only, never to v1.
        assert {await anyone.send("new-in-v2", timeout=5) for _ in range(10)} == {"new"}
        assert v2.statistics()["version_mismatch"] >= 1


def test_bad_version_specifier_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PEP 440"):
        Requester(name="x", version="two-ish")


async def test_idempotent_types_are_advertised(namespace: str) -> None:
    responder = Responder(name="r", namespace=namespace)
    responder.on("get", lambda p: p, idempotent=True)
    responder.on("put", lambda p: p)
    async with responder, Requester(name="c", namespace=namespace) as client:
        await client.wait_for_responders("get", timeout=10)
        (ad,) = client.responders()
        assert ad.idempotent == ("get",)
        assert set(ad.types) == {"get", "put"}


async def test_idempotent_call_is_retried_after_attempt_timeout(namespace: str) -> None:
    slow_first = anyio.Event()
    seen: list[str] = []

    def make(label: str) -> Responder:
        responder = Responder(name=label, namespace=namespace)

        @responder.on("read", idempotent=True)
        async def read(payload: Any) -> str:
            seen.append(label)
            if not slow_first.is_set():
                slow_first.set()
                await anyio.sleep(10)  # the first attempt hangs
            return label

        return responder

    async with make("a"), make("b"), Requester(name="c", namespace=namespace) as client:
        await client.wait_for_responders("read", 2, timeout=10)
        started = time.monotonic()
        answer = await client.send("read", timeout=5, attempt_timeout=0.3)
        assert time.monotonic() - started < 2
        assert len(seen) == 2
        assert seen[0] != seen[1]  # the retry went to the other responder
        assert answer == seen[1]
        stats = client.statistics()
        assert stats["attempt_timeouts"] == 1
        assert stats["retries"] == 1


async def test_non_idempotent_call_is_not_retried_after_attempt_timeout(namespace: str) -> None:
    responder = Responder(name="slow", namespace=namespace)
    runs = 0

    @responder.on("write")
    async def write(payload: Any) -> None:
        nonlocal runs
        runs += 1
        await anyio.sleep(10)

    async with responder, Requester(name="c", namespace=namespace) as client:
        await client.wait_for_responders("write", timeout=10)
        with pytest.raises(DeadlineExceeded):
            await client.send("write", timeout=0.6, attempt_timeout=0.1)
        assert runs == 1


async def test_retry_budget_bounds_attempts_when_every_responder_refuses(
    namespace: str,
) -> None:
    gate = anyio.Event()
    responder = Responder(name="full", namespace=namespace, max_concurrency=1)
    received = Counter[str]()

    @responder.on("hold")
    async def hold(payload: Any) -> None:
        await gate.wait()

    @responder.on("work")
    async def work(payload: Any) -> None:
        received["ran"] += 1

    async with (
        responder,
        Requester(name="c", namespace=namespace, retry_budget=0.2) as client,
    ):
        await client.wait_for_responders("work", timeout=10)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: client.send("hold", timeout=20))
            await eventually(lambda: responder.statistics()["in_flight"] == 1)
            outcomes: Counter[str] = Counter()
            # The reserve (5 tokens) is spent first; then 0.2 retries per call.
            for _ in range(200):
                try:
                    await client.send("work", timeout=2)
                    outcomes["ok"] += 1
                except Overloaded:
                    outcomes["overloaded"] += 1
            gate.set()
        stats = responder.statistics()
        attempts = stats["overloaded"] + received["ran"]
    assert outcomes["overloaded"] == 200
    # 200 calls may add 0.2 * 200 + the reserve refilled over the run (5/s) retries.
    assert attempts <= 200 * 1.2 + 5 + 5 * 3, (attempts, client.statistics())


def test_delay_of_a_held_up_request_is_measured_against_the_fastest_seen() -> None:
    clock = [float("inf"), float("inf"), time.time()]
    now_ms = int(time.time() * 1000)
    assert _delay_ms(clock, now_ms - 5) < 1  # first sight sets the baseline
    assert _delay_ms(clock, now_ms) < 1  # faster than before: the new baseline
    # A request sent 3 s ago that only arrives now sat somewhere for ~3 s.
    assert 2900 < _delay_ms(clock, now_ms - 3000) < 3100
    assert _delay_ms(clock, None) == 0.0  # a requester that does not send its time
    assert _delay_ms(clock, "bogus") == 0.0
    # One odd sample (a requester clock that was 2 s ahead, then corrected) makes later
    # requests look held up, but only until it leaves the two windows.
    clock[2] -= 31
    assert _delay_ms(clock, now_ms + 2000) < 1  # faster than ever: baseline moves down
    clock[2] -= 31
    assert _delay_ms(clock, int(time.time() * 1000)) > 1900  # next window: remembered
    clock[2] -= 31
    assert _delay_ms(clock, int(time.time() * 1000)) < 50  # two windows on: forgotten
