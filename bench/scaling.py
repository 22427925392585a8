"""Scaling benchmark: one requester, 64 calls in flight, over 1, 2, 4, 8 responder processes.

    python bench/scaling.py [--quick] [--runs N] [--counts 1,2,4,8] [--backend asyncio]
                            [--calls N] [--no-raw] [--json PATH] [--write-readme] [--verbose]

Every process is a child of this one, on 127.0.0.1 only, in one fresh namespace per
round. A round adds responder processes one count at a time (1, then one more for 2,
two more for 4, ...) and, at each count, runs one requester process that waits until it
has every responder in rotation (found by mDNS), warms up, and makes ``--calls`` calls
with 64 in flight. Each responder counts the calls it handled (answered on its own
``count.I`` type), so the share of every responder is known. Next to each, the raw
baseline: as many raw ROUTER servers, one zmq.asyncio DEALER client connected to all of
them (ZeroMQ's round-robin). Rounds are repeated ``--runs`` times; the medians are
reported, with the ratio of each count's calls/s to the 1-responder figure (target:
>= 0.8 at every count, "must not collapse").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    ClientParams,
    RunResult,
    cpu_busy_before,
    cpu_busy_fraction,
    machine_info,
    machine_lines,
    markdown_table,
    run_main,
    text_table,
    warn_if_busy,
    write_json,
    write_readme,
)
from _procs import BENCH_DIR, ChildError, child_env, run_client, script, servers
from roundtrip import new_namespace

COUNTS = (1, 2, 4, 8)
CALLS = 20_000
WARMUP = 2_000
WINDOW = 64
QUICK_DIVISOR = 5
PHASE_TIME_LIMIT_S = 120.0
SERVER_READY_TIMEOUT_S = 30.0
CLIENT_STARTUP_ALLOWANCE_S = 60.0
TARGET = 0.8  # calls/s at N responders / calls/s at 1 responder, at least

README = BENCH_DIR / "README.md"
README_START = "<!-- scaling:start -->"
README_END = "<!-- scaling:end -->"


@dataclass(slots=True)
class CountOutcome:
    """All runs at one responder count."""

    responders: int
    calls_s: list[float] = field(default_factory=list)
    per_responder: list[list[int]] = field(default_factory=list)  # per run, calls handled

    @property
    def median(self) -> float | None:
        return statistics.median(self.calls_s) if self.calls_s else None

    def shares(self) -> list[float]:
        """Every responder's share of the calls, over all runs."""
        out: list[float] = []
        for counts in self.per_responder:
            total = sum(counts)
            out += [c / total for c in counts] if total else []
        return out


