"""Starting and stopping the example services as separate processes, by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for fixed-port tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    return {**os.environ, "MESHRPC_INTERFACES": "127.0.0.1", "PYTHONUNBUFFERED": "1"}


@contextmanager
def responders(
    namespace: str, labels: list[str], backend: str = "asyncio"
) -> Iterator[list[subprocess.Popen[str]]]:
    """Run examples/responder.py once per label; SIGTERM (then SIGKILL) on exit."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(EXAMPLES / "responder.py"),
                "--label",
                label,
                "--namespace",
                namespace,
                "--backend",
                backend,
            ],
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in labels
    ]
    try:
        yield procs
    finally:
        stop(procs)


def stop(procs: list[subprocess.Popen[str]], sig: int = signal.SIGTERM) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    return [reap(proc, grace=15) for proc in procs]


def reap(proc: subprocess.Popen[Any], grace: float = 0.0) -> int:
    """Give ``proc`` ``grace`` seconds to end, then kill it; close its pipes and return
    its exit status."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return proc.returncode


def run_example(name: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
