"""Round-trip benchmark: meshrpc against raw pyzmq baselines, on loopback.

    python bench/roundtrip.py [--quick] [--runs N] [--backends asyncio,trio,uvloop]
                              [--secret [BACKENDS]] [--payload-kib N] [--only all|baselines|meshrpc]
                              [--json PATH] [--write-readme] [--verbose]

Every system is measured with its client and its server in separate processes (children
of this one, started with this interpreter), on 127.0.0.1 only. A run of one system:
start a fresh server, run one client process (warm-up, then ``seq`` calls one after the
other, then ``inflight`` calls with 64 outstanding), stop the server. Runs of the
systems are interleaved, repeated ``--runs`` times, and the medians are reported. With
``--payload-kib N`` every request carries N KiB more (``blob``) and throughput is also
reported in MB/s. See bench/README.md for what each system is.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Sequence
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
    markdown_sections,
    markdown_table,
    median_result,
    print_sections,
    run_main,
    text_table,
    warn_if_busy,
    write_json,
    write_readme,
)
from _procs import BENCH_DIR, ChildError, child_env, run_client, script, server

WINDOW = 64
SEQ_CALLS = 5_000
INFLIGHT_CALLS = 50_000
WARMUP_CALLS = 1_000
QUICK_DIVISOR = 5
PHASE_TIME_LIMIT_S = 120.0
SERVER_READY_TIMEOUT_S = 30.0
CLIENT_STARTUP_ALLOWANCE_S = 60.0

# With --payload-kib, the call counts shrink so that one phase moves at most this much.
PAYLOAD_INFLIGHT_BYTES = 320 * 2**20
PAYLOAD_SEQ_BYTES = 64 * 2**20

BACKENDS = ("asyncio", "trio", "uvloop")

README = BENCH_DIR / "README.md"
# (start, end) markers of the README section: small payloads, and --payload-kib runs.
README_MARKERS = {
    False: ("<!-- results:start -->", "<!-- results:end -->"),
    True: ("<!-- payload:start -->", "<!-- payload:end -->"),
}

# Targets of issue 7 ("Performance"), for every meshrpc variant without a secret.
INFLIGHT_TARGET = 2.0  # meshrpc 64-in-flight / zmq.asyncio 64-in-flight, at least
INFLIGHT_ABS_TARGET = 37_000.0  # meshrpc 64-in-flight calls/s, at least (Pyro5's figure)
SEQ_P50_TARGET = 1.3  # meshrpc seq p50 / raw blocking seq p50, at most
PAYLOAD_TARGET = 0.7  # with --payload-kib: meshrpc MB/s / raw blocking MB/s, at least


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


def meshrpc_systems(backends: Sequence[str], secret: Sequence[str] = ()) -> list[System]:
    """meshrpc on each of ``backends``; then with a mesh secret on each of ``secret``."""
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
    # The same, with MESHRPC_SECRET on both sides: CurveZMQ on every frame.
    systems += [
        System(
            f"meshrpc_{backend}_secret",
            f"meshrpc ({backend}, secret)",
            [*side, "server", "--backend", backend],
            client(backend),
            {"MESHRPC_SECRET": BENCH_SECRET},
        )
        for backend in secret
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


def mb_per_s(calls_s: float, payload_kib: int) -> float:
    """Throughput of the ``blob`` (request direction) in MB/s, 1 MB = 10^6 bytes."""
    return calls_s * payload_kib * 1024 / 1e6


def _median_of(outcomes: dict[str, Outcome], key: str) -> RunResult | None:
    outcome = outcomes.get(key)
    return outcome.median if outcome else None


def _row(
    name: str,
    value: float,
    target: str,
    met: bool | None,
    *,
    meshrpc: str = "",
    baseline: str = "",
    display: str | None = None,
) -> dict[str, Any]:
    """One ratio (or absolute figure) with its target; ``met`` is None when it has none."""
    return {
        "name": name,
        "value": value,
        "display": f"{value:.2f}" if display is None else display,
        "target": target,
        "met": met,
        "meshrpc": meshrpc,
        "baseline": baseline,
    }


def ratios(outcomes: dict[str, Outcome], payload_kib: int = 0) -> list[dict[str, Any]]:
    """Every meshrpc variant against the baselines (targets of issue 7), a secret against
    no secret, and uvloop against plain asyncio."""
    b_med = _median_of(outcomes, "zmq_blocking")
    a_med = _median_of(outcomes, "zmq_asyncio")
    rows: list[dict[str, Any]] = []
    for key, outcome in outcomes.items():
        m = outcome.median
        if not key.startswith("meshrpc_") or m is None:
            continue
        label = outcome.system.label
        if key.endswith("_secret"):
            rows += _secret_rows(label, m, _median_of(outcomes, key.removesuffix("_secret")))
            continue
        if payload_kib:
            if b_med is not None:
                rows += _payload_rows(label, m, b_med, payload_kib)
        else:
            rows += _small_rows(label, m, a_med, b_med)
        plain = _median_of(outcomes, "meshrpc_asyncio")
        if key == "meshrpc_uvloop" and plain is not None:
            rows += _uvloop_rows(m, plain)
    return rows


def _small_rows(
    label: str, m: RunResult, a_med: RunResult | None, b_med: RunResult | None
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if a_med is not None:
        value = m.inflight_calls_s / a_med.inflight_calls_s
        rows.append(
            _row(
                f"{label} {WINDOW}-in-flight / zmq.asyncio {WINDOW}-in-flight",
                value,
                f">= {INFLIGHT_TARGET}",
                value >= INFLIGHT_TARGET,
                meshrpc=f"{m.inflight_calls_s:,.0f} calls/s",
                baseline=f"{a_med.inflight_calls_s:,.0f} calls/s",
            )
        )
    rows.append(
        _row(
            f"{label} {WINDOW}-in-flight calls/s (absolute; Pyro5's figure)",
            m.inflight_calls_s,
            f">= {INFLIGHT_ABS_TARGET:,.0f} calls/s",
            m.inflight_calls_s >= INFLIGHT_ABS_TARGET,
            meshrpc=f"{m.inflight_calls_s:,.0f} calls/s",
            baseline="Pyro5: 37,000 calls/s",
            display=f"{m.inflight_calls_s:,.0f}",
        )
    )
    if b_med is not None:
        value = m.seq_p50_us / b_med.seq_p50_us
        rows.append(
            _row(
                f"{label} seq p50 / blocking seq p50",
                value,
                f"<= {SEQ_P50_TARGET}",
                value <= SEQ_P50_TARGET,
                meshrpc=f"{m.seq_p50_us:,.0f} µs",
                baseline=f"{b_med.seq_p50_us:,.0f} µs",
            )
        )
    return rows


def _payload_rows(
    label: str, m: RunResult, b_med: RunResult, payload_kib: int
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for phase, mine_calls, raw_calls in (
        (f"{WINDOW}-in-flight", m.inflight_calls_s, b_med.inflight_calls_s),
        ("seq", m.seq_calls_s, b_med.seq_calls_s),
    ):
        mine, raw = mb_per_s(mine_calls, payload_kib), mb_per_s(raw_calls, payload_kib)
        value = mine / raw
        rows.append(
            _row(
                f"{label} {payload_kib} KiB {phase} MB/s / blocking {phase} MB/s",
                value,
                f">= {PAYLOAD_TARGET}",
                value >= PAYLOAD_TARGET,
                meshrpc=f"{mine:,.0f} MB/s",
                baseline=f"{raw:,.0f} MB/s",
            )
        )
    return rows


def _secret_rows(label: str, m: RunResult, plain: RunResult | None) -> list[dict[str, Any]]:
    if plain is None:
        return []
    tput = m.inflight_calls_s / plain.inflight_calls_s
    lat = m.seq_p50_us / plain.seq_p50_us
    return [
        _row(
            f"{label} {WINDOW}-in-flight / without secret",
            tput,
            f">= {SECRET_THROUGHPUT_TARGET}",
            tput >= SECRET_THROUGHPUT_TARGET,
            meshrpc=f"{m.inflight_calls_s:,.0f} calls/s",
            baseline=f"{plain.inflight_calls_s:,.0f} calls/s",
        ),
        _row(
            f"{label} seq p50 / without secret",
            lat,
            f"<= {SECRET_LATENCY_TARGET}",
            lat <= SECRET_LATENCY_TARGET,
            meshrpc=f"{m.seq_p50_us:,.0f} µs",
            baseline=f"{plain.seq_p50_us:,.0f} µs",
        ),
    ]


def _uvloop_rows(m: RunResult, plain: RunResult) -> list[dict[str, Any]]:
    """uvloop against the default asyncio loop, both measured in this invocation."""
    return [
        _row(
            f"meshrpc (uvloop) {WINDOW}-in-flight / meshrpc (asyncio) {WINDOW}-in-flight",
            m.inflight_calls_s / plain.inflight_calls_s,
            "-",
            None,
            meshrpc=f"{m.inflight_calls_s:,.0f} calls/s",
            baseline=f"{plain.inflight_calls_s:,.0f} calls/s",
        ),
        _row(
            "meshrpc (uvloop) seq p50 / meshrpc (asyncio) seq p50",
            m.seq_p50_us / plain.seq_p50_us,
            "-",
            None,
            meshrpc=f"{m.seq_p50_us:,.0f} µs",
            baseline=f"{plain.seq_p50_us:,.0f} µs",
        ),
    ]


def headers(payload_kib: int) -> tuple[str, ...]:
    if payload_kib:
        return (
            "system",
            "seq p50 µs",
            "seq MB/s",
            f"{WINDOW}-in-flight calls/s",
            f"{WINDOW}-in-flight MB/s",
        )
    return ("system", "seq p50 µs", "seq p99 µs", "seq calls/s", f"{WINDOW}-in-flight calls/s")


def table_rows(outcomes: dict[str, Outcome], payload_kib: int = 0) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes.values():
        m = outcome.median
        if m is None:
            rows.append((outcome.system.label, "-", "-", "-", "-"))
        elif payload_kib:
            rows.append(
                (
                    outcome.system.label,
                    f"{m.seq_p50_us:,.0f}",
                    f"{mb_per_s(m.seq_calls_s, payload_kib):,.0f}",
                    f"{m.inflight_calls_s:,.0f}",
                    f"{mb_per_s(m.inflight_calls_s, payload_kib):,.0f}",
                )
            )
        else:
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


def spread_lines(outcomes: dict[str, Outcome], payload_kib: int = 0) -> list[str]:
    """Per system, the lowest and highest run of the two headline numbers."""
    lines = []
    for o in outcomes.values():
        if len(o.runs) < 2 or o.error is not None:
            continue
        p50 = [r.seq_p50_us for r in o.runs]
        tput = [r.inflight_calls_s for r in o.runs]
        line = (
            f"{o.system.label}: seq p50 {min(p50):,.0f}-{max(p50):,.0f} µs, "
            f"{WINDOW}-in-flight {min(tput):,.0f}-{max(tput):,.0f} calls/s"
        )
        if payload_kib:
            line += (
                f" ({mb_per_s(min(tput), payload_kib):,.0f}-"
                f"{mb_per_s(max(tput), payload_kib):,.0f} MB/s)"
            )
        lines.append(line)
    return lines


def ratio_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        if r["met"] is None:
            lines.append(f"{r['name']}: {r['display']} (no target)")
        else:
            status = "met" if r["met"] else "NOT met"
            lines.append(f"{r['name']}: {r['display']} (target {r['target']}: {status})")
    return lines


def workload_line(p: dict[str, Any]) -> str:
    payload = (
        f'`{{"a": 1, "b": 2, "blob": <{p["payload_kib"]} KiB>}}`'
        if p["payload_kib"]
        else '`{"a": 1, "b": 2}`'
    )
    return (
        f"Medians of {p['runs']} run{'s' if p['runs'] != 1 else ''}; payload {payload}; per "
        f"run {p['seq_calls']:,} sequential calls and {p['inflight_calls']:,} calls with "
        f"{p['window']} in flight, after {p['warmup']:,} + {4 * p['warmup']:,} warm-up calls."
    )


def readme_section(report: dict[str, Any], outcomes: dict[str, Outcome]) -> str:
    p = report["params"]
    kib = p["payload_kib"]
    start, end = README_MARKERS[bool(kib)]
    lines = [
        start,
        *machine_lines(report),
        workload_line(p),
        "",
        markdown_table(headers(kib), table_rows(outcomes, kib)),
        "",
    ]
    lines += markdown_sections(
        [("Spread over the runs (lowest-highest):", spread_lines(outcomes, kib))]
    )
    ratio_rows = ratio_lines(report["ratios"])
    if ratio_rows:
        lines += ["Ratios of the medians:", ""]
    lines += [f"- {line}" for line in ratio_rows]
    lines += [f"- {o.system.label}: not measured: {o.error}" for o in outcomes.values() if o.error]
    lines.append(end)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="roundtrip.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"divide call counts by {QUICK_DIVISOR}"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3)")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated meshrpc backends: asyncio, trio, uvloop (default all three)",
    )
    parser.add_argument(
        "--secret",
        nargs="?",
        const="all",
        default="",
        metavar="BACKENDS",
        help="also measure meshrpc with MESHRPC_SECRET set: on every backend of --backends, "
        "or on the comma-separated ones given",
    )
    parser.add_argument(
        "--payload-kib",
        type=int,
        default=0,
        metavar="N",
        help="add N KiB of bytes to every request (default 0: the small payload)",
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
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if not backends or unknown:
        parser.error(f"--backends takes a comma-separated subset of {','.join(BACKENDS)}")
    args.backends = list(dict.fromkeys(backends))
    if args.secret == "all":
        args.secret = list(args.backends)
    else:
        secret = [b.strip() for b in args.secret.split(",") if b.strip()]
        if set(secret) - set(BACKENDS):
            parser.error(f"--secret takes a comma-separated subset of {','.join(BACKENDS)}")
        args.secret = list(dict.fromkeys(secret))
    if not 0 <= args.payload_kib <= 8192:
        parser.error("--payload-kib must be 0..8192")
    return args


def client_params(quick: bool, payload_kib: int = 0) -> ClientParams:
    """Call counts of a run; with a payload, fewer calls so a phase moves a bounded volume."""
    warmup, seq, inflight = WARMUP_CALLS, SEQ_CALLS, INFLIGHT_CALLS
    if payload_kib:
        size = payload_kib * 1024
        inflight = max(1_000, min(inflight, PAYLOAD_INFLIGHT_BYTES // size))
        seq = max(500, min(seq, PAYLOAD_SEQ_BYTES // size))
        warmup = max(100, min(warmup, seq // 5))
    div = QUICK_DIVISOR if quick else 1
    return ClientParams(
        warmup=warmup // div,
        seq_calls=seq // div,
        inflight_calls=inflight // div,
        window=WINDOW,
        phase_time_limit=PHASE_TIME_LIMIT_S,
        payload_kib=payload_kib,
    )


def report_failure(label: str, exc: ChildError, verbose: bool) -> None:
    print(f"  {label}: FAILED: {exc}", file=sys.stderr)
    if verbose and exc.log_tail:
        print("    " + exc.log_tail.rstrip().replace("\n", "\n    "), file=sys.stderr)


def select_systems(args: argparse.Namespace) -> tuple[list[System], list[Outcome]]:
    """The systems to measure, and those that cannot be (with the reason)."""
    systems: list[System] = []
    if args.only in ("all", "baselines"):
        systems += baseline_systems()
    skipped: list[Outcome] = []
    if args.only in ("all", "meshrpc"):
        wanted = meshrpc_systems(args.backends, args.secret)
        why = probe_meshrpc()
        if why is not None:
            print(f"meshrpc part skipped: {why}", file=sys.stderr)
            return systems, [Outcome(s, error=why) for s in wanted]
        no_uvloop = importlib.util.find_spec("uvloop") is None
        for s in wanted:
            if no_uvloop and s.key.startswith("meshrpc_uvloop"):
                skipped.append(Outcome(s, error="uvloop is not installed (meshrpc[fast])"))
            else:
                systems.append(s)
    return systems, skipped


def run(args: argparse.Namespace) -> int:
    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"  # loopback only, here and in children
    kib = args.payload_kib
    params = client_params(args.quick, kib)
    systems, skipped = select_systems(args)

    busy_before = cpu_busy_before()
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
            extra = f" ({mb_per_s(result.inflight_calls_s, kib):,.0f} MB/s)" if kib else ""
            print(
                f"  seq p50 {result.seq_p50_us:,.0f} µs, p99 {result.seq_p99_us:,.0f} µs, "
                f"{result.seq_calls_s:,.0f}/s; {WINDOW}-in-flight "
                f"{result.inflight_calls_s:,.0f}/s{extra}",
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
            "backends": args.backends,
            "secret": args.secret,
            "payload_kib": kib,
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
        "ratios": ratios(outcomes, kib),
    }

    print()
    if kib:
        print(f"payload {kib} KiB per request")
    print(text_table(headers(kib), table_rows(outcomes, kib)))
    print_sections([("spread over the runs (lowest-highest):", spread_lines(outcomes, kib))])
    lines = ratio_lines(report["ratios"])
    if lines:
        print()
        print("\n".join(lines))
    warn_if_busy(report)
    failed = [o for o in outcomes.values() if o.error]
    for o in failed:
        print(f"\n{o.system.label}: not measured: {o.error}")

    if args.json:
        write_json(args.json, report)
    if args.write_readme:
        write_readme(readme_section(report, outcomes), *README_MARKERS[bool(kib)])
        print(f"updated {README}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
