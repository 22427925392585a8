"""Shared pieces of the round-trip benchmark: the workload, statistics, child protocol.

Everything here is used both by the orchestrator (``roundtrip.py``) and by the child
processes it starts, so it imports nothing heavier than the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "EXPECTED",
    "PAYLOAD",
    "RESULT_PREFIX",
    "BenchError",
    "ClientParams",
    "RunResult",
    "add_client_params",
    "async_sequential",
    "client_params",
    "emit_error",
    "emit_result",
    "loopback_guard",
    "make_payload",
    "median_result",
    "percentile",
    "sequential_result",
]

PAYLOAD: dict[str, int] = {"a": 1, "b": 2}
EXPECTED = PAYLOAD["a"] + PAYLOAD["b"]


def make_payload(kib: int) -> dict[str, Any]:
    """The request payload: :data:`PAYLOAD`, plus ``blob`` of ``kib`` KiB of zeros if ``kib``.

    The handler still returns ``a + b``; both servers decode the whole payload.
    """
    if kib <= 0:
        return dict(PAYLOAD)
    return {**PAYLOAD, "blob": bytes(kib * 1024)}


# A client child prints exactly one line starting with this prefix, followed by JSON.
RESULT_PREFIX = "RESULT "


class BenchError(RuntimeError):
    """A reply was missing, unmatched or wrong, or a phase ran out of time."""


@dataclass(frozen=True, slots=True)
class ClientParams:
    """What one client child measures; passed on its command line."""

    warmup: int
    seq_calls: int
    inflight_calls: int
    window: int
    phase_time_limit: float
    payload_kib: int = 0

    def to_argv(self) -> list[str]:
        return [
            "--warmup",
            str(self.warmup),
            "--seq-calls",
            str(self.seq_calls),
            "--inflight-calls",
            str(self.inflight_calls),
            "--window",
            str(self.window),
            "--phase-time-limit",
            str(self.phase_time_limit),
            "--payload-kib",
            str(self.payload_kib),
        ]


@dataclass(frozen=True, slots=True)
class RunResult:
    """The four numbers of one measurement run of one system."""

    seq_p50_us: float
    seq_p99_us: float
    seq_calls_s: float
    inflight_calls_s: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        return cls(
            seq_p50_us=float(data["seq_p50_us"]),
            seq_p99_us=float(data["seq_p99_us"]),
            seq_calls_s=float(data["seq_calls_s"]),
            inflight_calls_s=float(data["inflight_calls_s"]),
        )


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted, non-empty sequence."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def sequential_result(
    latencies_ns: Sequence[int], seq_elapsed_s: float, inflight_calls: int, inflight_s: float
) -> RunResult:
    """Build a :class:`RunResult` from raw sequential latencies and the two phase timings."""
    ordered = sorted(latencies_ns)
    return RunResult(
        seq_p50_us=percentile(ordered, 50) / 1000.0,
        seq_p99_us=percentile(ordered, 99) / 1000.0,
        seq_calls_s=len(ordered) / seq_elapsed_s,
        inflight_calls_s=inflight_calls / inflight_s,
    )


def median_result(runs: Sequence[RunResult]) -> RunResult:
    """Field-wise median of several runs."""
    return RunResult(
        seq_p50_us=statistics.median(r.seq_p50_us for r in runs),
        seq_p99_us=statistics.median(r.seq_p99_us for r in runs),
        seq_calls_s=statistics.median(r.seq_calls_s for r in runs),
        inflight_calls_s=statistics.median(r.inflight_calls_s for r in runs),
    )


def emit_result(result: RunResult) -> None:
    """Child side: hand a result to the orchestrator on stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps({"ok": True, "result": result.to_dict()}) + "\n")
    sys.stdout.flush()


def emit_error(message: str) -> None:
    """Child side: hand a one-line failure to the orchestrator on stdout."""
    sys.stdout.write(RESULT_PREFIX + json.dumps({"ok": False, "error": message}) + "\n")
    sys.stdout.flush()


def loopback_guard() -> None:
    """Refuse to run unless meshrpc is confined to loopback in this process's environment."""
    if os.environ.get("MESHRPC_INTERFACES") != "127.0.0.1":
        raise RuntimeError("MESHRPC_INTERFACES must be 127.0.0.1 for every benchmark process")


async def async_sequential(
    call: Callable[[], Awaitable[object]], n: int
) -> tuple[list[int], float]:
    """``n`` calls one after the other; per-call latencies in ns and the total in s."""
    latencies: list[int] = []
    now_ns = time.perf_counter_ns
    start = time.perf_counter()
    for i in range(n):
        t0 = now_ns()
        result = await call()
        latencies.append(now_ns() - t0)
        if result != EXPECTED:
            raise BenchError(f"wrong result {result!r} to call {i}")
    return latencies, time.perf_counter() - start


def add_client_params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--seq-calls", type=int, required=True)
    parser.add_argument("--inflight-calls", type=int, required=True)
    parser.add_argument("--window", type=int, required=True)
    parser.add_argument("--phase-time-limit", type=float, required=True)
    parser.add_argument("--payload-kib", type=int, default=0)


def client_params(ns: argparse.Namespace) -> ClientParams:
    return ClientParams(
        warmup=ns.warmup,
        seq_calls=ns.seq_calls,
        inflight_calls=ns.inflight_calls,
        window=ns.window,
        phase_time_limit=ns.phase_time_limit,
        payload_kib=ns.payload_kib,
    )
