"""Every example runs, as a user would run it (separate processes, loopback only)."""

from __future__ import annotations

import json
import re

import pytest

from tests import procs

pytestmark = pytest.mark.timeout(90)


def test_demo_spreads_calls_and_shuts_down_cleanly() -> None:
    result = procs.run_example("demo.py", timeout=80)
    assert result.returncode == 0, result.stderr
    spread = json.loads(re.search(r"spread: (\{.*\})", result.stdout).group(1))  # type: ignore[union-attr]
    assert set(spread) == {"alpha", "beta", "gamma"}
    assert sum(spread.values()) == 300
    assert min(spread.values()) >= 60, spread
    assert "responders stopped (exit codes [0, 0, 0])" in result.stdout
    assert "RemoteError(ZeroDivisionError" in result.stdout
    assert "DeadlineExceeded" in result.stdout


@pytest.mark.parametrize(
    ("example", "expected"),
    [
        ("sync_requester.py", "2 + 3 = 5"),
        ("trio_requester.py", "9 + 9 = 18"),
        ("requester.py", "spread:"),
    ],
)
def test_client_examples_against_a_responder_process(
    namespace: str, example: str, expected: str
) -> None:
    with procs.responders(namespace, ["solo"]):
        result = procs.run_example(example, "--namespace", namespace, timeout=40)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout


def test_pubsub_example() -> None:
    result = procs.run_example("pubsub.py", timeout=40)
    assert result.returncode == 0, result.stderr
    assert "watcher got: ['price.eur=1.08']" in result.stdout
    assert "group shared the jobs: {'worker-0': 5, 'worker-1': 5}" in result.stdout


def test_gateway_example_starts_with_one_command_and_serves(namespace: str) -> None:
    # The full set of routes and error statuses is in tests/test_gateway.py.
    from tests.test_gateway import start, stop, wait_until_up

    proc, url = start(namespace)
    try:
        assert wait_until_up(url, "/products").json()[0]["id"] == "p1"
    finally:
        stop(proc)


def test_web_example_starts_with_one_command_and_serves(namespace: str) -> None:
    # The page in Chromium, the protocol and the bridge's limits: tests/test_web.py.
    import httpx
    from websockets.sync.client import connect

    from tests.test_web import start_example, stop_example, wait_until_up

    proc, url = start_example(namespace)
    try:
        wait_until_up(url)
        # Loopback only: no proxy from the environment.
        assert f'src="/mesh/{namespace}/meshrpc.js"' in httpx.get(url + "/", trust_env=False).text
        js = httpx.get(f"{url}/mesh/{namespace}/meshrpc.js", trust_env=False)
        assert "function connect(" in js.text
        with connect(url.replace("http://", "ws://") + f"/mesh/{namespace}/", proxy=None) as ws:
            assert json.loads(ws.recv(timeout=10))["op"] == "hello"
            for attempt in range(1, 100):  # the services process may still be starting
                ws.send(json.dumps({"id": attempt, "type": "shop.info", "timeout": 2}))
                info = json.loads(ws.recv(timeout=10))
                if info.get("error", {}).get("kind") != "NoResponder":
                    break
            assert info["result"]["service"] == "quotes", info
            ws.send(json.dumps({"id": "x", "type": "admin.reset"}))
            assert json.loads(ws.recv(timeout=10))["error"]["kind"] == "Forbidden"
    finally:
        stop_example(proc)
