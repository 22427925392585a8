"""Every benchmark in one go (``make bench``), then one summary table of them all.

    python bench/all.py [--quick] [--only NAMES] [--skip NAMES] [--results DIR]
                        [--summary-only] [--write-readme]

Runs each benchmark script one after the other as a child process with ``--json`` into
``bench/results/`` (git-ignored), streaming its output; then reads the JSON files and
prints one table: every meshrpc figure next to its raw-pyzmq baseline (measured in the
same run), the ratio and its target, met or NOT met. ``--write-readme`` also has every
script rewrite its own section of bench/README.md and puts the summary between the
``summary`` markers there. ``--summary-only`` runs nothing and rebuilds the summary from
the JSON files already in ``--results``.

The exit status is 0 when every benchmark ran to the end (targets not met are results,
not failures), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import busy, cpu_busy_fraction, machine_info, run_main, write_readme
from _procs import BENCH_DIR, REPO_DIR, terminate

README = BENCH_DIR / "README.md"
README_START = "<!-- summary:start -->"
README_END = "<!-- summary:end -->"
RESULTS = BENCH_DIR / "results"
STEP_TIMEOUT_S = 900.0  # one benchmark script, at most
INTERRUPT_GRACE_S = 20.0  # SIGINT (its own cleanup) before SIGKILL


@dataclass(frozen=True, slots=True)
class Step:
    """One benchmark script run: its name, arguments, and how it is run with --quick."""

    name: str
    title: str
    argv: list[str]
    quick_argv: list[str]
    verbose: bool = True  # whether it takes --verbose (a failed child's stderr)

    def json_path(self, results: Path) -> Path:
        return results / f"{self.name}.json"


STEPS = [
    Step(
        "roundtrip",
        "round trips",
        # 5 runs: the raw zmq.asyncio baseline is the most sensitive to other load.
        ["roundtrip.py", "--runs", "5", "--secret", "asyncio"],
        ["roundtrip.py", "--runs", "1", "--quick", "--secret", "asyncio"],
    ),
    Step(
        "payload",
        "64 KiB payloads",
        ["roundtrip.py", "--runs", "3", "--payload-kib", "64"],
        ["roundtrip.py", "--runs", "1", "--quick", "--payload-kib", "64"],
    ),
    Step(
        "scaling",
        "scaling over responders",
        ["scaling.py", "--runs", "3"],
        ["scaling.py", "--runs", "1", "--quick"],
    ),
    Step(
        "footprint",
        "footprint",
        ["footprint.py", "--runs", "1"],
        ["footprint.py", "--runs", "1", "--quick"],
    ),
    Step(
        "discovery",
        "discovery",
        ["discovery.py", "--runs", "3"],
        ["discovery.py", "--runs", "1", "--outage", "0"],
        verbose=False,
    ),
    Step(
        "pubsub",
        "pub/sub",
        ["pubsub.py", "--runs", "3", "--quick"],
        ["pubsub.py", "--runs", "1", "--quick", "--mode", "await"],
    ),
]


def run_step(step: Step, results: Path, quick: bool, write: bool) -> tuple[bool, float]:
    """Run one script to completion (bounded); whether it succeeded, and its wall time."""
    out = step.json_path(results)
    out.unlink(missing_ok=True)  # a failed run must not leave an old file to summarise
    script, *options = step.quick_argv if quick else step.argv
    # Run from the repository with relative paths: the scripts quote their command line
    # in bench/README.md.
    argv = [sys.executable, f"bench/{script}", *options, "--json", _relative(out)]
    if write:
        argv.append("--write-readme")
    if step.verbose:
        argv.append("--verbose")
    env = dict(os.environ, MESHRPC_INTERFACES="127.0.0.1")
    print(f"\n=== {step.name}: {' '.join(argv[1:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=REPO_DIR)
    try:
        status = proc.wait(timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"{step.name}: no end after {STEP_TIMEOUT_S:.0f} s; interrupting it", flush=True)
        stop(proc)
        status = -1
    except KeyboardInterrupt:
        stop(proc)  # it got the Ctrl-C too and stops its own children
        raise
    elapsed = time.monotonic() - started
    print(f"=== {step.name}: exit {status} after {elapsed:.0f} s", flush=True)
    return status == 0 and out.exists(), elapsed


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_DIR))
    except ValueError:
        return str(path.resolve())


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT by PID (the scripts stop their children on it), then SIGKILL."""
    terminate(proc, INTERRUPT_GRACE_S, signal.SIGINT)


# ------------------------------------------------------------------------- summary


