"""Faults across hosts: processes in network namespaces the test creates, joined by a
bridge in its own switch namespace (no route out). Needs root; skipped otherwise.
"""

from __future__ import annotations

import json
import select
import time
from pathlib import Path

import pytest

from tests import netns
from tests.chaos import ROOT, Call, Child, History, spawn

pytestmark = [netns.skip_unless_available(), pytest.mark.timeout(120)]

REQUESTER = ROOT / "tests" / "chaos_requester.py"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_n1_partitioned_host_is_detected_failed_over_and_rejoins(
    tmp_path: Path, namespace: str, backend: str
) -> None:
    out = tmp_path / "history.json"
    with netns.network(3) as net:
        h1, h2, h3 = net.hosts
        responders = [Child("r1", namespace, tmp_path, host=h1),
                      Child("r2", namespace, tmp_path, host=h2)]  # fmt: skip
        requester = None
        try:
            for child in responders:
                child.wait_ready()
            requester = spawn(REQUESTER, "--namespace", namespace, "--out", str(out),
                              "--duration", "9", "--type", "iwork", "--timeout", "4",
                              "--backend", backend, host=h3)  # fmt: skip
            assert requester.stdout is not None
            ready, _, _ = select.select([requester.stdout], [], [], 40)
            assert ready, "the requester host found no responders"
            assert requester.stdout.readline().startswith("READY")
            # Load runs for 9 s: 2 s healthy, 3 s with h1 cut off, 4 s healed.
            time.sleep(2)
            cut_at = time.time()
            net.cut(h1)
            time.sleep(3)
            healed_at = time.time()
            net.heal(h1)
            assert requester.wait(60) == 0, requester.stderr.read() if requester.stderr else ""
        finally:
            if requester is not None and requester.poll() is None:
                requester.kill()
                requester.wait()
            for child in responders:
                child.close()
            if requester is not None:
                for stream in (requester.stdout, requester.stderr):
                    if stream is not None:
                        stream.close()
    data = json.loads(out.read_text())
    history = History(tmp_path)
    history.calls = [Call(**c) for c in data["calls"]]
    summary = history.check(allowed={"OK"})  # idempotent calls fail over: nothing fails
    samples = data["samples"]
    detected = next(t for t, selectable, _ in samples if t > cut_at and selectable == 1) - cut_at
    rejoined = (
        next(t for t, selectable, _ in samples if t > healed_at and selectable == 2) - healed_at
    )
    assert detected < 3.0, summary
    assert rejoined < 4.0, summary
    assert any(c.by == "r1" for c in history.calls if c.sent > healed_at + rejoined), summary
    assert any(c.by == "r2" for c in history.calls if cut_at < c.sent < healed_at)
