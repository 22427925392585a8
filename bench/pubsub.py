"""Pub/sub benchmark: meshrpc Publisher/Subscriber against raw pyzmq PUB/SUB, on loopback.

    python bench/pubsub.py [--quick] [--runs N] [--subscribers 1,4]
                           [--backend asyncio|trio|both] [--mode nowait|await|both]
                           [--raw-hwm N] [--only all|baselines|meshrpc]
                           [--json PATH] [--write-readme] [--verbose]

Every process is a child of this one, started with this interpreter, on 127.0.0.1 only.
A run of one system with K subscribers: fresh namespace, one publisher process, K
subscriber processes; once every subscriber is ready the publisher is told ``GO`` and
publishes N small events on ``price.X`` as fast as it can; each subscriber counts what
it receives until the end marker (or 2 s of quiet). Reported: the publisher's send rate,
the delivered rate (events/s received per subscriber, median over the subscribers) and
the loss (events not received, all subscribers together). Runs are interleaved,
repeated ``--runs`` times, and the medians are reported. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from _common import (
    RESULT_PREFIX,
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
from _procs import BENCH_DIR, LOG_TAIL_LINES, ChildError, child_env, script, terminate
from _pubsub_zmq import FINAL_PREFIX, QUIET_S, SUB_TIME_LIMIT_S
from roundtrip import new_namespace

EVENTS = 200_000
QUICK_DIVISOR = 5
RAW_HWM = 10_000  # raw SNDHWM/RCVHWM: meshrpc's transport default (pyzmq's own is 1,000)
SUBSCRIBER_COUNTS = (1, 4)
PUB_READY_TIMEOUT_S = 30.0  # publisher started and bound / announced
SUBS_READY_TIMEOUT_S = 60.0  # every subscriber's subscription live
PUBLISH_TIMEOUT_S = 180.0  # GO to the publisher's result
SUB_RESULT_MARGIN_S = 15.0  # past the subscribers' own time limit
FINAL_TIMEOUT_S = 15.0  # STOP to the publisher's last line
PROBE_TIMEOUT_S = 60.0

README = BENCH_DIR / "README.md"
README_START = "<!-- pubsub:start -->"
README_END = "<!-- pubsub:end -->"

TARGET = 0.6  # meshrpc events/s / raw events/s, at least (delivered and publish side)
LOSS_NOTE_POINTS = 1.0  # loss differences larger than this many points are called out


@dataclass(frozen=True, slots=True)
class System:
    """One thing measured: how to start its publisher and its subscribers."""

    key: str
    label: str
    pub_argv: Callable[[int, int], list[str]]  # (events, subscribers) -> argv
    sub_argv: Callable[[str], list[str]]  # publisher's READY text (raw: endpoint) -> argv


@dataclass(frozen=True, slots=True)
class PubSubRun:
    """One run of one system with a given number of subscribers."""

    publish_rate: float  # events/s at the publisher (N / time of the publish loop)
    delivered_rate: float  # events/s received, median over the subscribers
    loss: float  # fraction of N x subscribers events not received
    e2e_rate: float  # received / (subscriber's last event - publisher's first send), median
    ended_by: list[str]  # per subscriber: marker, quiet or limit
    publisher: dict[str, Any]
    subscribers: list[dict[str, Any]]
    final: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def build(
        cls,
        events: int,
        pub: dict[str, Any],
        subs: list[dict[str, Any]],
        final: dict[str, Any] | None,
    ) -> PubSubRun:
        received = [int(s["received"]) for s in subs]
        e2e = [
            s["received"] / (s["last_t"] - pub["start_t"])
            if s["received"] and s["last_t"] > pub["start_t"]
            else 0.0
            for s in subs
        ]
        return cls(
            publish_rate=float(pub["rate"] or 0.0),
            delivered_rate=statistics.median(float(s["rate"] or 0.0) for s in subs),
            loss=1.0 - sum(received) / (events * len(subs)),
            e2e_rate=statistics.median(e2e),
            ended_by=[str(s["ended_by"]) for s in subs],
            publisher=pub,
            subscribers=subs,
            final=final,
        )


@dataclass(slots=True)
class Outcome:
    """What happened to one system with one subscriber count over all runs."""

    system: System
    subscribers: int
    runs: list[PubSubRun] = field(default_factory=list)
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.system.label}, {self.subscribers} sub{'s' if self.subscribers > 1 else ''}"

    @property
    def median(self) -> dict[str, float] | None:
        if not self.runs or self.error is not None:
            return None
        return {
            name: statistics.median(getattr(r, name) for r in self.runs)
            for name in ("publish_rate", "delivered_rate", "loss", "e2e_rate")
        }


# --------------------------------------------------------------------------- systems


def baseline_systems(hwm: int) -> list[System]:
    side = script("_pubsub_zmq.py")
    return [
        System(
            "zmq",
            "raw pyzmq PUB/SUB",
            lambda events, _subs: [*side, "pub", "--events", str(events), "--hwm", str(hwm)],
            lambda endpoint: [*side, "sub", endpoint, "--hwm", str(hwm)],
        )
    ]


def meshrpc_systems(backends: Sequence[str], modes: Sequence[str]) -> list[System]:
    side = script("_pubsub_meshrpc.py")

    def pub(backend: str, mode: str) -> Callable[[int, int], list[str]]:
        return lambda events, subs: [
            *side,
            "pub",
            "--backend",
            backend,
            "--mode",
            mode,
            "--events",
            str(events),
            "--subscribers",
            str(subs),
        ]

    def sub(backend: str) -> Callable[[str], list[str]]:
        # Subscribers find the publisher by mDNS: no endpoint to pass.
        return lambda _ready: [*side, "sub", "--backend", backend]

    call = {"nowait": "publish_nowait", "await": "await publish"}
    return [
        System(
            f"meshrpc_{backend}_{mode}",
            f"meshrpc ({backend}, {call[mode]})",
            pub(backend, mode),
            sub(backend),
        )
        for backend in backends
        for mode in modes
    ]


# ------------------------------------------------------------------------- children


class Child:
    """A child process whose stdout lines are read by a thread, and written to by ``send``."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        # Closed by close(), which every user reaches through children().
        self._log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return "".join(self._log.readlines()[-LOG_TAIL_LINES:])

    def expect(self, prefix: str, deadline: float) -> str:
        """The rest of the next line starting with ``prefix``, by ``deadline`` (monotonic).

        Raises:
            ChildError: the child reported a failure, exited, or missed the deadline.
        """
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ChildError(f"{self.name}: no {prefix.strip()} in time", self.tail()) from None
            if line is None:
                tail = self.tail()
                last = tail.strip().splitlines()[-1:] or ["(no stderr)"]
                status = self.proc.wait()
                raise ChildError(
                    f"{self.name} exited with status {status} before {prefix.strip()}: {last[0]}",
                    tail,
                )
            if line.startswith(RESULT_PREFIX):
                data = json.loads(line.removeprefix(RESULT_PREFIX))
                if not data.get("ok"):
                    raise ChildError(
                        f"{self.name}: {data.get('error', 'unknown failure')}", self.tail()
                    )
            if line.startswith(prefix):
                return line.removeprefix(prefix)

    def expect_json(self, prefix: str, deadline: float) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.expect(prefix, deadline))
        data.pop("ok", None)
        return data

    def send(self, word: str) -> None:
        """Best effort: a child that already exited is noticed by ``expect``."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        try:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            terminate(self.proc)
        finally:
            self._log.close()


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """Every child started into the list is stopped by PID on the way out."""
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            with contextlib.suppress(Exception):
                child.close()


def probe_meshrpc() -> tuple[str | None, dict[str, Any]]:
    """(``None`` if meshrpc pub/sub can be benchmarked, else why not (one line), its facts)."""
    with children() as started:
        child = Child("probe", [*script("_pubsub_meshrpc.py"), "probe"], child_env(new_namespace()))
        started.append(child)
        try:
            return None, child.expect_json(RESULT_PREFIX, time.monotonic() + PROBE_TIMEOUT_S)
        except ChildError as exc:
            return str(exc).removeprefix("probe: "), {}


def measure_once(system: System, subscribers: int, events: int) -> PubSubRun:
    """One run: fresh namespace, one publisher and ``subscribers`` subscriber processes."""
    env = child_env(new_namespace())
    with children() as started:
        pub = Child("publisher", system.pub_argv(events, subscribers), env)
        started.append(pub)
        ready = pub.expect("READY", time.monotonic() + PUB_READY_TIMEOUT_S).strip()
        subs = []
        for k in range(subscribers):
            subs.append(Child(f"subscriber {k + 1}", system.sub_argv(ready), env))
            started.append(subs[-1])
        deadline = time.monotonic() + SUBS_READY_TIMEOUT_S
        for sub in subs:
            sub.expect("READY", deadline)
        pub.send("GO")
        pub_result = pub.expect_json(RESULT_PREFIX, time.monotonic() + PUBLISH_TIMEOUT_S)
        deadline = time.monotonic() + SUB_TIME_LIMIT_S + SUB_RESULT_MARGIN_S
        sub_results = [sub.expect_json(RESULT_PREFIX, deadline) for sub in subs]
        pub.send("STOP")
        final: dict[str, Any] | None
        try:
            final = pub.expect_json(FINAL_PREFIX, time.monotonic() + FINAL_TIMEOUT_S)
        except ChildError as exc:
            final = {"error": str(exc), "stderr_tail": exc.log_tail}
    return PubSubRun.build(events, pub_result, sub_results, final)


# ------------------------------------------------------------------------ reporting


def raw_outcome(outcomes: Sequence[Outcome], subscribers: int) -> Outcome | None:
    for o in outcomes:
        if o.system.key == "zmq" and o.subscribers == subscribers:
            return o
    return None


def pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}"


def ratios(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """meshrpc / raw for delivered and publish rates, per meshrpc system and subscriber count."""
    rows: list[dict[str, Any]] = []
    for o in outcomes:
        m = o.median
        raw = raw_outcome(outcomes, o.subscribers)
        r = raw.median if raw else None
        if not o.system.key.startswith("meshrpc_") or m is None or r is None:
            continue
        for column, what in (("delivered_rate", "delivered"), ("publish_rate", "publish")):
            value = m[column] / r[column] if r[column] else float("nan")
            rows.append(
                {
                    "name": f"{o.label}: {what} events/s / raw {what} events/s",
                    "system": o.system.key,
                    "subscribers": o.subscribers,
                    "column": column,
                    "value": value,
                    "target": f">= {TARGET}",
                    "met": value >= TARGET,
                    "loss": m["loss"],
                    "raw_loss": r["loss"],
                }
            )
    return rows


def ratio_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per ratio, with both systems' loss: a rate bought by dropping is flagged."""
    lines = []
    for r in rows:
        line = (
            f"{r['name']}: {r['value']:.2f} "
            f"(target {r['target']}: {'met' if r['met'] else 'NOT met'}); "
            f"loss {pct(r['loss'])}% vs raw {pct(r['raw_loss'])}%"
        )
        diff = 100 * (r["loss"] - r["raw_loss"])
        if diff > LOSS_NOTE_POINTS:
            line += " -- meshrpc drops more than raw"
        elif diff < -LOSS_NOTE_POINTS:
            line += " -- raw drops more than meshrpc"
        lines.append(line)
    return lines


