"""meshrpc monitor: statistics events folded into rates, the JSON view, and the web
page rendered by headless Chromium."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshrpc._monitor import MeshView
from tests import procs

pytestmark = [pytest.mark.timeout(90)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

CALLER = """
import sys, anyio
from meshrpc import Requester
async def main():
    async with Requester(name="caller", namespace=sys.argv[1]) as r:
        for i in range(int(sys.argv[2])):
            await r.send("add", {"a": i, "b": 1}, timeout=10)
            await anyio.sleep(0.02)
anyio.run(main)
"""


def snapshot(n: int, sent: int, peers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "host": "h",
        "pid": 1,
        "components": [
            {"id": "q", "name": "client", "kind": "requester", "stats": {"sent": sent,
             "timeouts": n, "in_flight": 2}, "latency_ms": {"p50": 1.0, "p99": 4.5},
             "peers": peers or []},
        ],
    }  # fmt: skip


def test_view_folds_events_into_rates_links_and_expiry() -> None:
    view = MeshView(expire_after=5)
    view.update(snapshot(0, 100), now=10.0)
    view.update(snapshot(3, 300, [{"id": "r", "sent": 300, "in_flight": 2}]), now=12.0)
    (row,) = view.rows()
    assert (row["calls_per_s"], row["errors_per_s"]) == (100.0, 1.5)
    assert (row["pending"], row["p99_ms"]) == (2, 4.5)
    assert view.links() == [{"from": "q", "to": "r", "sent": 300, "in_flight": 2}]
    view.update({"components": "garbage"}, now=13.0)
    view.update({"components": [{"id": "x"}, 7]}, now=13.0)
    assert len(view.rows()) == 1
    view.expire(now=18.0)
    assert view.rows() == []


@pytest.fixture
def busy_mesh(namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # On by default for users; the test configuration turns it off for other tests.
    monkeypatch.setenv("MESHRPC_STATS_INTERVAL", "1")
    with procs.responders(namespace, ["mon"]):
        caller = subprocess.Popen(
            # At most a minute of calls; ended when the test is done.
            [sys.executable, "-c", CALLER, namespace, "3000"],
            env=procs.env(),
        )
        try:
            yield
        finally:
            caller.kill()
            caller.wait()


def monitor(namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "meshrpc", "--namespace", namespace, "monitor", *args],
        env=procs.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


def test_monitor_json_shows_components_traffic_and_links(busy_mesh: None, namespace: str) -> None:
    proc = monitor(namespace, "--json", "--duration", "8")
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    last = json.loads(out.splitlines()[-1])
    kinds = {row["kind"]: row for row in last["components"]}
    assert set(kinds) >= {"requester", "responder"}, last
    assert kinds["responder"]["calls_per_s"] > 0
    assert kinds["requester"]["p99_ms"] is not None
    (link,) = [x for x in last["links"] if x["to"] == kinds["responder"]["id"]]
    assert link["from"] == kinds["requester"]["id"]
    assert link["sent"] > 0


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_web_monitor_page_renders_the_live_mesh_in_chromium(
    busy_mesh: None, namespace: str, tmp_path: Path
) -> None:
    proc = monitor(namespace, "--json", "--duration", "30", "--web", "0")
    try:
        assert proc.stderr is not None
        ready, _, _ = select.select([proc.stderr], [], [], 20)
        assert ready
        url = json.loads(proc.stderr.readline())["web"]
        assert url.startswith("http://127.0.0.1:")
        assert proc.stdout is not None
        # Wait until the monitor itself sees both kinds with a link between them.
        for _ in range(30):
            view = json.loads(proc.stdout.readline())  # one a second
            if view["links"] and {c["kind"] for c in view["components"]} >= {
                "requester",
                "responder",
            }:
                break
        else:
            raise AssertionError(f"the monitor never saw the requester's link: {view}")
        screenshot = tmp_path / "monitor.png"
        browser = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000", "--window-size=1200,900",
        ]  # fmt: skip
        dom = subprocess.run(
            [*browser, "--dump-dom", url], capture_output=True, text=True, timeout=60, check=False
        ).stdout
        assert 'class="node responder"' in dom
        assert 'class="node requester"' in dom
        assert 'class="edge"' in dom  # the requester -> responder link
        assert "calc (responder)" in dom
        assert "caller (requester)" in dom
        assert "components, updated" in dom
        subprocess.run([*browser, f"--screenshot={screenshot}", url],
                       capture_output=True, timeout=60, check=False)  # fmt: skip
        assert screenshot.exists()
        assert screenshot.stat().st_size > 10_000
    finally:
        proc.kill()
        finish(proc)


@pytest.mark.anyio
async def test_components_publish_statistics_events_in_process(namespace: str) -> None:
    import anyio

    from meshrpc import Requester, Responder, Subscriber
    from meshrpc._components.stats import TOPIC

    responder = Responder(name="stat-r", namespace=namespace, stats_interval=0.2)
    responder.on("echo", lambda payload: payload)
    watcher = Subscriber(name="watcher", namespace=namespace, stats_interval=0)
    async with (
        responder,
        Requester(name="stat-q", namespace=namespace, stats_interval=0.2) as client,
        watcher,
        watcher.events(TOPIC) as stream,
    ):
        await client.send("echo", 1, timeout=10)
        with anyio.fail_after(20):
            async for _topic, event in stream:
                by_name = {c["name"]: c for c in event["components"]}
                if {"stat-r", "stat-q"} <= set(by_name):
                    break
        assert by_name["stat-r"]["stats"]["ok"] >= 1
        assert by_name["stat-r"]["endpoint"].startswith("tcp://127.0.0.1:")
        (peer,) = by_name["stat-q"]["peers"]
        assert peer["name"] == "stat-r"
        assert peer["sent"] >= 1
        assert by_name["stat-q"]["latency_ms"]["p99"] > 0


def test_terminal_monitor_renders_a_table(
    busy_mesh: None, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich sizes the table to the terminal
    proc = monitor(namespace, "--duration", "6")
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "live mesh" in out, (out[-500:], err[-2000:])
    assert "calc" in out
    assert "responder" in out
    assert "requester" in out
    assert "Traceback" not in err
