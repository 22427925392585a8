"""Starting, talking to and stopping the benchmark's child processes.

Every child gets :func:`child_env`: loopback-only meshrpc, a namespace of its own, and
this repository first on ``PYTHONPATH``. Children are stopped by their PID: SIGTERM,
then SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from _common import RESULT_PREFIX

__all__ = [
    "ChildError",
    "child_env",
    "run_client",
    "server",
    "servers",
    "terminate",
    "terminate_all",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
TERM_GRACE_S = 5.0
LOG_TAIL_LINES = 40


class ChildError(RuntimeError):
    """A child failed; ``str()`` is one line, ``log_tail`` the end of its stderr."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def child_env(namespace: str) -> dict[str, str]:
    """Environment for every process the benchmark starts."""
    env = dict(os.environ)
    env["MESHRPC_INTERFACES"] = "127.0.0.1"
    env["MESHRPC_NAMESPACE"] = namespace
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def script(name: str) -> list[str]:
    """Command prefix that runs ``bench/<name>`` with this interpreter."""
    return [sys.executable, str(BENCH_DIR / name)]


def terminate(
    proc: subprocess.Popen[Any], grace: float = TERM_GRACE_S, sig: int = signal.SIGTERM
) -> None:
    """Stop ``proc`` by its PID: ``sig`` (SIGTERM), then SIGKILL if it outlives ``grace``
    seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def terminate_all(procs: Sequence[subprocess.Popen[Any]], grace: float = TERM_GRACE_S) -> None:
    """:func:`terminate` for several at once: SIGTERM to all, then one shared grace."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in procs:
        if proc.poll() is None:  # outlived the grace period
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace)


def _tail(log: IO[str]) -> str:
    log.flush()
    log.seek(0)
    return "".join(log.readlines()[-LOG_TAIL_LINES:])


def _pump_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class _Server:
    """A started server child: its process, stderr log and stdout lines."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: IO[str]) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert self.proc.stdout is not None
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(
            target=_pump_lines, args=(self.proc.stdout, self.lines), daemon=True
        ).start()

    def wait_ready(self, deadline: float, ready_timeout: float) -> str:
        """What follows ``READY`` on its first such line.

        Raises:
            ChildError: it exited, or no ``READY`` before ``deadline`` (monotonic).
        """
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ChildError(
                    f"server not ready after {ready_timeout:.0f} s", _tail(self.log)
                ) from None
            if line is None:
                tail = _tail(self.log)
                last = tail.strip().splitlines()[-1:] or ["(no stderr)"]
                raise ChildError(
                    f"server exited with status {self.proc.wait()} before it was ready: {last[0]}",
                    tail,
                )
            if line.startswith("READY"):
                return line.removeprefix("READY").strip()

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ChildError(
                f"server exited early with status {self.proc.returncode}", _tail(self.log)
            )


@contextlib.contextmanager
def servers(
    argvs: Sequence[Sequence[str]], env: Mapping[str, str], ready_timeout: float
) -> Iterator[list[str]]:
    """Start several server children at once, yield what each printed after ``READY``
    (in order), and stop them all by PID on the way out.

    Raises:
        ChildError: one exited or did not report ready within ``ready_timeout`` seconds.
    """
    with contextlib.ExitStack() as stack:
        started: list[_Server] = []
        try:
            for argv in argvs:
                log = stack.enter_context(tempfile.TemporaryFile("w+"))
                started.append(_Server(argv, env, log))
            deadline = time.monotonic() + ready_timeout
            yield [s.wait_ready(deadline, ready_timeout) for s in started]
            for s in started:
                s.check_alive()
        finally:
            terminate_all([s.proc for s in started])


@contextlib.contextmanager
def server(argv: Sequence[str], env: Mapping[str, str], ready_timeout: float) -> Iterator[str]:
    """Start a server child, yield what follows ``READY`` on its first such line, stop it.

    Raises:
        ChildError: it exited or did not report ready within ``ready_timeout`` seconds.
    """
    with servers([argv], env, ready_timeout) as ready:
        yield ready[0]


def run_client(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Run a client child to completion and return the JSON of its ``RESULT`` line.

    Raises:
        ChildError: it timed out, printed no result, or reported a failure.
    """
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            terminate(proc)
            raise ChildError(f"client did not finish within {timeout:.0f} s", _tail(log)) from None
        finally:
            terminate(proc)
        for line in reversed(out.splitlines()):
            if line.startswith(RESULT_PREFIX):
                data: dict[str, Any] = json.loads(line.removeprefix(RESULT_PREFIX))
                if not data.get("ok"):
                    raise ChildError(str(data.get("error", "unknown failure")), _tail(log))
                return data
        raise ChildError(f"client exited with status {proc.returncode} and no result", _tail(log))
