"""Chaos harness: responder processes to hurt, a recorded load, and a history checker.

The requester side records every logical call ``(n, type, idempotent, sent, ended,
outcome, by)``; every responder process logs every execution ``(n, by, attempt, at,
left)``. :meth:`History.check` then verifies the reliability contract
(``shared/RELIABILITY.md``): exactly one outcome per call and none lost, nothing run
after its deadline, a non-idempotent call run at most once, an OK call run by the
responder that answered.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from meshrpc import MeshError, Requester
from tests import procs
from tests.netns import Host

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "chaos_responder.py"
# A same-machine clock is shared, so these allow only for scheduling noise.
CLOCK_SLACK = 0.005


class Child:
    """One chaos responder process, ended by its PID."""

    def __init__(
        self,
        name: str,
        namespace: str,
        log_dir: Path,
        *args: str,
        host: Host | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.{time.monotonic_ns()}.jsonl"
        self.proc = spawn(CHILD, "--name", name, "--namespace", namespace, "--log", str(self.log),
                          *args, host=host, env=env)  # fmt: skip
        self.started = time.time()
        self.endpoint = ""

    def wait_ready(self, timeout: float = 20.0) -> str:
        """Block until the child printed READY (or fail with its stderr)."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("READY"):
            self.kill()
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"{self.name} did not start: {line!r} {err[-2000:]}")
        self.endpoint = line.split()[1]
        return self.endpoint

    async def ready(self, timeout: float = 20.0) -> str:
        """:meth:`wait_ready` without blocking the event loop (load keeps running)."""
        return await anyio.to_thread.run_sync(self.wait_ready, timeout)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
            raise

    def close(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        procs.reap(self.proc, grace=15)


@dataclass
class Call:
    n: int
    type: str
    idempotent: bool
    timeout: float
    sent: float  # wall clock, comparable with the children's execution times
    ended: float | None = None
    outcome: str | None = None
    by: str | None = None


@dataclass
class History:
    """Every call made through :meth:`call`, and the executions the children logged."""

    log_dir: Path
    calls: list[Call] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def call(
        self,
        requester: Requester,
        type: str = "work",
        *,
        sleep: float = 0.0,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
    ) -> Call:
        record = Call(next(self._ids), type, type == "iwork", timeout, time.time())
        self.calls.append(record)
        try:
            reply = await requester.send(
                type,
                {"n": record.n, "sleep": sleep},
                timeout=timeout,
                attempt_timeout=attempt_timeout,
            )
        except MeshError as exc:
            record.outcome = type_name(exc)
        else:
            record.outcome = "OK"
            record.by = reply["by"]
        record.ended = time.time()
        return record

    async def load(
        self,
        requester: Requester,
        stop: anyio.Event,
        *,
        workers: int = 8,
        max_calls: int = 20_000,
        max_seconds: float = 30.0,
        **kwargs: Any,
    ) -> None:
        """Keep ``workers`` calls in flight until ``stop`` (bounded in count and time)."""
        deadline = time.monotonic() + max_seconds

        async def worker() -> None:
            while not stop.is_set() and len(self.calls) < max_calls:
                if time.monotonic() > deadline:
                    return
                await self.call(requester, **kwargs)

        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)

    def executions(self) -> list[dict[str, Any]]:
        runs = []
        for path in sorted(self.log_dir.glob("*.jsonl")):
            with path.open() as f:
                runs.extend(json.loads(line) for line in f if line.endswith("\n"))
        return runs

    def outcomes(self, since: float = 0.0) -> Counter[str]:
        return Counter(c.outcome or "LOST" for c in self.calls if c.sent >= since)

    def check(self, *, allowed: set[str] | None = None) -> dict[str, Any]:
        """Verify the contract; returns a summary (raises AssertionError on a breach)."""
        lost = [c for c in self.calls if c.outcome is None]
        assert not lost, f"{len(lost)} calls without an outcome, e.g. {lost[:3]}"
        by_n = {c.n: c for c in self.calls}
        runs: dict[int, list[dict[str, Any]]] = {}
        for run in self.executions():
            runs.setdefault(run["n"], []).append(run)
        for n, executions in runs.items():
            call = by_n.get(n)
            assert call is not None, f"execution of a call never made: {executions}"
            for run in executions:
                late = run["at"] - (call.sent + call.timeout)
                assert late <= CLOCK_SLACK, f"call {n} ran {late:.3f}s after its deadline: {run}"
                assert run["left"] > 0, f"call {n} started with no time left: {run}"
            if not call.idempotent:
                assert len(executions) == 1, f"non-idempotent call {n} ran twice: {executions}"
        for call in self.calls:
            if call.outcome == "OK":
                assert any(r["by"] == call.by for r in runs.get(call.n, [])), (
                    f"call {call.n} answered by {call.by} which never ran it"
                )
        outcomes = self.outcomes()
        if allowed is not None:
            assert set(outcomes) <= allowed, f"unexpected outcomes: {outcomes}"
        return {"calls": len(self.calls), "outcomes": dict(outcomes), "executions": len(runs)}


