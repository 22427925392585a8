"""Retry budget, backoff and breaker state machines, driven by a fake clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshrpc.resilience import Breaker, RetryBudget, backoff


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_budget_bounds_retries_to_a_share_of_calls() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, min_per_second=0.0, clock=clock)
    granted = 0
    for _ in range(1000):
        budget.deposit()
        if budget.try_withdraw():
            granted += 1
        clock.now += 0.001
    assert 195 <= granted <= 200


def test_budget_reserve_refills_over_time_but_does_not_bank() -> None:
    clock = Clock()
    budget = RetryBudget(0.0, min_per_second=5.0, clock=clock)
    assert sum(budget.try_withdraw() for _ in range(10)) == 5
    clock.now += 0.2  # one more token
    assert budget.try_withdraw()
    assert not budget.try_withdraw()
    clock.now += 3600  # an hour idle still gives only the reserve
    assert sum(budget.try_withdraw() for _ in range(100)) == 5


def test_budget_deposits_expire_after_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(1.0, min_per_second=0.0, window=10.0, clock=clock)
    for _ in range(50):
        budget.deposit()
    clock.now += 11
    assert not budget.try_withdraw()
    assert budget.available() == 0


def test_budget_memory_is_bounded_when_never_withdrawn() -> None:
    clock = Clock()
    budget = RetryBudget(0.2, clock=clock)
    for _ in range(10_000):
        budget.deposit()
        clock.now += 0.5
    assert len(budget._deposits) <= 12


@given(st.lists(st.sampled_from(["call", "retry", "tick"]), max_size=400))
def test_budget_never_grants_more_than_ratio_plus_reserve(ops: list[str]) -> None:
    clock = Clock()
    budget = RetryBudget(0.2, min_per_second=2.0, window=5.0, clock=clock)
    calls = granted = 0
    for op in ops:
        if op == "call":
            calls += 1
            budget.deposit()
        elif op == "retry":
            granted += budget.try_withdraw()
        else:
            clock.now += 0.1
    elapsed = clock.now - 1000.0
    assert granted <= 0.2 * calls + 2.0 + 2.0 * elapsed + 1e-9


def test_backoff_is_full_jitter_and_capped() -> None:
    rng = random.Random(1)
    assert all(0 <= backoff(1, rng=rng) <= 0.005 for _ in range(100))
    assert max(backoff(3, rng=rng) for _ in range(200)) > 0.01
    assert all(backoff(30, rng=rng) <= 0.25 for _ in range(100))


def test_breaker_ejects_after_consecutive_failures_and_readmits_half_open() -> None:
    clock = Clock()
    breaker = Breaker(3, base=1.0, cap=8.0, clock=clock)
    assert not breaker.failure()
    breaker.success()  # resets the run
    assert not breaker.failure()
    assert not breaker.failure()
    assert breaker.failure()
    assert breaker.ejected
    clock.now += 0.5
    assert not breaker.maybe_readmit()
    clock.now += 0.6
    assert breaker.maybe_readmit()
    assert breaker.half_open
    assert not breaker.ejected
    # One failure while half-open ejects again, for twice as long.
    assert breaker.failure()
    assert breaker.ejected_until == pytest.approx(clock.now + 2.0)
    clock.now += 2.0
    assert breaker.maybe_readmit()
    breaker.success()
    assert not breaker.half_open
    assert not breaker.ejected


def test_breaker_backoff_grows_to_the_cap_and_heals() -> None:
    clock = Clock()
    breaker = Breaker(1, base=1.0, cap=4.0, clock=clock)
    durations = []
    for _ in range(5):
        breaker.failure()
        durations.append(breaker.ejected_until - clock.now)
        clock.now = breaker.ejected_until
        breaker.maybe_readmit()
    assert durations == [1.0, 2.0, 4.0, 4.0, 4.0]
    breaker.success()  # closes
    for _ in range(10):
        breaker.success()  # a healthy spell forgets past ejections
    breaker.failure()
    assert breaker.ejected_until - clock.now == 1.0


def test_breaker_veto_keeps_the_peer_but_counts_the_failure() -> None:
    clock = Clock()
    breaker = Breaker(2, clock=clock)
    asked = []
    assert not breaker.failure(lambda: asked.append(1) or False)  # below the threshold
    assert asked == []
    assert not breaker.failure(lambda: asked.append(2) or False)  # vetoed
    assert asked == [2]
    assert not breaker.ejected
    assert breaker.failures == 2
    assert breaker.failure(lambda: True)  # the next one may eject
    assert breaker.ejected
