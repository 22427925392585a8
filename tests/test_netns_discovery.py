"""Discovery across hosts for every backend: mdns, static and redis, on hosts made of
network namespaces joined by a bridge in their own switch namespace (no route out).

Three responder hosts and a requester host: the requester must find all three, spread
its calls over them, and when one host is cut off (its switch port down) take it out
of rotation and bring it back once the link returns. Needs root; skipped otherwise.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests import netns
from tests.chaos import Child, partition_under_load
from tests.redis_server import RedisServer, require_redis

pytestmark = [netns.skip_unless_available(), pytest.mark.timeout(150)]

PORT = 7000


@pytest.mark.parametrize("backend", ["mdns", "static", "redis"])
def test_discovery_calls_balancing_and_a_cut_host_across_hosts(
    tmp_path: Path, namespace: str, backend: str
) -> None:
    if backend == "redis":
        require_redis()
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
        try:
            for i, host in enumerate((h1, h2, h3), 1):
                responders.append(
                    Child(f"r{i}", namespace, tmp_path, "--port", str(PORT), host=host, env=env)
                )
            for child in responders:
                child.wait_ready()
            run = partition_under_load(net, h1, h4, namespace, tmp_path, responders=3, env=env)
        finally:
            for child in responders:
                child.close()
            if redis is not None:
                redis.stop()
    summary = run.history.check(allowed={"OK"})
    before_cut = Counter(c.by for c in run.history.calls if c.sent < run.cut_at)
    assert set(before_cut) == {"r1", "r2", "r3"}, before_cut
    assert min(before_cut.values()) > 0.15 * sum(before_cut.values()), before_cut
    back = run.back_after(3)
    assert run.out_of_rotation_after(2) < 3.0, summary
    assert back < 4.0, summary
    assert any(c.by == "r1" for c in run.history.calls if c.sent > run.healed_at + back), summary