def one_round(
    counts: Sequence[int],
    backend: str,
    calls: int,
    warmup: int,
    outcomes: dict[str, dict[int, CountOutcome]],
) -> None:
    """Fresh namespace; servers added one count at a time; at each count a meshrpc
    requester and (with ``raw`` in ``outcomes``) a raw zmq.asyncio client.

    Raises:
        ChildError: a server did not start, or a client failed.
    """
    env = child_env(new_namespace())
    side, zmq_side = script("_meshrpc_side.py"), script("_zmq_side.py")
    timeout = 3 * PHASE_TIME_LIMIT_S + CLIENT_STARTUP_ALLOWANCE_S
    raw_params = ClientParams(
        warmup=max(1, warmup // 5),
        seq_calls=100,
        inflight_calls=calls,
        window=WINDOW,
        phase_time_limit=PHASE_TIME_LIMIT_S,
    )
    with contextlib.ExitStack() as stack:
        endpoints: list[str] = []
        for n in counts:
            # The servers this count adds, started at once: meshrpc responders and as many
            # raw servers (started even without the raw baseline, so both systems share
            # the machine with the same processes).
            new = range(len(endpoints), n)
            argvs = [[*side, "server", "--backend", backend, "--index", str(i)] for i in new]
            argvs += [[*zmq_side, "server"] for _ in new]
            ready = stack.enter_context(servers(argvs, env, SERVER_READY_TIMEOUT_S))
            endpoints += ready[len(new) :]
            argv = [
                *side,
                "scale-client",
                "--backend",
                backend,
                "--responders",
                str(n),
                "--calls",
                str(calls),
                "--warmup",
                str(warmup),
                "--window",
                str(WINDOW),
                "--phase-time-limit",
                str(PHASE_TIME_LIMIT_S),
            ]
            result = run_client(argv, env, timeout)["result"]
            mine = outcomes["meshrpc"][n]
            mine.calls_s.append(float(result["calls_s"]))
            mine.per_responder.append([int(c) for c in result["per_responder"]])
            line = f"  {n} responder(s): meshrpc {result['calls_s']:,.0f} calls/s"
            if "raw" in outcomes:
                argv = [*zmq_side, "asyncio", ",".join(endpoints[:n]), *raw_params.to_argv()]
                raw = RunResult.from_dict(run_client(argv, env, timeout)["result"])
                outcomes["raw"][n].calls_s.append(raw.inflight_calls_s)
                line += f", raw zmq.asyncio {raw.inflight_calls_s:,.0f} calls/s"
            shares = ", ".join(f"{s:.0%}" for s in _shares(mine.per_responder[-1]))
            print(f"{line}; meshrpc shares {shares}", file=sys.stderr, flush=True)


def _shares(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [c / total for c in counts] if total else []


# ------------------------------------------------------------------------ reporting


def _vs_one(outcomes: dict[int, CountOutcome], n: int) -> float | None:
    base, o = outcomes.get(1), outcomes.get(n)
    b = base.median if base else None
    m = o.median if o else None
    return m / b if m is not None and b else None


def ratios(outcomes: dict[str, dict[int, CountOutcome]]) -> list[dict[str, Any]]:
    """meshrpc calls/s at each count against 1 responder (the target), with raw's own."""
    mesh, raw = outcomes["meshrpc"], outcomes.get("raw", {})
    rows: list[dict[str, Any]] = []
    for n, o in mesh.items():
        value = _vs_one(mesh, n)
        m, b = o.median, mesh[1].median
        if n == 1 or value is None or m is None or b is None:
            continue
        raw_value = _vs_one(raw, n)
        raw_n = raw[n].median if n in raw else None
        rows.append(
            {
                "name": f"meshrpc {n} responders / 1 responder, calls/s with {WINDOW} in flight",
                "value": value,
                "display": f"{value:.2f}",
                "target": f">= {TARGET}",
                "met": value >= TARGET,
                "meshrpc": f"{m:,.0f} calls/s (1: {b:,.0f})",
                "baseline": (
                    f"raw {raw_value:.2f}x ({raw_n:,.0f} calls/s)"
                    if raw_value is not None and raw_n is not None
                    else ""
                ),
            }
        )
    return rows


HEADERS = (
    "responders",
    "meshrpc calls/s",
    "lowest-highest",
    "vs 1",
    "raw zmq.asyncio calls/s",
    "vs 1 ",
    "meshrpc / raw",
    "meshrpc share per responder (ideal)",
)


def table_rows(outcomes: dict[str, dict[int, CountOutcome]]) -> list[tuple[str, ...]]:
    mesh, raw = outcomes["meshrpc"], outcomes.get("raw", {})
    rows: list[tuple[str, ...]] = []
    for n, o in mesh.items():
        m = o.median
        r = raw[n].median if n in raw else None
        shares = o.shares()
        vs, raw_vs = _vs_one(mesh, n), _vs_one(raw, n)
        rows.append(
            (
                str(n),
                "-" if m is None else f"{m:,.0f}",
                f"{min(o.calls_s):,.0f}-{max(o.calls_s):,.0f}" if o.calls_s else "-",
                "-" if vs is None else f"{vs:.2f}",
                "-" if r is None else f"{r:,.0f}",
                "-" if raw_vs is None else f"{raw_vs:.2f}",
                "-" if m is None or not r else f"{m / r:.2f}",
                f"{min(shares):.1%}-{max(shares):.1%} ({1 / n:.1%})" if shares else "-",
            )
        )
    return rows


def ratio_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    return [
        f"{r['name']}: {r['display']} (target {r['target']}: {'met' if r['met'] else 'NOT met'})"
        + (f"; {r['baseline']}" if r["baseline"] else "")
        for r in rows
    ]


def readme_section(report: dict[str, Any], outcomes: dict[str, dict[int, CountOutcome]]) -> str:
    p = report["params"]
    lines = [
        README_START,
        *machine_lines(report),
        f"Medians of {p['runs']} round{'s' if p['runs'] != 1 else ''}; meshrpc on "
        f"{p['backend']}; per count {p['calls']:,} calls with {p['window']} in flight after "
        f"{p['warmup']:,} warm-up calls. The share column gives the smallest and largest "
        "share of the calls any responder handled, over all rounds.",
        "",
        markdown_table(HEADERS, table_rows(outcomes)),
        "",
    ]
    ratio_rows = ratio_lines(report["ratios"])
    if ratio_rows:
        lines += ["Ratios of the medians:", "", *(f"- {line}" for line in ratio_rows)]
    if report.get("error"):
        lines += ["", f"Not complete: {report['error']}"]
    lines.append(README_END)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scaling.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"divide the call counts by {QUICK_DIVISOR}"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--counts",
        default=",".join(map(str, COUNTS)),
        help="comma-separated responder counts (default 1,2,4,8)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--calls", type=int, default=CALLS, help=f"measured calls per count (default {CALLS:,})"
    )
    parser.add_argument("--no-raw", action="store_true", help="skip the raw zmq.asyncio baseline")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite the scaling results in README.md"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the end of a failed child's stderr"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        counts = sorted({int(n) for n in args.counts.split(",")})
    except ValueError:
        parser.error("--counts takes comma-separated integers")
    if not counts or counts[0] < 1 or counts[-1] > 16:
        parser.error("--counts: each count must be 1..16")
    if 1 not in counts:
        counts.insert(0, 1)  # the reference every ratio is taken against
    args.counts = counts
    if args.calls < 100:
        parser.error("--calls must be at least 100")
    return args


def run(args: argparse.Namespace) -> int:
    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"  # loopback only, here and in children
    div = QUICK_DIVISOR if args.quick else 1
    calls, warmup = args.calls // div, WARMUP // div
    busy_before = cpu_busy_before()
    systems = ["meshrpc"] if args.no_raw else ["meshrpc", "raw"]
    outcomes = {key: {n: CountOutcome(n) for n in args.counts} for key in systems}
    error: str | None = None
    for i in range(1, args.runs + 1):
        print(f"round {i}/{args.runs} ...", file=sys.stderr, flush=True)
        try:
            one_round(args.counts, args.backend, calls, warmup, outcomes)
        except ChildError as exc:
            error = str(exc)
            print(f"  FAILED: {exc}", file=sys.stderr)
            if args.verbose and exc.log_tail:
                print("    " + exc.log_tail.rstrip().replace("\n", "\n    "), file=sys.stderr)
            break

    report: dict[str, Any] = {
        "command": "python bench/scaling.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "cpu_busy_before": busy_before,
        "cpu_busy_after": cpu_busy_fraction(),
        "params": {
            "runs": args.runs,
            "quick": args.quick,
            "backend": args.backend,
            "counts": args.counts,
            "calls": calls,
            "warmup": warmup,
            "window": WINDOW,
        },
        "systems": {
            key: {
                str(n): {
                    "median_calls_s": o.median,
                    "calls_s": o.calls_s,
                    "per_responder": o.per_responder,
                }
                for n, o in per_count.items()
            }
            for key, per_count in outcomes.items()
        },
        "ratios": ratios(outcomes),
        "error": error,
    }

    print()
    print(text_table(HEADERS, table_rows(outcomes)))
    lines = ratio_lines(report["ratios"])
    if lines:
        print()
        print("\n".join(lines))
    warn_if_busy(report)
    if error:
        print(f"\nnot complete: {error}")
    if args.json:
        write_json(args.json, report)
    if args.write_readme:
        write_readme(readme_section(report, outcomes), README_START, README_END)
        print(f"updated {README}")
    return 1 if error else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
