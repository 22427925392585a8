"""A real redis-server on a random loopback port, started and stopped by PID."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.procs import free_port


class RedisServer:
    def __init__(self, port: int | None = None, bind: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self.bind = bind
        self.url = f"redis://{bind}:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="meshrpc-redis-")

    def start(self, prefix: list[str] | None = None) -> None:
        command = [
            "redis-server", "--port", str(self.port), "--bind", self.bind,
            "--save", "", "--appendonly", "no", "--dir", self._dir,
            "--protected-mode", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            [*(prefix or []), *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not self._answers(prefix):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def _answers(self, prefix: list[str] | None) -> bool:
        if prefix:  # inside a test host's namespace: ask from there
            ping = [*prefix, "redis-cli", "-h", self.bind, "-p", str(self.port), "ping"]
            done = subprocess.run(ping, capture_output=True, text=True, timeout=5, check=False)
            return done.stdout.strip() == "PONG"
        try:
            with socket.create_connection((self.bind, self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def require_redis() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (`apt-get install redis-server`; CI does)")


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    require_redis()
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server._dir, ignore_errors=True)