def spawn(
    script: Path, *args: str, host: Host | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start ``script`` on loopback, or inside a test host's network namespace, with
    ``env`` added to the environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    env["MESHRPC_INTERFACES"] = host.address if host else "127.0.0.1"
    command = [sys.executable, str(script), *args]
    return subprocess.Popen(
        host.command(*command) if host else command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def type_name(exc: BaseException) -> str:
    return type(exc).__name__


def children_factory(namespace: str, log_dir: Path) -> tuple[Callable[..., Child], list[Child]]:
    """A ``start(name, *args)`` function and the list of every child it started."""
    started: list[Child] = []

    def start(
        name: str,
        *args: str,
        ready: bool = True,
        host: Host | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        child = Child(name, namespace, log_dir, *args, host=host, env=env)
        started.append(child)
        if ready:
            child.wait_ready()
        return child

    return start, started


REQUESTER = ROOT / "tests" / "chaos_requester.py"


@dataclass
class PartitionRun:
    """What a requester host saw while another host was cut off and healed."""

    history: History
    cut_at: float
    healed_at: float
    samples: list[list[float]]

    def out_of_rotation_after(self, selectable: int) -> float:
        """Seconds from the cut until only ``selectable`` peers were in rotation."""
        return next(t for t, n, _ in self.samples if t > self.cut_at and n == selectable) - (
            self.cut_at
        )

    def back_after(self, selectable: int) -> float:
        """Seconds from the heal until ``selectable`` peers were in rotation again."""
        return next(t for t, n, _ in self.samples if t > self.healed_at and n == selectable) - (
            self.healed_at
        )


def partition_under_load(
    net: Any,
    victim: Host,
    requester_host: Host,
    namespace: str,
    log_dir: Path,
    *,
    responders: int,
    backend: str = "asyncio",
    env: dict[str, str] | None = None,
) -> PartitionRun:
    """Run recorded idempotent load from ``requester_host`` for 9 s: 2 s healthy, 3 s
    with ``victim``'s switch port down, 4 s healed. The responders must be running."""
    out = log_dir / f"requester-{time.monotonic_ns()}.json"
    requester = spawn(REQUESTER, "--namespace", namespace, "--out", str(out),
                      "--responders", str(responders), "--duration", "9", "--type", "iwork",
                      "--timeout", "4", "--backend", backend, host=requester_host,
                      env=env)  # fmt: skip
    try:
        assert requester.stdout is not None
        ready, _, _ = select.select([requester.stdout], [], [], 40)
        if not ready or not requester.stdout.readline().startswith("READY"):
            raise AssertionError(f"the requester host did not find {responders} responders")
        time.sleep(2)  # the schedule of the fault, not a wait for anything
        cut_at = time.time()
        net.cut(victim)
        time.sleep(3)
        healed_at = time.time()
        net.heal(victim)
        code = requester.wait(60)
        assert code == 0, requester.stderr.read() if requester.stderr else code
    finally:
        procs.reap(requester)
    data = json.loads(out.read_text())
    history = History(log_dir)
    history.calls = [Call(**c) for c in data["calls"]]
    return PartitionRun(history, cut_at, healed_at, data["samples"])
