"""Reliability figures: the fault matrix rows of shared/RELIABILITY.md, measured.

    python bench/chaos.py [--runs N] [--only kill,stop,rolling,amplification,partition]
                          [--json PATH] [--write-docs]

Real processes on 127.0.0.1 (and, as root, hosts in network namespaces this script
creates, joined by a bridge in their own namespace with no route out). Every run checks
the whole call history against the contract with tests/chaos.py before its figures count.
With --write-docs the results replace the section between the markers in
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from meshrpc import Requester  # noqa: E402
from tests import netns  # noqa: E402
from tests.chaos import Child, History, partition_under_load  # noqa: E402

DOCS = ROOT / "docs" / "reliability.md"
START, END = "<!-- chaos:start -->", "<!-- chaos:end -->"
Figures = dict[str, Any]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def sample_until(cond: Callable[[], bool], limit: float = 10.0) -> float:
    """Seconds until ``cond()`` holds, polled every millisecond."""
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > limit:
            raise TimeoutError("condition not reached")
        await anyio.sleep(0.001)
    return time.monotonic() - started


def children(namespace: str, log_dir: Path, names: list[str], *args: str) -> list[Child]:
    started = [Child(name, namespace, log_dir, *args) for name in names]
    for child in started:
        child.wait_ready()
    return started


async def kill_run(log_dir: Path) -> Figures:
    """P1: kill -9 one of 3 responders holding calls; when do those calls end?"""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    procs = children(namespace, log_dir, ["k0", "k1", "k2"])
    history = History(log_dir)
    try:
        async with Requester(name="bench-kill", namespace=namespace) as client:
            await client.wait_for_responders("work", 3, timeout=20)
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: history.load(client, stop, workers=24, sleep=0.5))
                await anyio.sleep(1.2)
                killed_at = time.time()
                procs[0].kill()
                unselected = await sample_until(
                    lambda: client.statistics()["selectable_peers"] == 2
                )
                await anyio.sleep(1.0)
                stop.set()
            history.check(allowed={"OK", "PeerLost"})
    finally:
        for child in procs:
            child.close()
    lost = [c.ended - killed_at for c in history.calls if c.outcome == "PeerLost" and c.ended]
    return {"to_outcome": lost, "unselected": unselected, "calls": len(history.calls)}


async def stop_run(log_dir: Path) -> Figures:
    """P8: SIGSTOP one of 2 responders for 3 s; detection, and stale executions."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    procs = children(namespace, log_dir, ["s0", "s1"])
    history = History(log_dir)
    try:
        async with Requester(name="bench-stop", namespace=namespace) as client:
            await client.wait_for_responders("work", 2, timeout=20)
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    lambda: history.load(client, stop, workers=8, sleep=0.05, timeout=1.0)
                )
                await anyio.sleep(1.0)
                procs[0].signal(signal.SIGSTOP)
                detected = await sample_until(lambda: client.statistics()["selectable_peers"] == 1)
                await anyio.sleep(3.0 - detected)
                procs[0].signal(signal.SIGCONT)
                await sample_until(lambda: client.statistics()["selectable_peers"] == 2)
                await anyio.sleep(1.0)
                stop.set()
            summary = history.check(allowed={"OK", "PeerLost", "DeadlineExceeded"})
    finally:
        for child in procs:
            child.close()
    return {"detected": detected, "outcomes": summary["outcomes"]}


async def rolling_run(log_dir: Path) -> Figures:
    """P5: replace 3 v1 responders by v2 one at a time under constant load."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    procs = children(namespace, log_dir, ["v1-0", "v1-1", "v1-2"], "--version", "1.0")
    history = History(log_dir)
    try:
        async with Requester(name="bench-rolling", namespace=namespace) as client:
            await client.wait_for_responders("work", 3, timeout=20)
            stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: history.load(client, stop, workers=12, sleep=0.01))
                tg.start_soon(
                    lambda: history.load(client, stop, workers=4, sleep=0.01, type="iwork")
                )
                await anyio.sleep(1.0)
                for i, old in enumerate(list(procs[:3])):
                    new = Child(f"v2-{i}", namespace, log_dir, "--version", "2.0")
                    procs.append(new)
                    await new.ready()
                    await anyio.sleep(0.5)
                    old.signal(signal.SIGTERM)
                    await anyio.to_thread.run_sync(old.wait)
                await anyio.sleep(1.0)
                stop.set()
            summary = history.check()
    finally:
        for child in procs:
            child.close()
    oks = sorted(c.ended for c in history.calls if c.outcome == "OK" and c.ended)
    gap = max((b - a for a, b in itertools.pairwise(oks)), default=0.0)
    outcomes = summary["outcomes"]
    return {
        "calls": summary["calls"],
        "failed": summary["calls"] - outcomes.get("OK", 0) - outcomes.get("LOST", 0),
        "lost": outcomes.get("LOST", 0),
        "max_gap": gap,
    }


async def amplification_run(log_dir: Path) -> Figures:
    """O3: every responder refusing (overloaded) or hung; attempts sent per call."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    procs = children(namespace, log_dir, ["a0", "a1"], "--max-concurrency", "1")
    history = History(log_dir)
    calls = 300
    try:
        async with Requester(name="bench-amp", namespace=namespace) as client:
            await client.wait_for_responders("work", 2, timeout=20)
            async with anyio.create_task_group() as tg:
                for _ in range(2):  # occupy both: every further call is refused
                    tg.start_soon(lambda: history.call(client, sleep=30, timeout=60))
                await sample_until(lambda: client.statistics()["in_flight"] == 2)
                before = client.statistics()["sent"]
                for _ in range(calls):
                    await history.call(client, timeout=1.0)
                refused = (client.statistics()["sent"] - before) / calls
                # All hung instead (idempotent calls with a 20 ms attempt timeout).
                before = client.statistics()["sent"]
                for _ in range(100):
                    await history.call(client, "iwork", timeout=0.3, attempt_timeout=0.02)
                hung = (client.statistics()["sent"] - before) / 100
                tg.cancel_scope.cancel()
    finally:
        for child in procs:
            child.close()
    return {"overloaded": refused, "hung": hung}


