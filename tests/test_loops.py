"""The event loop meshrpc starts where it owns one: uvloop when installed (MESHRPC_UVLOOP)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

import meshrpc
from meshrpc import _loops
from meshrpc.sync import Publisher, Requester, Responder, Subscriber

pytestmark = pytest.mark.timeout(30)

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (the test extra has it)")


def test_run_options_follow_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    uv = {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    assert _loops.run_options("asyncio", "auto") == uv
    assert _loops.run_options("asyncio", "on") == uv
    assert _loops.run_options("asyncio", "off") == {"backend": "asyncio"}
    assert _loops.run_options("trio", "on") == {"backend": "trio"}
    monkeypatch.setenv("MESHRPC_UVLOOP", "off")
    assert _loops.run_options("asyncio") == {"backend": "asyncio"}
    monkeypatch.setenv("MESHRPC_UVLOOP", "sometimes")
    with pytest.raises(meshrpc.ConfigError, match="MESHRPC_UVLOOP"):
        _loops.run_options("asyncio")
    with pytest.raises(meshrpc.ConfigError, match="backend"):
        _loops.run_options("curio", "auto")
    monkeypatch.setattr(_loops, "uvloop_available", lambda: False)
    assert _loops.run_options("asyncio", "auto") == {"backend": "asyncio"}
    with pytest.raises(meshrpc.ConfigError, match=r"meshrpc\[fast\]"):
        _loops.run_options("asyncio", "on")


@pytest.mark.parametrize("choice", ["on", "off"])
def test_sync_facade_runs_on_the_chosen_loop(
    choice: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHRPC_UVLOOP", choice)
    responder = Responder(name="loop-r", namespace=namespace)

    @responder.on("loop")
    async def loop_type(payload: Any) -> str:
        return type(asyncio.get_running_loop()).__module__

    @responder.on("slow")
    async def slow(payload: Any) -> None:
        await anyio.sleep(5)

    subscriber = Subscriber(name="loop-s", namespace=namespace)
    with (
        responder,
        Requester(name="loop-c", namespace=namespace) as client,
        Publisher(name="loop-p", namespace=namespace) as pub,
        subscriber,
    ):
        events = subscriber.events("tick")
        assert client.wait_for_responders("loop", timeout=10) == 1
        module = client.send("loop", timeout=5)
        assert module.startswith("uvloop") == (choice == "on")
        # Deadlines ride the loop's timers, which on uvloop count milliseconds.
        with pytest.raises(meshrpc.DeadlineExceeded):
            client.send("slow", timeout=0.2)
        assert pub.wait_for_subscribers(1, timeout=10) == 1
        pub.publish("tick", 1)
        assert next(events) == ("tick", 1)