def _rows_of(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = data.get("ratios", [])
    return rows


def _pubsub_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """pubsub.py's delivered-rate ratios, with both systems' figures and losses."""
    medians = {
        (s["key"], s["subscribers"]): s["median"] for s in data.get("systems", []) if s["median"]
    }
    rows = []
    for r in data.get("ratios", []):
        if r.get("column") != "delivered_rate":
            continue
        mine = medians.get((r["system"], r["subscribers"]))
        raw = medians.get(("zmq", r["subscribers"]))
        rows.append(
            {
                **r,
                "display": f"{r['value']:.2f}",
                "meshrpc": ""
                if mine is None
                else f"{mine['delivered_rate']:,.0f} ev/s/sub (loss {100 * r['loss']:.1f}%)",
                "baseline": ""
                if raw is None
                else f"{raw['delivered_rate']:,.0f} ev/s/sub (loss {100 * r['raw_loss']:.1f}%)",
            }
        )
    return rows


ADAPTERS: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {"pubsub": _pubsub_rows}

HEADERS = ("benchmark", "measure", "meshrpc", "baseline (same run)", "value", "target", "status")


def summary_rows(results: Path) -> tuple[list[tuple[str, ...]], list[str]]:
    """One row per figure with a target (or worth seeing next to one); missing files."""
    rows: list[tuple[str, ...]] = []
    missing: list[str] = []
    for step in STEPS:
        path = step.json_path(results)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            missing.append(step.name)
            rows.append((step.title, "(not measured)", "-", "-", "-", "-", "-"))
            continue
        for r in ADAPTERS.get(step.name, _rows_of)(data):
            met = r.get("met")
            status = "-" if met is None else ("met" if met else "NOT met")
            rows.append(
                (
                    step.title,
                    str(r["name"]),
                    str(r.get("meshrpc") or "-"),
                    str(r.get("baseline") or "-"),
                    str(r.get("display") or f"{r['value']:.2f}"),
                    str(r.get("target") or "-"),
                    status,
                )
            )
        for what, error in errors(data):
            rows.append((step.title, f"{what}: not measured", "-", "-", "-", "-", error[:100]))
    return rows, missing


def errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, why) for every part of a benchmark's JSON that failed."""
    out: list[tuple[str, str]] = []
    if data.get("error"):
        out.append(("run", str(data["error"])))
    for group in ("systems", "processes"):
        entries = data.get(group) or {}
        items = entries.values() if isinstance(entries, dict) else entries
        for entry in items:
            if isinstance(entry, dict) and entry.get("error"):
                label = str(entry.get("label", "?"))
                if "subscribers" in entry:
                    label += f", {entry['subscribers']} sub(s)"
                out.append((label, str(entry["error"])))
    return out


def summary_text(rows: list[tuple[str, ...]], header: list[str], markdown: bool) -> str:
    table = markdown_summary(rows) if markdown else grouped_table(rows)
    return "\n".join([*header, "", table])


def markdown_summary(rows: list[tuple[str, ...]]) -> str:
    """A markdown table; text columns left-aligned, the value right-aligned."""
    align = ["---:" if h == "value" else "---" for h in HEADERS]
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def grouped_table(rows: list[tuple[str, ...]]) -> str:
    """Plain text, one block per benchmark; the value column right-aligned, the others
    left-aligned, columns lined up across the blocks."""
    head = HEADERS[1:]
    body = [r[1:] for r in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    value = head.index("value")

    def fmt(cells: Sequence[str]) -> str:
        out = [
            c.rjust(w) if i == value else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return ("  " + "  ".join(out)).rstrip()

    lines = [fmt(head), "  " + "  ".join("-" * w for w in widths)]
    group = None
    for row in rows:
        if row[0] != group:
            group = row[0]
            lines.append(group)
        lines.append(fmt(row[1:]))
    return "\n".join(lines)


def header_lines(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    met = sum(1 for r in report["rows"] if r[-1] == "met")
    missed = sum(1 for r in report["rows"] if r[-1] == "NOT met")
    lines = [
        f"Measured {m['date']} with `{report['command']}`"
        + (f" in {report['wall_s'] / 60:.1f} min" if report.get("wall_s") else ""),
        "",
        f"Machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; {m['implementation']} "
        f"{m['python']}; pyzmq {m['pyzmq']} (libzmq {m['libzmq']}). CPU busy before "
        f"(other processes): {busy(report['cpu_busy_before'])}.",
        "",
        "Every ratio is between medians measured in the same invocation (runs interleaved); "
        "the sections below give each benchmark's runs, spread and method. "
        f"Targets met: {met}; NOT met: {missed}.",
    ]
    if report.get("steps"):
        took = ", ".join(f"{name} {s:.0f} s" for name, s in report["steps"].items())
        lines[-1] += f" Time per benchmark: {took}."
    if report["missing"]:
        lines += ["", f"Not measured (failed or skipped): {', '.join(report['missing'])}."]
    return lines


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="all.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    names = [s.name for s in STEPS]
    parser.add_argument("--quick", action="store_true", help="one quick run of each (~2 min)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(names)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks not to run")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON files go")
    parser.add_argument(
        "--summary-only", action="store_true", help="run nothing; summarise the JSON files"
    )
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite bench/README.md's results sections"
    )
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    skip = [n for n in args.skip.split(",") if n]
    unknown = sorted(set(only + skip) - set(names))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(names)}")
    args.steps = [s for s in STEPS if (not only or s.name in only) and s.name not in skip]
    return args


def run(args: argparse.Namespace) -> int:
    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"  # loopback only, here and in children
    args.results.mkdir(parents=True, exist_ok=True)
    busy_before = cpu_busy_fraction()
    started = time.monotonic()
    failed: list[str] = []
    steps: dict[str, float] = {}
    if not args.summary_only:
        for step in args.steps:
            ok, elapsed = run_step(step, args.results, args.quick, args.write_readme)
            steps[step.name] = elapsed
            if not ok:
                failed.append(step.name)
    wall = time.monotonic() - started
    rows, missing = summary_rows(args.results)
    report: dict[str, Any] = {
        "command": "python bench/all.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "cpu_busy_before": busy_before,
        "wall_s": None if args.summary_only else wall,
        "steps": steps,
        "rows": rows,
        "missing": missing,
        "failed": failed,
    }
    print("\n" + "=" * 30 + " summary " + "=" * 30)
    print(summary_text(rows, header_lines(report), markdown=False))
    (args.results / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.write_readme:
        section = "\n".join(
            [README_START, summary_text(rows, header_lines(report), markdown=True), README_END]
        )
        write_readme(section, README_START, README_END, README)
        print(f"\nupdated {README}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    if not args.summary_only:
        print(f"\nmake bench took {wall / 60:.1f} min")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(
        parse_args, run, argv, "interrupted; the running benchmark stopped its children"
    )


if __name__ == "__main__":
    sys.exit(main())
