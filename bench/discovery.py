"""Discovery figures for every backend: join, leave, and a Redis outage under load.

    python bench/discovery.py [--runs N] [--backends mdns,static,redis] [--outage SECONDS]
                              [--json PATH] [--write-readme] [--write-docs]

Separate processes on 127.0.0.1 (tests/chaos_responder.py), a real redis-server on a
random loopback port. Per backend and run:

- join: a requester is running; a responder process starts; time from the responder
  printing READY (announced) until the requester has it in rotation (usable).
- late requester: responders run; a requester starts; time until its first reply.
- leave: SIGTERM a responder; time until the requester no longer lists it.
And once: Redis stopped for 10 s while calls run between known peers (failed calls).
Targets (issue 7), per backend: join p50 < 50 ms, late requester's first reply p50 < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from meshrpc import Requester  # noqa: E402
from tests.chaos import Child  # noqa: E402
from tests.procs import free_port  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

DOCS = ROOT / "docs" / "discovery.md"
README = ROOT / "bench" / "README.md"
START, END = "<!-- discovery:start -->", "<!-- discovery:end -->"
JOIN_TARGET_MS = 50.0  # responder ready -> in rotation at a running requester, p50 below
LATE_TARGET_MS = 100.0  # requester start -> first reply, p50 below


def env_for(backend: str, redis_url: str, seed: str) -> dict[str, str]:
    if backend == "static":
        return {"MESHRPC_DISCOVERY": "static", "MESHRPC_PEERS": seed}
    if backend == "redis":
        return {"MESHRPC_DISCOVERY": redis_url}
    return {"MESHRPC_DISCOVERY": "mdns"}


async def poll(cond: Any, limit: float = 20.0) -> float:
    started = time.monotonic()
    while not cond():
        if time.monotonic() - started > limit:
            raise TimeoutError("not reached")
        await anyio.sleep(0.001)
    return time.monotonic() - started


async def one_run(backend: str, redis_url: str, log_dir: Path) -> dict[str, float]:
    import os

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    seed_port = free_port()
    seed = f"tcp://127.0.0.1:{seed_port}"
    env = env_for(backend, redis_url, seed)
    os.environ.update(env)  # the in-process requesters read the same configuration
    children: list[Child] = []
    try:
        first = Child("seed", namespace, log_dir, "--port", str(seed_port), env=env)
        children.append(first)
        first.wait_ready()
        # A requester started after the responder: time to its first reply.
        started = time.monotonic()
        async with Requester(name="late", namespace=namespace) as late:
            await late.send("work", {"n": 0}, timeout=20)
            late_first_reply = time.monotonic() - started
        async with Requester(name="watcher", namespace=namespace) as client:
            await client.wait_for_responders("work", 1, timeout=20)
            joiner = Child("joiner", namespace, log_dir, env=env)
            children.append(joiner)
            await joiner.ready()
            ready_at = time.monotonic()
            await poll(lambda: client.statistics()["usable_peers"] == 2)
            join = time.monotonic() - ready_at
            joiner.signal(signal.SIGTERM)
            term_at = time.monotonic()
            await poll(lambda: len(client.responders()) == 1)
            leave = time.monotonic() - term_at
    finally:
        for child in children:
            child.close()
        for key in env:
            os.environ.pop(key, None)
    return {"join": join, "late_first_reply": late_first_reply, "leave": leave}


async def redis_outage(redis: RedisServer, log_dir: Path, seconds: float) -> dict[str, Any]:
    import os

    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    env = {"MESHRPC_DISCOVERY": redis.url}
    os.environ.update(env)
    children = [Child(f"o{i}", namespace, log_dir, env=env) for i in range(2)]
    try:
        for child in children:
            child.wait_ready()
        async with Requester(name="outage", namespace=namespace) as client:
            await client.wait_for_responders("work", 2, timeout=20)
            ok = failed = 0
            redis.stop()
            down = time.monotonic()
            while time.monotonic() - down < seconds:
                try:
                    await client.send("work", {"n": ok + failed}, timeout=2)
                    ok += 1
                except Exception:
                    failed += 1
            redis.start()  # empty: it lost every registration
            back = time.monotonic()
            import redis as redis_lib

            raw = redis_lib.Redis.from_url(redis.url)
            rejoined: float | None = None

            def responders_registered() -> int:
                # Only the two responders: each process's hidden statistics publisher
                # (meshrpc.stats) registers an advertisement of its own.
                ads = (raw.get(key) for key in raw.keys("meshrpc:ad:*"))
                return sum(1 for ad in ads if ad and json.loads(ad).get("k") == "responder")

            try:
                await poll(lambda: responders_registered() == 2)
                rejoined = time.monotonic() - back
            except TimeoutError:
                pass  # reported as not re-registered within the poll's limit
            finally:
                raw.close()
    finally:
        for child in children:
            child.close()
        os.environ.pop("MESHRPC_DISCOVERY", None)
    return {"ok": ok, "failed": failed, "seconds": seconds, "re_registered": rejoined}


def medians(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per backend, the median of each figure over the runs, in seconds."""
    return {
        backend: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for backend, rows in results.items()
        if rows
    }


