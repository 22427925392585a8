"""Retry budget, backoff and outlier ejection: pure state machines with an injected clock.

No I/O here; the requester feeds them outcomes and asks them questions, and the tests
drive them with a fake clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Breaker", "RetryBudget", "backoff"]


class RetryBudget:
    """A token bucket bounding retries to a share of first attempts (Finagle's design).

    Every first attempt deposits ``ratio`` tokens, every retry withdraws one, so over
    time retries are at most ``ratio`` times the calls made. A reserve of
    ``min_per_second`` tokens a second lets a quiet requester still retry. Tokens
    deposited more than ``window`` seconds ago expire, so a long healthy period cannot
    bank a retry storm for later.
    """

    __slots__ = (
        "_clock",
        "_deposits",
        "_reserve",
        "_reserve_at",
        "min_per_second",
        "ratio",
        "window",
    )

    def __init__(
        self,
        ratio: float = 0.1,
        *,
        min_per_second: float = 5.0,
        window: float = 10.0,
        clock: Callable[[], float],
    ) -> None:
        if ratio < 0 or min_per_second < 0 or window <= 0:
            raise ValueError("ratio and min_per_second must be >= 0, window > 0")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._clock = clock
        # Deposits grouped per whole second: bounded memory whatever the call rate.
        self._deposits: dict[int, float] = {}
        self._reserve = min_per_second
        self._reserve_at = clock()

    def deposit(self, now: float | None = None) -> None:
        """Record a first attempt (at ``now``, read from the clock when not given)."""
        if self.ratio:
            now = self._clock() if now is None else now
            second = int(now)
            if second not in self._deposits:
                self._expire(now)
            self._deposits[second] = self._deposits.get(second, 0.0) + self.ratio

    def try_withdraw(self) -> bool:
        """Take one token for a retry; ``False`` when the budget is spent."""
        now = self._clock()
        self._refill(now)
        self._expire(now)
        if self._reserve >= 1.0:
            self._reserve -= 1.0
            return True
        if self._reserve + sum(self._deposits.values()) < 1.0:
            return False
        need = 1.0 - self._reserve
        self._reserve = 0.0
        for second in sorted(self._deposits):  # oldest first: they expire soonest
            take = min(need, self._deposits[second])
            self._deposits[second] -= take
            need -= take
            if need <= 1e-12:
                break
        return True

    def available(self) -> float:
        """Tokens available now (for statistics)."""
        now = self._clock()
        self._refill(now)
        self._expire(now)
        return self._reserve + sum(self._deposits.values())

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        for second in [s for s in self._deposits if s < horizon]:
            del self._deposits[second]

    def _refill(self, now: float) -> None:
        elapsed = now - self._reserve_at
        self._reserve_at = now
        self._reserve = min(self.min_per_second, self._reserve + elapsed * self.min_per_second)


def backoff(
    retry: int, *, base: float = 0.005, cap: float = 0.25, rng: random.Random | None = None
) -> float:
    """Full-jitter exponential backoff before retry number ``retry`` (from 1), in seconds."""
    ceiling = min(cap, base * (2 ** max(0, retry - 1)))
    return (rng or random).uniform(0.0, ceiling)


class Breaker:
    """Outlier ejection for one peer: out of rotation after consecutive failures.

    After ``threshold`` failures in a row the peer is ejected for ``base`` seconds,
    doubling with each ejection up to ``cap``. When the time is up it is admitted again
    (half-open): its next outcome decides; a success closes the breaker and, after a
    healthy spell, forgets past ejections; a failure ejects it again for longer.
    """

    __slots__ = (
        "_clock",
        "base",
        "cap",
        "ejected_until",
        "ejections",
        "failures",
        "half_open",
        "threshold",
    )

    def __init__(
        self,
        threshold: int = 5,
        *,
        base: float = 1.0,
        cap: float = 30.0,
        clock: Callable[[], float],
    ) -> None:
        self.threshold = threshold
        self.base = base
        self.cap = cap
        self._clock = clock
        self.failures = 0
        self.ejections = 0
        self.ejected_until = 0.0
        self.half_open = False

    @property
    def ejected(self) -> bool:
        return self.ejected_until > 0.0

    def success(self) -> None:
        self.failures = 0
        if self.half_open:
            self.half_open = False
        elif self.ejections:
            # A healthy spell after recovering: the next ejection starts short again.
            self.ejections = max(0, self.ejections - 1)

    def failure(self, may_eject: Callable[[], bool] | None = None) -> bool:
        """Record a failure; ``True`` when this ejects the peer.

        ``may_eject`` is asked only when the failure would eject: the owner's veto
        (for example "not the last peer"); a vetoed failure is still counted.
        """
        self.failures += 1
        if self.ejected:
            return False
        if (self.half_open or self.failures >= self.threshold) and (
            may_eject is None or may_eject()
        ):
            self.eject()
            return True
        return False

    def eject(self) -> None:
        duration = min(self.cap, self.base * (2**self.ejections))
        self.ejections += 1
        self.ejected_until = self._clock() + duration
        self.half_open = False

    def maybe_readmit(self) -> bool:
        """Admit the peer again (half-open) if its ejection is over; ``True`` if it was."""
        if self.ejected and self._clock() >= self.ejected_until:
            self.ejected_until = 0.0
            self.half_open = True
            self.failures = 0
            return True
        return False
