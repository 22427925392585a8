from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest

from meshrpc.balancer import Balancer
from meshrpc.errors import ConfigError


@dataclass
class Peer:
    name: str
    in_flight: int = 0
    assigned: int = 0


def test_least_pending_spreads_sequential_calls_evenly() -> None:
    peers = [Peer("a"), Peer("b"), Peer("c")]
    balancer = Balancer("least-pending", seed=1)
    for _ in range(300):
        balancer.choose(peers).assigned += 1
    counts = [p.assigned for p in peers]
    assert max(counts) - min(counts) <= 10, counts


def test_least_pending_avoids_the_busy_peer() -> None:
    peers = [Peer("busy", in_flight=50), Peer("a"), Peer("b")]
    balancer = Balancer("least-pending", seed=2)
    chosen = Counter(balancer.choose(peers).name for _ in range(300))
    assert chosen["busy"] == 0


def test_round_robin_cycles() -> None:
    peers = [Peer("a"), Peer("b"), Peer("c")]
    balancer = Balancer("round-robin")
    assert Counter(balancer.choose(peers).name for _ in range(300)) == {
        "a": 100,
        "b": 100,
        "c": 100,
    }


def test_random_uses_everyone() -> None:
    peers = [Peer("a"), Peer("b"), Peer("c")]
    balancer = Balancer("random", seed=3)
    chosen = Counter(balancer.choose(peers).name for _ in range(300))
    assert set(chosen) == {"a", "b", "c"}
    assert min(chosen.values()) > 60


def test_single_candidate_and_bad_strategy() -> None:
    only = Peer("only")
    assert Balancer().choose([only]) is only
    with pytest.raises(ConfigError):
        Balancer("fastest")
