"""The meshrpc command as a subprocess against a live loopback mesh."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests import procs

pytestmark = [pytest.mark.timeout(60)]


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshrpc", *args],
        env=procs.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def mesh(namespace: str) -> Iterator[list[subprocess.Popen[str]]]:
    with procs.responders(namespace, ["cli-a", "cli-b"]) as children:
        yield children


def test_call_prints_the_result_as_json(mesh: Any, namespace: str) -> None:
    done = cli("--namespace", namespace, "call", "add", '{"a": 2, "b": 3}', "--timeout", "20")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["sum"] == 5
    assert reply["by"] in ("cli-a", "cli-b")


def test_call_errors_are_one_line_with_their_kind_and_exit_code(mesh: Any, namespace: str) -> None:
    done = cli("--namespace", namespace, "call", "divide", '{"a": 1, "b": 0}', "--timeout", "20")
    assert done.returncode == 5
    assert done.stderr.startswith("meshrpc: RemoteError:")
    assert "ZeroDivisionError" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

    missing = cli("--namespace", namespace, "call", "no-such-type", "--timeout", "0.5")
    assert missing.returncode == 3
    assert missing.stderr.startswith("meshrpc: NoResponder:")

    late = cli("--namespace", namespace, "call", "slow", '{"seconds": 5}', "--timeout", "1")
    assert late.returncode == 4
    assert late.stderr.startswith("meshrpc: DeadlineExceeded:")

    bad = cli("--namespace", namespace, "call", "add", "{not json")
    assert bad.returncode == 2
    assert "not valid JSON" in bad.stderr


def test_ls_lists_components_as_a_table_and_as_json(mesh: Any, namespace: str) -> None:
    # Make sure both are announced before listing.
    assert cli("--namespace", namespace, "call", "add", '{"a": 0, "b": 0}',
               "--timeout", "20").returncode == 0  # fmt: skip
    listed = cli("--namespace", namespace, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == 2
    assert len({r["endpoint"] for r in rows}) == 2
    assert {r["name"] for r in rows} == {"calc"}
    assert all(r["kind"] == "responder" and "add" in r["types"] for r in rows)
    assert all(r["endpoint"].startswith("tcp://127.0.0.1:") for r in rows)
    table = cli("--namespace", namespace, "ls")
    assert table.returncode == 0
    header, *lines = table.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "KIND", "NAMESPACE"]
    assert [line.split()[:2] for line in lines] == [["calc", "responder"]] * 2
    other = cli("--namespace", namespace + "-other", "ls", "--json", "--wait", "1")
    assert other.stdout == ""


def test_ls_watch_follows_leaves_and_exits_cleanly_on_ctrl_c(
    mesh: list[subprocess.Popen[str]], namespace: str
) -> None:
    watcher: subprocess.Popen[bytes] = subprocess.Popen(
        [sys.executable, "-m", "meshrpc", "--namespace", namespace, "ls", "--json", "--watch"],
        env=procs.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    try:
        assert watcher.stdout is not None
        first = [json.loads(readline(watcher.stdout)) for _ in range(2)]
        assert len({r["pid"] for r in first}) == 2
        procs.stop([mesh[0]])  # a clean stop withdraws the advertisement
        for _ in range(10):
            event = json.loads(readline(watcher.stdout))
            if event.get("event") == "removed":
                break
        assert event["pid"] == mesh[0].pid
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(15) == 0
        assert watcher.stderr is not None
        assert b"Traceback" not in watcher.stderr.read()
    finally:
        procs.reap(watcher)


def readline(stream: Any, timeout: float = 20) -> str:
    """One line from an unbuffered binary pipe (select on a buffered text stream can
    miss lines already read into its buffer)."""
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([stream], [], [], timeout)
        assert ready, f"no output in time (so far {line!r})"
        byte = stream.read(1)
        assert byte, f"the command ended (so far {line!r})"
        line += byte
    return line.decode()


def test_publish_and_listen(namespace: str) -> None:
    listener = subprocess.Popen(
        [sys.executable, "-m", "meshrpc", "--namespace", namespace, "listen", "alerts.*",
         "--count", "2"],
        env=procs.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )  # fmt: skip
    try:
        assert listener.stderr is not None
        assert json.loads(readline(listener.stderr)) == {"listening": "alerts.*"}
        for topic, payload in (("alerts.fire", '{"room": 3}'), ("alerts.flood", "[1, 2]")):
            done = cli("--namespace", namespace, "publish", topic, payload, "--subscribers", "1")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["subscribers"] >= 1
        assert listener.wait(20) == 0
        assert listener.stdout is not None
        events = [json.loads(line) for line in listener.stdout.read().decode().splitlines()]
        assert events == [
            {"topic": "alerts.fire", "payload": {"room": 3}},
            {"topic": "alerts.flood", "payload": [1, 2]},
        ]
    finally:
        procs.reap(listener)


def test_console_script_and_help() -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("ls", "call", "publish", "listen"):
        assert command in done.stdout
    script = os.path.join(os.path.dirname(sys.executable), "meshrpc")
    assert os.path.exists(script)
