"""Choosing one responder among those that can answer (pure: no I/O, no clock).

Strategies:

* ``least-pending`` (default): power of two choices — sample two candidates at
  random and take the one with fewer calls in flight; ties go to the one that was
  given fewer calls overall, which keeps sequential traffic evenly spread.
* ``round-robin``: each candidate in turn.
* ``random``: uniformly at random.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, TypeVar

from meshrpc.config import BALANCE_STRATEGIES
from meshrpc.errors import ConfigError

__all__ = ["Balancer", "Candidate", "make_balancer"]


class Candidate(Protocol):
    """What a balancer needs to know about a peer."""

    @property
    def in_flight(self) -> int: ...

    @property
    def assigned(self) -> int: ...


C = TypeVar("C", bound=Candidate)


class Balancer:
    """Pick one candidate per call according to a strategy."""

    __slots__ = ("_counter", "_rng", "strategy")

    def __init__(self, strategy: str = "least-pending", *, seed: int | None = None) -> None:
        if strategy not in BALANCE_STRATEGIES:
            raise ConfigError(
                f"balance={strategy!r} is invalid: must be one of {', '.join(BALANCE_STRATEGIES)}"
            )
        self.strategy = strategy
        self._rng = random.Random(seed)
        self._counter = 0

    def choose(self, candidates: Sequence[C]) -> C:
        """Return one of ``candidates`` (which must not be empty)."""
        n = len(candidates)
        if n == 1:
            return candidates[0]
        if self.strategy == "round-robin":
            self._counter += 1
            return candidates[self._counter % n]
        if self.strategy == "random":
            return candidates[self._rng.randrange(n)]
        i = self._rng.randrange(n)
        j = self._rng.randrange(n - 1)
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        if (a.in_flight, a.assigned) <= (b.in_flight, b.assigned):
            return a
        return b


def make_balancer(strategy: str) -> Balancer:
    """A balancer for ``strategy`` (one of ``BALANCE_STRATEGIES``)."""
    return Balancer(strategy)