HEADERS = ("system", "subs", "publish ev/s", "delivered ev/s/sub", "loss %")


def table_rows(outcomes: Sequence[Outcome]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for o in sorted(outcomes, key=lambda o: o.subscribers):
        m = o.median
        if m is None:
            rows.append((o.system.label, str(o.subscribers), "-", "-", "-"))
            continue
        rows.append(
            (
                o.system.label,
                str(o.subscribers),
                f"{m['publish_rate']:,.0f}",
                f"{m['delivered_rate']:,.0f}",
                pct(m["loss"]),
            )
        )
    return rows


def spread_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """Per system and subscriber count, the lowest and highest run of the headline numbers."""
    lines = []
    for o in sorted(outcomes, key=lambda o: o.subscribers):
        if len(o.runs) < 2 or o.error is not None:
            continue
        pub = [r.publish_rate for r in o.runs]
        dlv = [r.delivered_rate for r in o.runs]
        loss = [r.loss for r in o.runs]
        lines.append(
            f"{o.label}: publish {min(pub):,.0f}-{max(pub):,.0f}, delivered "
            f"{min(dlv):,.0f}-{max(dlv):,.0f} events/s, loss {pct(min(loss))}-{pct(max(loss))}%"
        )
    return lines


def anomaly_lines(outcomes: Sequence[Outcome]) -> list[str]:
    """Things a reader of the medians should know: time limits hit, end markers missed,
    meshrpc's own loss counters, a publisher that did not stop cleanly."""
    lines = []
    for o in outcomes:
        for n, r in enumerate(o.runs, 1):
            limit = r.ended_by.count("limit")
            if limit:
                lines.append(
                    f"{o.label}, run {n}: {limit} subscriber(s) stopped at the "
                    f"{SUB_TIME_LIMIT_S:.0f} s time limit (loss overstated)"
                )
            quiet = r.ended_by.count("quiet")
            if quiet:
                lines.append(
                    f"{o.label}, run {n}: {quiet} subscriber(s) saw no end marker "
                    f"(stopped after {QUIET_S:.0f} s of quiet)"
                )
            closing = [
                str(sub["shutdown_error"]) for sub in r.subscribers if "shutdown_error" in sub
            ]
            if closing:
                lines.append(
                    f"{o.label}, run {n}: {len(closing)} subscriber(s) measured in full, then "
                    f"failed while closing: {closing[0]}"
                )
            if r.final is not None and "error" in r.final:
                lines.append(
                    f"{o.label}, run {n}: publisher did not stop cleanly: {r.final['error']}"
                )
        counters = [meshrpc_counters(r) for r in o.runs]
        if any(c is not None and (c["lost"] or c["missed"] or c["dropped"]) for c in counters):
            per_run = "; ".join(
                "-"
                if c is None
                else f"lost {c['lost']:,}, missed {c['missed']:,}, dropped {c['dropped']:,}"
                for c in counters
            )
            lines.append(
                f"{o.label}: events not received (all subscribers) against the subscribers' "
                f"statistics() 'missed' and 'dropped', per run: {per_run}"
            )
    return lines


def meshrpc_counters(r: PubSubRun) -> dict[str, int] | None:
    """Events lost (counted here) and meshrpc's own counters, summed over the subscribers."""
    stats = [s.get("stats") for s in r.subscribers]
    if not all(isinstance(st, dict) for st in stats):
        return None
    events = r.publisher["published"]
    return {
        "lost": sum(events - int(s["received"]) for s in r.subscribers),
        "missed": sum(int(st.get("missed") or 0) for st in stats if isinstance(st, dict)),
        "dropped": sum(int(st.get("dropped") or 0) for st in stats if isinstance(st, dict)),
    }


def readme_section(report: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    p = report["params"]
    lines = [
        README_START,
        *machine_lines(report),
        f"Medians of {p['runs']} run{'s' if p['runs'] != 1 else ''}; per run "
        f"{p['events']:,} events published, to "
        f"{' and to '.join(str(n) for n in p['subscribers'])} subscriber processes.",
        "",
        markdown_table(HEADERS, table_rows(outcomes)),
        "",
    ]
    lines += markdown_sections(
        [
            ("Spread over the runs (lowest-highest):", spread_lines(outcomes)),
            ("Ratios of the medians:", ratio_lines(report["ratios"])),
            ("Notes:", anomaly_lines(outcomes)),
        ]
    )
    failed = [f"- {o.label}: not measured: {o.error}" for o in outcomes if o.error]
    if failed:
        lines += [*failed, ""]
    if lines[-1] == "":
        lines.pop()
    lines.append(README_END)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pubsub.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"divide the events by {QUICK_DIVISOR}"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3)")
    parser.add_argument(
        "--subscribers",
        default=",".join(map(str, SUBSCRIBER_COUNTS)),
        help="comma-separated subscriber counts (default 1,4)",
    )
    parser.add_argument("--backend", choices=("asyncio", "trio", "both"), default="asyncio")
    parser.add_argument("--mode", choices=("nowait", "await", "both"), default="both")
    parser.add_argument(
        "--raw-hwm",
        type=int,
        default=RAW_HWM,
        help=f"SNDHWM/RCVHWM of the raw sockets (default {RAW_HWM:,}, as meshrpc)",
    )
    parser.add_argument("--only", choices=("all", "baselines", "meshrpc"), default="all")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write results as JSON")
    parser.add_argument(
        "--write-readme", action="store_true", help="rewrite the pub/sub results in README.md"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the end of a failed child's stderr"
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        args.subscribers = [int(n) for n in args.subscribers.split(",")]
    except ValueError:
        parser.error("--subscribers takes comma-separated integers")
    if not args.subscribers or min(args.subscribers) < 1 or max(args.subscribers) > 16:
        parser.error("--subscribers: each count must be 1..16")
    return args


def report_failure(label: str, exc: ChildError, verbose: bool) -> None:
    print(f"  {label}: FAILED: {exc}", file=sys.stderr)
    if verbose and exc.log_tail:
        print("    " + exc.log_tail.rstrip().replace("\n", "\n    "), file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"  # loopback only, here and in children
    events = EVENTS // (QUICK_DIVISOR if args.quick else 1)
    backends = ["asyncio", "trio"] if args.backend == "both" else [args.backend]
    modes = ["nowait", "await"] if args.mode == "both" else [args.mode]

    systems: list[System] = []
    if args.only in ("all", "baselines"):
        systems += baseline_systems(args.raw_hwm)
    skipped: list[Outcome] = []
    meshrpc_facts: dict[str, Any] = {}
    if args.only in ("all", "meshrpc"):
        why, meshrpc_facts = probe_meshrpc()
        hwm = meshrpc_facts.get("defaults", {}).get("hwm")
        if why is None and hwm != args.raw_hwm:
            print(
                f"note: meshrpc's high-water mark is {hwm}, the raw sockets' {args.raw_hwm}: "
                "loss is not comparable",
                file=sys.stderr,
            )
        if why is None:
            systems += meshrpc_systems(backends, modes)
        else:
            print(f"meshrpc part skipped: {why}", file=sys.stderr)
            skipped = [
                Outcome(s, n, error=why)
                for n in args.subscribers
                for s in meshrpc_systems(backends, modes)
            ]

    busy_before = cpu_busy_before()
    outcomes = [Outcome(s, n) for n in args.subscribers for s in systems]
    for i in range(1, args.runs + 1):
        for outcome in outcomes:
            if outcome.error is not None:
                continue
            print(f"run {i}/{args.runs} {outcome.label} ...", file=sys.stderr, flush=True)
            try:
                result = measure_once(outcome.system, outcome.subscribers, events)
            except ChildError as exc:
                outcome.error = str(exc)
                report_failure(outcome.label, exc, args.verbose)
                continue
            outcome.runs.append(result)
            print(
                f"  publish {result.publish_rate:,.0f}/s, delivered "
                f"{result.delivered_rate:,.0f}/s per subscriber, loss {pct(result.loss)}%, "
                f"ended by {','.join(result.ended_by)}",
                file=sys.stderr,
                flush=True,
            )
    outcomes += skipped

    report: dict[str, Any] = {
        "command": "python bench/pubsub.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "cpu_busy_before": busy_before,
        "cpu_busy_after": cpu_busy_fraction(),
        "params": {
            "runs": args.runs,
            "quick": args.quick,
            "events": events,
            "subscribers": args.subscribers,
            "quiet_s": QUIET_S,
            "subscriber_time_limit_s": SUB_TIME_LIMIT_S,
            "raw_hwm": args.raw_hwm,
        },
        "meshrpc": meshrpc_facts,
        "systems": [
            {
                "key": o.system.key,
                "label": o.system.label,
                "subscribers": o.subscribers,
                "median": o.median,
                "runs": [r.to_dict() for r in o.runs],
                "error": o.error,
            }
            for o in outcomes
        ],
        "ratios": ratios(outcomes),
    }

    print()
    print(text_table(HEADERS, table_rows(outcomes)))
    print_sections(
        [
            ("spread over the runs (lowest-highest):", spread_lines(outcomes)),
            ("ratios of the medians:", ratio_lines(report["ratios"])),
            ("notes:", anomaly_lines(outcomes)),
        ]
    )
    warn_if_busy(report)
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"\n{o.label}: not measured: {o.error}")

    if args.json:
        write_json(args.json, report)
    if args.write_readme:
        write_readme(
            readme_section(report, outcomes),
            README_START,
            README_END,
            README,
            heading="## Pub/sub results",
        )
        print(f"updated {README}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
