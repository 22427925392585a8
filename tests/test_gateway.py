"""The gateway example (examples/gateway) over real HTTP against live responders."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests import procs
from tests.procs import free_port

pytestmark = [pytest.mark.timeout(90)]

RUN = procs.EXAMPLES / "gateway" / "run.py"


def start(namespace: str, **env: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(RUN), "--port", str(port), "--namespace", namespace],
        env={**procs.env(), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        # uvicorn re-raises the signal after a graceful shutdown: -SIGTERM is clean too.
        assert proc.wait(20) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def wait_until_up(url: str, path: str = "/users") -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            response = httpx.get(url + path, timeout=10)
            if response.status_code != 503:
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the gateway never answered"
        time.sleep(0.2)


@pytest.fixture
def gateway(namespace: str) -> Iterator[str]:
    proc, url = start(namespace)
    try:
        yield url
    finally:
        stop(proc)


def test_rest_routes_reach_the_responders(gateway: str) -> None:
    users = wait_until_up(gateway)
    assert users.status_code == 200
    assert {u["name"] for u in users.json()} >= {"Ada", "Alan"}
    assert httpx.get(gateway + "/users/1").json() == {"id": 1, "name": "Ada"}
    created = httpx.post(gateway + "/users", json={"name": "Grace"})
    assert created.status_code == 201
    new_id = created.json()["id"]
    assert httpx.get(f"{gateway}/users/{new_id}").json()["name"] == "Grace"
    assert httpx.get(gateway + "/products/p1").json()["price"] == 9.5
    assert len(httpx.get(gateway + "/products").json()) == 2


def test_mesh_errors_become_http_statuses(gateway: str) -> None:
    wait_until_up(gateway)
    missing = httpx.get(gateway + "/users/999")
    assert missing.status_code == 404
    assert missing.json()["error"]["kind"] == "RemoteError"
    assert httpx.get(gateway + "/products/nope").status_code == 404
    assert httpx.post(gateway + "/users", json={}).status_code == 400
    assert httpx.post(gateway + "/users", content=b"{nope").status_code == 400
    bug = httpx.get(gateway + "/users/0")
    assert bug.status_code == 500
    assert "asking is a bug" in bug.json()["error"]["message"]
    late = httpx.get(gateway + "/slow/10", timeout=20)  # longer than the 5 s deadline
    assert late.status_code == 504
    assert late.json()["error"]["kind"] == "DeadlineExceeded"


def test_no_responder_is_503(namespace: str) -> None:
    # A gateway whose mesh has no services: it must answer, quickly, with 503.
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "warning"],
        env={**procs.env(), "GATEWAY_NAMESPACE": namespace + "-empty", "GATEWAY_TIMEOUT": "0.5"},
        cwd=procs.EXAMPLES / "gateway",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/users", timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert response.status_code == 503
        assert response.json()["error"]["kind"] == "NoResponder"
    finally:
        stop(proc)
