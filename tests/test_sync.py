"""The blocking facade, for plain sync code."""

from __future__ import annotations

import threading
import time

import pytest

import meshrpc
from meshrpc.sync import Requester, Responder

pytestmark = pytest.mark.timeout(30)


def test_sync_requester_and_responder(namespace: str) -> None:
    responder = Responder(name="sync-r", namespace=namespace)
    threads: set[str] = set()

    @responder.on("add")
    def add(payload: dict[str, int]) -> int:
        threads.add(threading.current_thread().name)
        return payload["a"] + payload["b"]

    @responder.on("fail")
    async def fail(payload: object) -> None:
        raise RuntimeError("broken")

    with responder, Requester(name="sync-c", namespace=namespace) as client:
        assert client.wait_for_responders("add", timeout=10) == 1
        assert client.send("add", {"a": 2, "b": 3}, timeout=5) == 5
        with pytest.raises(meshrpc.RemoteError, match="broken"):
            client.send("fail", timeout=5)
        with pytest.raises(meshrpc.NoResponder):
            client.send("missing", timeout=0.2)
        assert client.statistics()["ok"] == 1
        assert [ad.name for ad in client.responders()] == ["sync-r"]
        assert responder.endpoint is not None
    assert threading.main_thread().name not in threads


def test_sync_requester_needs_with() -> None:
    client = Requester(name="c")
    with pytest.raises(RuntimeError, match="open it first"):
        client.send("x")


def test_sync_publisher_and_subscriber(namespace: str) -> None:
    from meshrpc.sync import Publisher, Subscriber

    subscriber = Subscriber(name="sync-sub", namespace=namespace)
    seen: list[int] = []
    subscriber.on("count.*", seen.append)
    with Publisher(name="sync-pub", namespace=namespace) as pub, subscriber:
        events = subscriber.events("count.#")  # subscribed from here on
        assert subscriber.wait_for_publishers(1, timeout=10) == 1
        assert pub.wait_for_subscribers(1, timeout=10) == 1
        for i in range(3):
            pub.publish("count.up", i)
        received = [next(events) for _ in range(3)]
        events.close()  # type: ignore[attr-defined]
        for _ in range(500):  # bounded: the handlers run in order on the background loop
            if subscriber.statistics()["handled"] == 3:
                break
            time.sleep(0.01)
    assert received == [("count.up", 0), ("count.up", 1), ("count.up", 2)]
    assert seen == [0, 1, 2]
