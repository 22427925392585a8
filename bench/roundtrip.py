"""Round-trip benchmark: meshrpc against raw pyzmq baselines, on loopback.

    python bench/roundtrip.py [--quick] [--runs N] [--backend asyncio|trio|both]
                              [--only all|baselines|meshrpc] [--json PATH] [--write-readme]

Every system is measured with its client and its server in separate processes (children
of this one, started with this interpreter), on 127.0.0.1 only. A run of one system:
start a fresh server, run one client process (warm-up, then ``seq`` calls one after the
other, then ``inflight`` calls with 64 outstanding), stop the server. Runs of the
systems are interleaved, repeated ``--runs`` times, and the medians are reported. See
bench/README.md for what each system is.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import ClientParams, RunResult, median_result
from _procs import BENCH_DIR, ChildError, child_env, run_client, script, server

WINDOW = 64
SEQ_CALLS = 5_000
INFLIGHT_CALLS = 50_000
WARMUP_CALLS = 1_000
QUICK_DIVISOR = 5
PHASE_TIME_LIMIT_S = 120.0
SERVER_READY_TIMEOUT_S = 30.0
CLIENT_STARTUP_ALLOWANCE_S = 60.0

README = BENCH_DIR / "README.md"
README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"

INFLIGHT_TARGET = 1.0  # meshrpc 64-in-flight / zmq.asyncio 64-in-flight, at least
SEQ_P50_TARGET = 1.5  # meshrpc seq p50 / raw blocking seq p50, at most


@dataclass(frozen=True, slots=True)
class System:
    """One thing measured: how to start its server and its client."""

    key: str
    label: str
    server_argv: list[str]
    client_argv: Callable[[str], list[str]]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """What happened to one system over all runs."""

    system: System
    runs: list[RunResult] = field(default_factory=list)
    error: str | None = None

    @property
    def median(self) -> RunResult | None:
        return median_result(self.runs) if self.runs and self.error is None else None


def baseline_systems() -> list[System]:
    zmq_side = script("_zmq_side.py")
    return [
        System(
            "zmq_blocking",
            "raw pyzmq blocking",
            [*zmq_side, "server"],
            lambda endpoint: [*zmq_side, "blocking", endpoint],
        ),
        System(
            "zmq_asyncio",
            "raw zmq.asyncio",
            [*zmq_side, "server"],
            lambda endpoint: [*zmq_side, "asyncio", endpoint],
        ),
    ]


BENCH_SECRET = "benchmark-only mesh secret, not for use"
SECRET_THROUGHPUT_TARGET = 0.75  # secret / plain 64-in-flight calls/s, at least
SECRET_LATENCY_TARGET = 1.25  # secret / plain seq p50, at most


def meshrpc_systems(backends: Sequence[str], secret: bool = False) -> list[System]:
    side = script("_meshrpc_side.py")

    def client(backend: str) -> Callable[[str], list[str]]:
        # The requester finds the responder by mDNS: no endpoint to pass.
        return lambda _endpoint: [*side, "client", "--backend", backend]

    systems = [
        System(
            f"meshrpc_{backend}",
            f"meshrpc ({backend})",
            [*side, "server", "--backend", backend],
            client(backend),
        )
        for backend in backends
    ]
    if secret:
        # The same, with MESHRPC_SECRET on both sides: CurveZMQ on every frame.
        systems += [
            System(
                f"meshrpc_{backend}_secret",
                f"meshrpc ({backend}, secret)",
                [*side, "server", "--backend", backend],
                client(backend),
                {"MESHRPC_SECRET": BENCH_SECRET},
            )
            for backend in backends
        ]
    return systems


def new_namespace() -> str:
    return "bench-" + uuid.uuid4().hex[:8]


def probe_meshrpc() -> str | None:
    """``None`` if meshrpc can be benchmarked, else why not (one line)."""
    try:
        run_client(
            [*script("_meshrpc_side.py"), "probe"],
            child_env(new_namespace()),
            timeout=CLIENT_STARTUP_ALLOWANCE_S,
        )
    except ChildError as exc:
        return str(exc)
    return None


def measure_once(system: System, params: ClientParams) -> RunResult:
    """One run: fresh namespace, fresh server process, one client process."""
    env = {**child_env(new_namespace()), **system.env}
    client_timeout = 3 * params.phase_time_limit + CLIENT_STARTUP_ALLOWANCE_S
    with server(system.server_argv, env, SERVER_READY_TIMEOUT_S) as endpoint:
        argv = system.client_argv(endpoint) + params.to_argv()
        data = run_client(argv, env, client_timeout)
    return RunResult.from_dict(data["result"])


# ------------------------------------------------------------------------ reporting


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


def ratios(outcomes: dict[str, Outcome]) -> list[dict[str, Any]]:
    """The two meshrpc-vs-baseline ratios for each measured meshrpc backend."""
    blocking = outcomes.get("zmq_blocking")
    asyncio_ = outcomes.get("zmq_asyncio")
    b_med = blocking.median if blocking else None
    a_med = asyncio_.median if asyncio_ else None
    rows: list[dict[str, Any]] = []
    for key, outcome in outcomes.items():
        m = outcome.median
        if not key.startswith("meshrpc_") or m is None:
            continue
        plain = outcomes.get(key.removesuffix("_secret"))
        p_med = plain.median if plain and key.endswith("_secret") else None
        if p_med is not None:
            value = m.inflight_calls_s / p_med.inflight_calls_s
            rows.append(
                {
                    "name": f"{outcome.system.label} 64-in-flight / without secret",
                    "value": value,
                    "target": f">= {SECRET_THROUGHPUT_TARGET}",
                    "met": value >= SECRET_THROUGHPUT_TARGET,
                }
            )
            value = m.seq_p50_us / p_med.seq_p50_us
            rows.append(
                {
                    "name": f"{outcome.system.label} seq p50 / without secret",
                    "value": value,
                    "target": f"<= {SECRET_LATENCY_TARGET}",
                    "met": value <= SECRET_LATENCY_TARGET,
                }
            )
            continue
        label = outcome.system.label
        if a_med is not None:
            value = m.inflight_calls_s / a_med.inflight_calls_s
            rows.append(
                {
                    "name": f"{label} 64-in-flight / zmq.asyncio 64-in-flight",
                    "value": value,
                    "target": f">= {INFLIGHT_TARGET}",
                    "met": value >= INFLIGHT_TARGET,
                }
            )
        if b_med is not None:
            value = m.seq_p50_us / b_med.seq_p50_us
            rows.append(
                {
                    "name": f"{label} seq p50 / blocking seq p50",
                    "value": value,
                    "target": f"<= {SEQ_P50_TARGET}",
                    "met": value <= SEQ_P50_TARGET,
                }
            )
    return rows


HEADERS = ("system", "seq p50 µs", "seq p99 µs", "seq calls/s", f"{WINDOW}-in-flight calls/s")


def table_rows(outcomes: dict[str, Outcome]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes.values():
        m = outcome.median
        if m is None:
            rows.append((outcome.system.label, "-", "-", "-", "-"))
            continue
        rows.append(
            (
                outcome.system.label,
                f"{m.seq_p50_us:,.0f}",
                f"{m.seq_p99_us:,.0f}",
                f"{m.seq_calls_s:,.0f}",
                f"{m.inflight_calls_s:,.0f}",
            )
        )
    return rows


def text_table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [HEADERS, *rows]) for i in range(len(HEADERS))]

    def fmt(row: tuple[str, ...]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return "\n".join([fmt(HEADERS), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def markdown_table(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|---" + "|---:" * (len(HEADERS) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def spread_lines(outcomes: dict[str, Outcome]) -> list[str]:
    """Per system, the lowest and highest run of the two headline numbers."""
    lines = []
    for o in outcomes.values():
        if len(o.runs) < 2 or o.error is not None:
            continue
        p50 = [r.seq_p50_us for r in o.runs]
        tput = [r.inflight_calls_s for r in o.runs]
        lines.append(
            f"{o.system.label}: seq p50 {min(p50):,.0f}-{max(p50):,.0f} µs, "
            f"{WINDOW}-in-flight {min(tput):,.0f}-{max(tput):,.0f} calls/s"
        )
    return lines


def ratio_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['name']}: {r['value']:.2f} (target {r['target']}: {'met' if r['met'] else 'NOT met'})"
        for r in rows
    ]


BUSY_WARNING = 0.15


def busy(fraction: float | None) -> str:
    return "unknown" if fraction is None else f"{fraction:.0%}"


def readme_section(report: dict[str, Any], outcomes: dict[str, Outcome]) -> str:
    m = report["machine"]
    p = report["params"]
    lines = [
        README_START,
        f"Measured {m['date']} with `{report['command']}`",
        "",
        f"Machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; {m['implementation']} "
        f"{m['python']}; pyzmq {m['pyzmq']} (libzmq {m['libzmq']}); {m['platform']}.",
        "",
        f"CPU busy before the benchmark (other processes): {busy(report['cpu_busy_before'])}; "
        f"right after it: {busy(report['cpu_busy_after'])}.",
        "",
        f"Medians of {p['runs']} run{'s' if p['runs'] != 1 else ''}; per run "
        f"{p['seq_calls']:,} sequential calls and "
        f"{p['inflight_calls']:,} calls with {p['window']} in flight, after "
        f"{p['warmup']:,} + {4 * p['warmup']:,} warm-up calls.",
        "",
        markdown_table(table_rows(outcomes)),
        "",
    ]
    spread = spread_lines(outcomes)
    if spread:
        lines += ["Spread over the runs (lowest-highest):", ""]
        lines += [f"- {line}" for line in spread]
        lines.append("")
    ratio_rows = ratio_lines(report["ratios"])
    if ratio_rows:
        lines += ["Ratios of the medians:", ""]
    lines += [f"- {line}" for line in ratio_rows]
    lines += [f"- {o.system.label}: not measured: {o.error}" for o in outcomes.values() if o.error]
    lines.append(README_END)
    return "\n".join(lines)


def write_readme(section: str, path: Path = README) -> None:
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(README_START) + ".*?" + re.escape(README_END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + section + "\n"
    path.write_text(text)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="roundtrip.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"divide call counts by {QUICK_DIVISOR}"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3)")
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="both")
    parser.add_argument(
        "--secret", action="store_true", help="also measure meshrpc with MESHRPC_SECRET set"
    )
    parser.add_argument("--only", choices=("all", "baselines", "meshrpc"), default="all")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite the results section of README.md"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the end of a failed child's stderr"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def client_params(quick: bool) -> ClientParams:
    div = QUICK_DIVISOR if quick else 1
    return ClientParams(
        warmup=WARMUP_CALLS // div,
        seq_calls=SEQ_CALLS // div,
        inflight_calls=INFLIGHT_CALLS // div,
        window=WINDOW,
        phase_time_limit=PHASE_TIME_LIMIT_S,
    )


def report_failure(label: str, exc: ChildError, verbose: bool) -> None:
    print(f"  {label}: FAILED: {exc}", file=sys.stderr)
    if verbose and exc.log_tail:
        print("    " + exc.log_tail.rstrip().replace("\n", "\n    "), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"  # loopback only, here and in children
    params = client_params(args.quick)
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]

    systems: list[System] = []
    if args.only in ("all", "baselines"):
        systems += baseline_systems()
    skipped: list[Outcome] = []
    if args.only in ("all", "meshrpc"):
        why = probe_meshrpc()
        if why is None:
            systems += meshrpc_systems(backends, args.secret)
        else:
            print(f"meshrpc part skipped: {why}", file=sys.stderr)
            skipped = [Outcome(s, error=why) for s in meshrpc_systems(backends, args.secret)]

    busy_before = cpu_busy_fraction()
    if busy_before is not None and busy_before > BUSY_WARNING:
        print(
            f"warning: {busy_before:.0%} of the CPUs were busy before starting; other "
            "processes will make the numbers noisy",
            file=sys.stderr,
        )
    outcomes = {s.key: Outcome(s) for s in systems}
    for i in range(1, args.runs + 1):
        for outcome in outcomes.values():
            if outcome.error is not None:
                continue
            label = outcome.system.label
            print(f"run {i}/{args.runs} {label} ...", file=sys.stderr, flush=True)
            try:
                result = measure_once(outcome.system, params)
            except ChildError as exc:
                outcome.error = str(exc)
                report_failure(label, exc, args.verbose)
                continue
            outcome.runs.append(result)
            print(
                f"  seq p50 {result.seq_p50_us:,.0f} µs, p99 {result.seq_p99_us:,.0f} µs, "
                f"{result.seq_calls_s:,.0f}/s; {WINDOW}-in-flight "
                f"{result.inflight_calls_s:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
    outcomes.update({o.system.key: o for o in skipped})

    report: dict[str, Any] = {
        "command": "python bench/roundtrip.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "cpu_busy_before": busy_before,
        "cpu_busy_after": cpu_busy_fraction(),
        "params": {
            "runs": args.runs,
            "quick": args.quick,
            "warmup": params.warmup,
            "seq_calls": params.seq_calls,
            "inflight_calls": params.inflight_calls,
            "window": params.window,
        },
        "systems": {
            key: {
                "label": o.system.label,
                "median": o.median.to_dict() if o.median else None,
                "runs": [r.to_dict() for r in o.runs],
                "error": o.error,
            }
            for key, o in outcomes.items()
        },
        "ratios": ratios(outcomes),
    }

    print()
    print(text_table(table_rows(outcomes)))
    spread = spread_lines(outcomes)
    if spread:
        print("\nspread over the runs (lowest-highest):")
        print("\n".join("  " + line for line in spread))
    lines = ratio_lines(report["ratios"])
    if lines:
        print()
        print("\n".join(lines))
    after = report["cpu_busy_after"]
    if after is not None and after > BUSY_WARNING:
        print(f"\nwarning: {after:.0%} of the CPUs were busy right after the benchmark")
    failed = [o for o in outcomes.values() if o.error]
    for o in failed:
        print(f"\n{o.system.label}: not measured: {o.error}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.write_readme:
        write_readme(readme_section(report, outcomes))
        print(f"updated {README}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
