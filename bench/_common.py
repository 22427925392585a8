"""Shared pieces of the benchmarks: the workload, statistics, child protocol, reporting.

Everything here is used both by the orchestrators (``roundtrip.py`` and the others) and
by the child processes they start, so it imports nothing heavier than the standard
library (``machine_info`` imports pyzmq when called).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BUSY_WARNING",
    "EXPECTED",
    "PAYLOAD",
    "RESULT_PREFIX",
    "BenchError",
    "ClientParams",
    "RunResult",
    "add_client_params",
    "async_sequential",
    "backend_kwargs",
    "busy",
    "cpu_busy_before",
    "client_params",
    "cpu_busy_fraction",
    "emit_error",
    "emit_result",
    "loopback_guard",
    "machine_info",
    "machine_lines",
    "make_payload",
    "markdown_sections",
    "markdown_table",
    "median_result",
    "percentile",
    "print_sections",
    "run_main",
    "sequential_result",
    "text_table",
    "warn_if_busy",
    "write_json",
    "write_readme",
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


def backend_kwargs(name: str) -> dict[str, Any]:
    """meshrpc backend arguments for ``--backend`` (``uvloop``: asyncio with uvloop)."""
    if name == "uvloop":
        return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    return {"backend": name}


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


# ------------------------------------------------------------------- reporting

README = Path(__file__).resolve().parent / "README.md"
BUSY_WARNING = 0.15  # share of busy CPUs above which the numbers get a warning


def cpu_busy_fraction(interval: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``interval`` seconds (from /proc/stat), if known."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total1 - total0
    return None if total <= 0 else 1.0 - (idle1 - idle0) / total


def cpu_busy_before() -> float | None:
    """:func:`cpu_busy_fraction` before a benchmark; warns on stderr if it is high."""
    busy_before = cpu_busy_fraction()
    if busy_before is not None and busy_before > BUSY_WARNING:
        print(
            f"warning: {busy_before:.0%} of the CPUs were busy before starting; other "
            "processes will make the numbers noisy",
            file=sys.stderr,
        )
    return busy_before


def machine_info() -> dict[str, Any]:
    import zmq

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def text_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def fmt(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def markdown_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def busy(fraction: float | None) -> str:
    return "unknown" if fraction is None else f"{fraction:.0%}"


def write_readme(
    section: str, start: str, end: str, path: Path = README, heading: str = "## Results"
) -> None:
    """Replace the text between ``start`` and ``end`` in ``path`` (or append a section
    under ``heading``)."""
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + heading + "\n\n" + section + "\n"
    path.write_text(text)


def machine_lines(report: dict[str, Any]) -> list[str]:
    """The head of a README section: command and date, machine, CPU busy before and after."""
    m = report["machine"]
    return [
        f"Measured {m['date']} with `{report['command']}`",
        "",
        f"Machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; {m['implementation']} "
        f"{m['python']}; pyzmq {m['pyzmq']} (libzmq {m['libzmq']}); {m['platform']}.",
        "",
        f"CPU busy before the benchmark (other processes): {busy(report['cpu_busy_before'])}; "
        f"right after it: {busy(report['cpu_busy_after'])}.",
        "",
    ]


def print_sections(sections: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Print each non-empty ``(title, lines)`` as a title and indented lines."""
    for title, body in sections:
        if body:
            print(f"\n{title}")
            print("\n".join("  " + line for line in body))


def markdown_sections(sections: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Each non-empty ``(title, lines)`` as a title and a bullet list, each followed by a blank."""
    lines: list[str] = []
    for title, body in sections:
        if body:
            lines += [title, "", *(f"- {line}" for line in body), ""]
    return lines


def warn_if_busy(report: dict[str, Any]) -> None:
    after = report["cpu_busy_after"]
    if after is not None and after > BUSY_WARNING:
        print(f"\nwarning: {after:.0%} of the CPUs were busy right after the benchmark")


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` (creating its folder) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def run_main(
    parse_args: Callable[[Sequence[str]], argparse.Namespace],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
    interrupted: str = "interrupted; child processes stopped",
) -> int:
    """An orchestrator's ``main``: parse ``argv`` (default: the command line), run; on
    Ctrl-C print ``interrupted`` and return 130."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
