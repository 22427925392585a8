"""Footprint benchmark: memory of one process holding 100 components, and idle CPU.

    python bench/footprint.py [--quick] [--mix R,Q,P,S] [--idle SECONDS] [--runs N]
                              [--stats default,0] [--json PATH] [--write-readme] [--verbose]

Each configuration is one child process (``_footprint_side.py``), on 127.0.0.1 only, in
a fresh namespace: the mesh (default 40 responders, 40 requesters, 10 publishers and 10
subscribers: 100 components, every requester connected to every responder and every
subscriber to every publisher) and a single responder + requester pair, each with the
built-in statistics events at their default interval (1 s) and turned off
(``MESHRPC_STATS_INTERVAL=0``); and the baseline, raw pyzmq with the same sockets,
connections and heartbeat options. Reported: VmRSS of the bare interpreter, after
importing meshrpc (or pyzmq) and after the idle period (everything connected); then the
process's CPU time (all its threads, libzmq's included) over ``--idle`` seconds in which
nothing is called or published, as a percentage of one core, split by thread.

The mesh needs more sockets than libzmq's default limit of 1,023 per context (a
requester-to-responder connection takes a DEALER and a monitor socket pair), so it is
tried first with the default and, if that fails, run with ``MAX_SOCKETS`` raised
(``--max-sockets``): both outcomes are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    cpu_busy_before,
    cpu_busy_fraction,
    machine_info,
    machine_lines,
    markdown_sections,
    markdown_table,
    print_sections,
    run_main,
    text_table,
    warn_if_busy,
    write_json,
    write_readme,
)
from _procs import BENCH_DIR, ChildError, child_env, run_client, script
from roundtrip import new_namespace

MIX = (40, 40, 10, 10)  # responders, requesters, publishers, subscribers
PAIR = (1, 1, 0, 0)
IDLE_S = 10.0
SETTLE_S = 2.0
MAX_SOCKETS = 16_384
CHILD_TIMEOUT_S = 180.0
RSS_TARGET_MB = 150.0  # the 100-component process, at least this much below
CPU_TARGET_PCT = 1.0  # idle CPU, % of one core, below

README = BENCH_DIR / "README.md"
README_START = "<!-- footprint:start -->"
README_END = "<!-- footprint:end -->"


@dataclass(frozen=True, slots=True)
class Config:
    """One process measured: its components and its statistics interval."""

    key: str
    label: str
    mix: tuple[int, int, int, int]
    stats: str  # "default" or a value for MESHRPC_STATS_INTERVAL
    raw: bool = False  # raw pyzmq sockets instead of meshrpc components

    @property
    def components(self) -> int:
        return sum(self.mix)

    @property
    def connections(self) -> int:
        r, q, p, s = self.mix
        return r * q + p * s


@dataclass(slots=True)
class Outcome:
    config: Config
    runs: list[dict[str, Any]] = field(default_factory=list)
    max_sockets: int = 0  # 0: libzmq's default
    default_limit_error: str | None = None  # how the mesh failed with libzmq's default
    error: str | None = None

    def median(self, key: str) -> float | None:
        values = [float(r[key]) for r in self.runs]
        return statistics.median(values) if values else None


def configs(mix: tuple[int, int, int, int], stats: Sequence[str]) -> list[Config]:
    """The meshes first (the raw one after them), then the pairs."""

    def suffix(st: str) -> str:
        return "stats 1 s" if st == "default" else f"stats {st}"

    n = sum(mix)
    out = [
        Config(f"mesh_stats_{st}", f"meshrpc, {n} components, {suffix(st)}", mix, st)
        for st in stats
    ]
    out.append(Config("raw_mesh", f"raw pyzmq, the same {n} components' sockets", mix, "-", True))
    out += [Config(f"pair_stats_{st}", f"meshrpc pair, {suffix(st)}", PAIR, st) for st in stats]
    return out


def measure_once(config: Config, idle: float, max_sockets: int) -> dict[str, Any]:
    """One child process: build, settle, idle, report.

    Raises:
        ChildError: the child failed (for example out of sockets).
    """
    env = child_env(new_namespace())
    env.pop("MESHRPC_STATS_INTERVAL", None)
    if config.stats != "default":
        env["MESHRPC_STATS_INTERVAL"] = config.stats
    r, q, p, s = config.mix
    argv = [
        *script("_footprint_side.py"),
        "--responders",
        str(r),
        "--requesters",
        str(q),
        "--publishers",
        str(p),
        "--subscribers",
        str(s),
        "--settle",
        str(SETTLE_S),
        "--idle",
        str(idle),
        "--max-sockets",
        str(max_sockets),
        *(["--raw"] if config.raw else []),
    ]
    result: dict[str, Any] = run_client(argv, env, CHILD_TIMEOUT_S + idle)["result"]
    return result


# ------------------------------------------------------------------------ reporting


def mb(kb: float | None) -> str:
    return "-" if kb is None else f"{kb / 1024:,.0f}"


HEADERS = (
    "process",
    "connections",
    "RSS MB: bare / imported / connected",
    "idle CPU % of a core",
    "per component",
    "busiest thread",
    "fds",
    "ready s",
    "stop s",
)


def table_rows(outcomes: Sequence[Outcome]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for o in outcomes:
        c = o.config
        cpu = o.median("idle_cpu_pct")
        if cpu is None:
            rows.append((c.label, f"{c.connections:,}", "-", "-", "-", "-", "-", "-", "-"))
            continue
        last = o.runs[-1]
        by_thread: dict[str, float] = last["idle_cpu_pct_by_thread"]
        top = max(by_thread.items(), key=lambda kv: kv[1]) if by_thread else ("-", 0.0)
        rows.append(
            (
                c.label,
                f"{c.connections:,}",
                f"{mb(o.median('rss_bare_kb'))} / {mb(o.median('rss_imported_kb'))} / "
                f"{mb(o.median('rss_idle_kb'))}",
                f"{cpu:.2f}",
                f"{cpu / c.components:.3f}",
                f"{top[0]} {top[1]:.2f}",
                f"{int(last['fds']):,}",
                f"{o.median('ready_s'):.1f}",
                f"{o.median('stop_s'):.1f}",
            )
        )
    return rows


def ratios(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """The targets (RSS of the 100-component process, idle CPU of it and of a pair) and
    the mesh against raw pyzmq holding the same sockets."""
    raw = next((o for o in outcomes if o.config.raw), None)
    raw_rss = raw.median("rss_idle_kb") if raw else None
    raw_cpu = raw.median("idle_cpu_pct") if raw else None
    rows: list[dict[str, Any]] = []
    for o in outcomes:
        c = o.config
        if c.raw:
            continue
        mesh = c.key.startswith("mesh")
        if mesh and c.stats == "default" and o.default_limit_error is not None:
            rows.append(
                _row(
                    f"{c.components} components in one process with libzmq's default "
                    "MAX_SOCKETS (1,023)",
                    0.0,
                    "starts",
                    False,
                    display="fails",
                    meshrpc=o.default_limit_error,
                )
            )
        rss, cpu = o.median("rss_idle_kb"), o.median("idle_cpu_pct")
        if rss is None or cpu is None:
            continue
        imported = o.median("rss_imported_kb") or 0.0
        if mesh and c.stats == "default":
            rows.append(
                _row(
                    f"{c.components} components: RSS, MB",
                    rss / 1024,
                    f"< {RSS_TARGET_MB:.0f}",
                    rss / 1024 < RSS_TARGET_MB,
                    display=f"{rss / 1024:,.0f}",
                    meshrpc=f"{rss / 1024:,.0f} MB "
                    f"({(rss - imported) / 1024 / c.components:.2f} MB per component)",
                    baseline="" if raw_rss is None else f"raw pyzmq: {raw_rss / 1024:,.0f} MB",
                )
            )
        where = f"{c.components} components" if mesh else "idle responder+requester pair"
        stats = "stats 1 s" if c.stats == "default" else f"stats {c.stats}"
        rows.append(
            _row(
                f"{where}: idle CPU, % of one core ({stats})",
                cpu,
                f"< {CPU_TARGET_PCT:g}",
                cpu < CPU_TARGET_PCT,
                display=f"{cpu:.2f}",
                meshrpc=f"{cpu:.2f}% ({cpu / c.components:.3f}% per component)",
                baseline=f"raw pyzmq: {raw_cpu:.2f}%" if mesh and raw_cpu is not None else "",
            )
        )
        if mesh and c.stats == "default" and raw_cpu:
            rows.append(
                _row(
                    f"{c.components} components idle CPU / raw pyzmq, same sockets and heartbeats",
                    cpu / raw_cpu,
                    "-",
                    None,
                    meshrpc=f"{cpu:.2f}%",
                    baseline=f"{raw_cpu:.2f}%",
                )
            )
    return rows


def _row(
    name: str,
    value: float,
    target: str,
    met: bool | None,
    *,
    display: str | None = None,
    meshrpc: str = "",
    baseline: str = "",
) -> dict[str, Any]:
    return {
        "name": name,
        "value": value,
        "display": f"{value:.2f}" if display is None else display,
        "target": target,
        "met": met,
        "meshrpc": meshrpc,
        "baseline": baseline,
    }


def ratio_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if r["met"] is None:
            lines.append(f"{r['name']}: {r['display']} (no target)")
        else:
            status = "met" if r["met"] else "NOT met"
            lines.append(f"{r['name']}: {r['display']} (target {r['target']}: {status})")
    return lines


def thread_lines(outcomes: Sequence[Outcome]) -> list[str]:
    lines = []
    for o in outcomes:
        if not o.runs:
            continue
        split = o.runs[-1]["idle_cpu_pct_by_thread"]
        shown = ", ".join(f"{name} {pct:.2f}" for name, pct in split.items() if pct > 0)
        lines.append(f"{o.config.label}: {shown or 'nothing measurable'}")
    return lines


def note_lines(outcomes: Sequence[Outcome]) -> list[str]:
    lines = []
    for o in outcomes:
        if o.default_limit_error is not None:
            lines.append(
                f"{o.config.label}: with libzmq's default MAX_SOCKETS it failed "
                f"({o.default_limit_error}); measured with MAX_SOCKETS raised to "
                f"{o.max_sockets:,}."
            )
        elif o.max_sockets:
            lines.append(
                f"{o.config.label}: measured with MAX_SOCKETS raised to {o.max_sockets:,}."
            )
        if o.error:
            lines.append(f"{o.config.label}: not measured: {o.error}")
    return lines


def readme_section(report: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    p = report["params"]
    lines = [
        README_START,
        *machine_lines(report),
        f"Medians of {p['runs']} run{'s' if p['runs'] != 1 else ''}; the mesh: "
        f"{p['mix'][0]} responders, {p['mix'][1]} requesters, {p['mix'][2]} publishers and "
        f"{p['mix'][3]} subscribers in one process and namespace; idle CPU over "
        f"{p['idle_s']:g} s after {p['settle_s']:g} s of settling; meshrpc on asyncio. RSS "
        "'connected' is read after the idle period.",
        "",
        markdown_table(HEADERS, table_rows(outcomes)),
        "",
    ]
    lines += markdown_sections(
        [
            ("Idle CPU by thread (% of one core, last run):", thread_lines(outcomes)),
            ("Targets:", ratio_lines(report["ratios"])),
            ("Notes:", note_lines(outcomes)),
        ]
    )
    if lines[-1] == "":
        lines.pop()
    lines.append(README_END)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="footprint.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="idle 3 s instead of --idle")
    parser.add_argument("--runs", type=int, default=1, help="runs per process (default 1)")
    parser.add_argument(
        "--mix",
        default=",".join(map(str, MIX)),
        help="responders,requesters,publishers,subscribers of the mesh (default 40,40,10,10)",
    )
    parser.add_argument(
        "--idle", type=float, default=IDLE_S, help=f"seconds of idleness measured ({IDLE_S:g})"
    )
    parser.add_argument(
        "--stats",
        default="default,0",
        help="MESHRPC_STATS_INTERVAL values to measure, 'default' for unset (default: default,0)",
    )
    parser.add_argument(
        "--max-sockets",
        type=int,
        default=MAX_SOCKETS,
        help=f"libzmq MAX_SOCKETS when the default is too few (default {MAX_SOCKETS:,})",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite the footprint results in README.md"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the end of a failed child's stderr"
    )
    args = parser.parse_args(argv)
    try:
        mix = tuple(int(n) for n in args.mix.split(","))
    except ValueError:
        parser.error("--mix takes four comma-separated integers")
    if len(mix) != 4 or min(mix) < 0 or sum(mix) < 1 or sum(mix) > 400:
        parser.error("--mix takes four comma-separated integers, 1..400 components in all")
    args.mix = mix
    args.stats = [s.strip() for s in args.stats.split(",") if s.strip()]
    for s in args.stats:
        if s != "default":
            try:
                float(s)
            except ValueError:
                parser.error("--stats takes 'default' or numbers")
    if args.runs < 1 or args.idle <= 0:
        parser.error("--runs must be at least 1 and --idle positive")
    if args.quick:
        args.idle = 3.0
    return args


def report_failure(label: str, exc: ChildError, verbose: bool) -> None:
    print(f"  {label}: FAILED: {exc}", file=sys.stderr)
    if verbose and exc.log_tail:
        print("    " + exc.log_tail.rstrip().replace("\n", "\n    "), file=sys.stderr)


def out_of_sockets(exc: ChildError) -> bool:
    text = f"{exc} {exc.log_tail}"
    return "Too many open files" in text or "EMFILE" in text


def run(args: argparse.Namespace) -> int:
    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"  # loopback only, here and in children
    busy_before = cpu_busy_before()
    outcomes = [Outcome(c) for c in configs(args.mix, args.stats)]
    mesh_sockets = 0  # 0 until the mesh was found to need more than libzmq's default
    for i in range(1, args.runs + 1):
        for o in outcomes:
            if o.error is not None:
                continue
            label = o.config.label
            print(f"run {i}/{args.runs} {label} ...", file=sys.stderr, flush=True)
            sockets = mesh_sockets if o.config.key.startswith("mesh") else 0
            if o.config.raw:
                sockets = args.max_sockets  # the baseline: no point finding the limit again
            try:
                try:
                    result = measure_once(o.config, args.idle, sockets)
                except ChildError as exc:
                    if sockets or not out_of_sockets(exc):
                        raise
                    # Found out, not assumed: the default limit is too low for this mesh.
                    o.default_limit_error = str(exc).split(";")[0][:160]
                    print(f"  out of sockets with libzmq's default: {exc}", file=sys.stderr)
                    mesh_sockets = sockets = args.max_sockets
                    print(f"  again with MAX_SOCKETS {sockets:,} ...", file=sys.stderr)
                    result = measure_once(o.config, args.idle, sockets)
            except ChildError as exc:
                o.error = str(exc)
                report_failure(label, exc, args.verbose)
                continue
            o.max_sockets = sockets
            o.runs.append(result)
            print(
                f"  RSS {result['rss_idle_kb'] / 1024:,.0f} MB, idle CPU "
                f"{result['idle_cpu_pct']:.2f}% of a core, ready in {result['ready_s']:.1f} s, "
                f"stopped in {result['stop_s']:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    report: dict[str, Any] = {
        "command": "python bench/footprint.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "cpu_busy_before": busy_before,
        "cpu_busy_after": cpu_busy_fraction(),
        "params": {
            "runs": args.runs,
            "mix": args.mix,
            "idle_s": args.idle,
            "settle_s": SETTLE_S,
            "stats": args.stats,
        },
        "processes": {
            o.config.key: {
                "label": o.config.label,
                "components": o.config.components,
                "connections": o.config.connections,
                "max_sockets": o.max_sockets,
                "default_limit_error": o.default_limit_error,
                "runs": o.runs,
                "error": o.error,
            }
            for o in outcomes
        },
        "ratios": ratios(outcomes),
    }

    print()
    print(text_table(HEADERS, table_rows(outcomes)))
    print_sections(
        [
            ("idle CPU by thread (% of one core, last run):", thread_lines(outcomes)),
            ("targets:", ratio_lines(report["ratios"])),
            ("notes:", note_lines(outcomes)),
        ]
    )
    warn_if_busy(report)
    if args.json:
        write_json(args.json, report)
    if args.write_readme:
        write_readme(readme_section(report, outcomes), README_START, README_END)
        print(f"updated {README}")
    return 1 if any(o.error for o in outcomes) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
