"""Faults across hosts: processes in network namespaces the test creates, joined by a
bridge in its own switch namespace (no route out). Needs root; skipped otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import netns
from tests.chaos import Child, partition_under_load

pytestmark = [netns.skip_unless_available(), pytest.mark.timeout(120)]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_n1_partitioned_host_is_detected_failed_over_and_rejoins(
    tmp_path: Path, namespace: str, backend: str
) -> None:
    with netns.network(3) as net:
        h1, h2, h3 = net.hosts
        responders = [Child("r1", namespace, tmp_path, host=h1),
                      Child("r2", namespace, tmp_path, host=h2)]  # fmt: skip
        try:
            for child in responders:
                child.wait_ready()
            run = partition_under_load(
                net, h1, h3, namespace, tmp_path, responders=2, backend=backend
            )
        finally:
            for child in responders:
                child.close()
    summary = run.history.check(allowed={"OK"})  # idempotent calls fail over: nothing fails
    detected = run.out_of_rotation_after(1)
    rejoined = run.back_after(2)
    assert detected < 3.0, summary
    assert rejoined < 4.0, summary
    calls = run.history.calls
    assert any(c.by == "r1" for c in calls if c.sent > run.healed_at + rejoined), summary
    assert any(c.by == "r2" for c in calls if run.cut_at < c.sent < run.healed_at)