def ratios(results: dict[str, list[dict[str, float]]]) -> list[dict[str, Any]]:
    """The targets, per backend (there is no raw baseline for discovery)."""
    rows: list[dict[str, Any]] = []
    for backend, med in medians(results).items():
        for key, what, target in (
            ("join", "join (ready -> in rotation)", JOIN_TARGET_MS),
            ("late_first_reply", "late requester start -> first reply", LATE_TARGET_MS),
        ):
            ms = med[key] * 1000
            worst = max(r[key] for r in results[backend]) * 1000
            rows.append(
                {
                    "name": f"{backend}: {what}, p50 ms",
                    "value": ms,
                    "display": f"{ms:.0f}",
                    "target": f"< {target:.0f}",
                    "met": ms < target,
                    "meshrpc": f"{ms:.0f} ms (max {worst:.0f})",
                    "baseline": "",
                }
            )
    return rows


def report(
    results: dict[str, list[dict[str, float]]], outage: dict[str, Any] | None, command: str
) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC with "
        f"`{command}` (processes on 127.0.0.1; medians, max in brackets):",
        "",
        "| backend | responder ready → in rotation at a running requester | requester "
        "start → first reply | clean leave → gone from the requester |",
        "|---|---|---|---|",
    ]
    for backend, rows in results.items():

        def fmt(key: str, rows: list[dict[str, float]] = rows) -> str:
            values = [r[key] * 1000 for r in rows]
            return f"{statistics.median(values):.0f} ms ({max(values):.0f})"

        lines.append(f"| {backend} | {fmt('join')} | {fmt('late_first_reply')} | {fmt('leave')} |")
    if outage is not None:
        back = (
            "both responders had NOT registered again 20 s later"
            if outage["re_registered"] is None
            else f"both responders had registered again {outage['re_registered'] * 1000:.0f} "
            "ms later, by themselves"
        )
        lines += [
            "",
            f"Redis stopped for {outage['seconds']:.0f} s while a requester called two known "
            f"responders: {outage['ok']:,} calls OK, {outage['failed']} failed. Redis came "
            f"back empty; {back}.",
        ]
    targets = ratios(results)
    if targets:
        lines += ["", "Targets (p50):", ""]
        lines += [
            f"- {r['name']}: {r['display']} (target {r['target']}: "
            f"{'met' if r['met'] else 'NOT met'})"
            for r in targets
        ]
    return "\n".join(lines)


def replace_between(path: Path, section: str) -> None:
    """Put ``section`` between the discovery markers of ``path`` (appended if missing)."""
    text = path.read_text()
    if START not in text or END not in text:
        path.write_text(f"{text.rstrip()}\n\n{START}\n{section}\n{END}\n")
        return
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{section}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--outage", type=float, default=10.0, help="seconds Redis is down (0: skip the outage)"
    )
    parser.add_argument(
        "--backends", default="mdns,static,redis", help="comma-separated subset to measure"
    )
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--write-readme",
        action="store_true",
        help="rewrite the discovery results in bench/README.md",
    )
    parser.add_argument(
        "--write-docs", action="store_true", help="rewrite the results in docs/discovery.md"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"mdns", "static", "redis"}:
        parser.error("--backends takes a comma-separated subset of mdns,static,redis")
    import os

    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"
    redis = RedisServer()
    redis.start()
    results: dict[str, list[dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                for backend in backends:
                    row = anyio.run(one_run, backend, redis.url, Path(tmp))
                    results.setdefault(backend, []).append(row)
                    shown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in row.items())
                    print(f"{backend} run {run + 1}: {shown}", file=sys.stderr)
            outage: dict[str, Any] | None = None
            if args.outage > 0 and "redis" in backends:
                outage = anyio.run(redis_outage, redis, Path(tmp), args.outage)
                print(f"outage: {outage}", file=sys.stderr)
    finally:
        redis.stop()
    command = "python bench/discovery.py " + " ".join(sys.argv[1:])
    section = report(results, outage, command)
    print(section)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        data = {
            "command": command,
            "params": {"runs": args.runs, "backends": backends, "outage_s": args.outage},
            "runs": results,
            "medians": medians(results),
            "outage": outage,
            "ratios": ratios(results),
        }
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.write_readme:
        replace_between(README, section)
    if args.write_docs:
        replace_between(DOCS, section)


if __name__ == "__main__":
    main()
