"""Discovery across hosts for every backend: mdns, static and redis, on hosts made of
network namespaces joined by a bridge in their own switch namespace (no route out).

Three responder hosts and a requester host: the requester must find all three, spread
its calls over them, and when one host is cut off (its switch port down) take it out
of rotation and bring it back once the link returns. Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import select
import time
from collections import Counter
from pathlib import Path

import pytest

from tests import netns
from tests.chaos import ROOT, Call, Child, History, spawn
from tests.redis_server import RedisServer, require_redis

pytestmark = [netns.skip_unless_available(), pytest.mark.timeout(150)]

REQUESTER = ROOT / "tests" / "chaos_requester.py"
PORT = 7000


@pytest.mark.parametrize("backend", ["mdns", "static", "redis"])
def test_discovery_calls_balancing_and_a_cut_host_across_hosts(
    tmp_path: Path, namespace: str, backend: str
) -> None:
    if backend == "redis":
        require_redis()
    out = tmp_path / "history.json"
    with netns.network(4) as net:
        h1, h2, h3, h4 = net.hosts
        env: dict[str, str] = {}
        redis: RedisServer | None = None
        if backend == "static":
            seeds = ",".join(f"tcp://{h.address}:{PORT}" for h in (h1, h2))
            env = {"MESHRPC_DISCOVERY": "static", "MESHRPC_PEERS": seeds}
        elif backend == "redis":
            redis = RedisServer(bind=h4.address)
            redis.start(prefix=h4.command())
            env = {"MESHRPC_DISCOVERY": redis.url}
        responders: list[Child] = []
        requester = None
        try:
            for i, host in enumerate((h1, h2, h3), 1):
                responders.append(
                    Child(f"r{i}", namespace, tmp_path, "--port", str(PORT), host=host, env=env)
                )
            for child in responders:
                child.wait_ready()
            started = time.monotonic()
            requester = spawn(REQUESTER, "--namespace", namespace, "--out", str(out),
                              "--responders", "3", "--duration", "9", "--type", "iwork",
                              "--timeout", "4", host=h4, env=env)  # fmt: skip
            assert requester.stdout is not None
            ready, _, _ = select.select([requester.stdout], [], [], 40)
            assert ready, "the requester host did not find three responders"
            assert requester.stdout.readline().startswith("READY")
            found = time.monotonic() - started
            time.sleep(2)
            cut_at = time.time()
            net.cut(h1)
            time.sleep(3)
            healed_at = time.time()
            net.heal(h1)
            assert requester.wait(60) == 0, requester.stderr.read() if requester.stderr else ""
        finally:
            if requester is not None:
                if requester.poll() is None:
                    requester.kill()
                requester.wait()
                for stream in (requester.stdout, requester.stderr):
                    if stream is not None:
                        stream.close()
            for child in responders:
                child.close()
            if redis is not None:
                redis.stop()
    data = json.loads(out.read_text())
    history = History(tmp_path)
    history.calls = [Call(**c) for c in data["calls"]]
    summary = history.check(allowed={"OK"})
    before_cut = Counter(c.by for c in history.calls if c.sent < cut_at)
    assert set(before_cut) == {"r1", "r2", "r3"}, before_cut
    assert min(before_cut.values()) > 0.15 * sum(before_cut.values()), before_cut
    samples = data["samples"]
    left = next(t for t, selectable, _ in samples if t > cut_at and selectable == 2) - cut_at
    back = next(t for t, selectable, _ in samples if t > healed_at and selectable == 3) - healed_at
    assert left < 3.0, summary
    assert back < 4.0, summary
    assert any(c.by == "r1" for c in history.calls if c.sent > healed_at + back), summary
    assert found < 30
