"""Shared test configuration.

Network rule: every test stays on loopback. MESHRPC_INTERFACES is forced to 127.0.0.1
before meshrpc is imported, so no component can announce or listen on a real interface.
"""

from __future__ import annotations

import os

os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"
# Statistics events cost every component a shared publisher; only the monitor tests,
# which are about them, turn them back on (tests/test_monitor.py).
os.environ["MESHRPC_STATS_INTERVAL"] = "0"
os.environ.pop("MESHRPC_NAMESPACE", None)
os.environ.pop("MESHRPC_KEY", None)
os.environ.pop("MESHRPC_ENVIRONMENT", None)

import gc
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import zmq
from hypothesis import settings

# `make fuzz` falls back to this where atheris does not install: the property tests
# of the decoders, run far longer than in the normal suite.
settings.register_profile("fuzz", max_examples=200_000, deadline=None)
if os.environ.get("MESHRPC_FUZZ"):
    settings.load_profile("fuzz")

# Threads that outlive a test legitimately: anyio's idle worker threads retire after
# 10 s of idleness (trio caches its own), and the blocking portal's loop threads end
# right after close.
_ALLOWED_THREAD_PREFIXES = (
    "AnyIO worker thread",
    "Trio thread",
    "asyncio_",
    "ThreadPoolExecutor",
    "meshrpc-stats",  # one per process, for its life (meshrpc/_components/stats.py)
)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def namespace() -> str:
    """A namespace no other test (or process on this machine) uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a ZeroMQ socket open or a meshrpc/zeroconf thread running."""
    before = {t.ident for t in threading.enumerate()}
    yield
    gc.collect()
    ctx = zmq.Context.instance()
    open_sockets = [s for s in list(ctx._sockets) if not s.closed]
    deadline = time.monotonic() + 2.0
    leaked: list[str] = []
    while True:
        leaked = [
            t.name
            for t in threading.enumerate()
            if t.ident not in before
            and t.is_alive()
            and not t.name.startswith(_ALLOWED_THREAD_PREFIXES)
        ]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)  # threads finish asynchronously after their owner closed them
    for sock in open_sockets:
        sock.close(linger=0)
    assert not open_sockets, f"test left {len(open_sockets)} ZeroMQ socket(s) open"
    assert not leaked, f"test left threads running: {leaked}"