def partition_run(log_dir: Path) -> Figures:
    """N1: cut one of 2 responder hosts off for 3 s under load, then heal."""
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    with netns.network(3) as net:
        h1, h2, h3 = net.hosts
        procs = [Child("n1", namespace, log_dir, host=h1), Child("n2", namespace, log_dir, host=h2)]
        try:
            for child in procs:
                child.wait_ready()
            run = partition_under_load(net, h1, h3, namespace, log_dir, responders=2)
        finally:
            for child in procs:
                child.close()
    summary = run.history.check()
    outcomes = summary["outcomes"]
    return {
        "detected": run.out_of_rotation_after(1),
        "rejoined": run.back_after(2),
        "failed": summary["calls"] - outcomes.get("OK", 0),
        "calls": summary["calls"],
    }


def report(results: dict[str, list[Figures]], runs: int) -> str:
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with "
        f"`python bench/chaos.py --runs {runs}`; {platform.python_version()}, "
        f"{platform.machine()}, loopback (N1: network namespaces on one bridge).",
        "",
        "| row | figure | result | target |",
        "|---|---|---|---|",
    ]
    if "kill" in results:
        times = [t * 1000 for r in results["kill"] for t in r["to_outcome"]]
        unsel = [r["unselected"] * 1000 for r in results["kill"]]
        lines += [
            f"| P1 kill -9 | kill → outcome of its in-flight calls, p50 / p99 / max "
            f"({len(times)} calls, {len(results['kill'])} kills) | {pct(times, 0.5):.1f} / "
            f"{pct(times, 0.99):.1f} / {max(times):.1f} ms | p99 < 100 ms |",
            f"| P1 kill -9 | kill → no longer selected, median (max) | "
            f"{statistics.median(unsel):.1f} ({max(unsel):.1f}) ms | — |",
        ]
    if "stop" in results:
        det = [r["detected"] for r in results["stop"]]
        lines.append(
            f"| P8 SIGSTOP 3 s | stop → no longer selected, median (max); executions after "
            f"their deadline | {statistics.median(det):.2f} ({max(det):.2f}) s; 0 | stale 0 |"
        )
    if "rolling" in results:
        r = results["rolling"]
        lines.append(
            f"| P5 rolling v1 → v2 of 3 | failed / lost of {sum(x['calls'] for x in r)} calls "
            f"({len(r)} upgrades); longest gap between successes | "
            f"{sum(x['failed'] for x in r)} / {sum(x['lost'] for x in r)}; "
            f"{max(x['max_gap'] for x in r) * 1000:.0f} ms | 0 / 0 |"
        )
    if "amplification" in results:
        a = results["amplification"]
        lines.append(
            f"| O3 all failing | attempts per call: all overloaded / all hung (idempotent, "
            f"attempt timeout) | {statistics.median(x['overloaded'] for x in a):.2f} / "
            f"{statistics.median(x['hung'] for x in a):.2f} | ≤ 1.2 |"
        )
    if "partition" in results:
        p = results["partition"]
        lines.append(
            f"| N1 partition 3 s | cut → no longer selected / heal → selected again, "
            f"median; failed of {sum(x['calls'] for x in p)} idempotent calls | "
            f"{statistics.median(x['detected'] for x in p):.2f} s / "
            f"{statistics.median(x['rejoined'] for x in p):.2f} s; "
            f"{sum(x['failed'] for x in p)} | lost 0 |"
        )
    elif "partition-skipped" in results:
        lines.append(f"| N1 partition | skipped: {results['partition-skipped'][0]['why']} | | |")
    return "\n".join(lines)


def write_docs(section: str) -> None:
    text = DOCS.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{START}\n{section}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="kill,stop,rolling,amplification,partition")
    parser.add_argument("--json", default="")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    wanted = set(args.only.split(","))
    results: dict[str, list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="meshrpc-chaos-") as tmp:
        for run in range(args.runs):
            for name, fn in (
                ("kill", kill_run),
                ("stop", stop_run),
                ("rolling", rolling_run),
                ("amplification", amplification_run),
            ):
                if name in wanted:
                    log_dir = Path(tmp) / f"{name}-{run}"
                    log_dir.mkdir()
                    results.setdefault(name, []).append(anyio.run(fn, log_dir))
                    print(f"{name} run {run + 1}: {results[name][-1]}", file=sys.stderr)
            if "partition" in wanted:
                why = netns.available()
                if why:
                    results["partition-skipped"] = [{"why": why}]
                else:
                    log_dir = Path(tmp) / f"partition-{run}"
                    log_dir.mkdir()
                    results.setdefault("partition", []).append(partition_run(log_dir))
                    print(f"partition run {run + 1}: {results['partition'][-1]}", file=sys.stderr)
    section = report(results, args.runs)
    print(section)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
