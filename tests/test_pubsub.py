"""Pub/sub on real zeroconf (127.0.0.1) and real ZeroMQ, in one process and across processes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import anyio
import msgpack
import pytest
import zmq

from meshrpc import ConfigError, Publisher, Subscriber
from meshrpc._protocol import codec
from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery import MemoryDiscovery, MemoryRegistry
from tests import procs
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def recorder(
    namespace: str, pattern: str, **kwargs: Any
) -> tuple[Subscriber, list[tuple[str, Any]]]:
    import meshrpc

    seen: list[tuple[str, Any]] = []
    sub = Subscriber(name="rec", namespace=namespace, **kwargs)

    @sub.on(pattern)
    async def record(payload: Any) -> None:
        seen.append((meshrpc.current_call().type, payload))

    return sub, seen


async def test_fan_out_with_wildcards(namespace: str) -> None:
    star, star_seen = recorder(namespace, "price.*")
    hash_, hash_seen = recorder(namespace, "price.#")
    exact, exact_seen = recorder(namespace, "price.eur")
    everything, all_seen = recorder(namespace, "#")
    async with AsyncExitStack() as stack:
        pub = await stack.enter_async_context(Publisher(name="ticker", namespace=namespace))
        for sub in (star, hash_, exact, everything):
            await stack.enter_async_context(sub)
            await sub.wait_for_publishers(1, timeout=5)
        assert await pub.wait_for_subscribers(4, timeout=5) == 4
        for topic in ("price", "price.eur", "price.eurusd", "price.eur.usd", "volume.eur"):
            await pub.publish(topic, {"topic": topic})
        await eventually(lambda: len(all_seen) == 5)
        await eventually(lambda: len(hash_seen) == 4)
    assert [t for t, _ in star_seen] == ["price.eur", "price.eurusd"]
    assert [t for t, _ in hash_seen] == ["price", "price.eur", "price.eurusd", "price.eur.usd"]
    assert [t for t, _ in exact_seen] == ["price.eur"]
    assert all_seen[1] == ("price.eur", {"topic": "price.eur"})
    assert star.statistics()["missed"] == 0


async def test_partitions_are_isolated(namespace: str) -> None:
    subs = {
        "same": recorder(namespace, "#"),
        "other-namespace": recorder(f"{namespace}-x", "#"),
        "other-key": recorder(namespace, "#", key="k2"),
        "other-environment": recorder(namespace, "#", environment="staging"),
    }
    async with AsyncExitStack() as stack:
        pub = await stack.enter_async_context(Publisher(name="p", namespace=namespace))
        for sub, _ in subs.values():
            await stack.enter_async_context(sub)
        await subs["same"][0].wait_for_publishers(1, timeout=5)
        for _ in range(10):
            await pub.publish("x.y", 1)
        await eventually(lambda: len(subs["same"][1]) == 10)
        for name in ("other-namespace", "other-key", "other-environment"):
            assert subs[name][1] == []
            assert subs[name][0].statistics()["publishers"] == 0


async def test_balanced_group_delivers_each_event_once(namespace: str) -> None:
    members = [recorder(namespace, "job.#", group="workers") for _ in range(3)]
    audit, audit_seen = recorder(namespace, "job.#")  # ungrouped: sees everything
    leaver, leaver_seen = members[0]
    async with AsyncExitStack() as stack:
        pub = await stack.enter_async_context(Publisher(name="p", namespace=namespace))
        for sub, _ in [*members[1:], (audit, audit_seen)]:
            await stack.enter_async_context(sub)
            await sub.wait_for_publishers(1, timeout=5)
        async with leaver:  # innermost, so it can leave first
            await leaver.wait_for_publishers(1, timeout=5)
            await pub.wait_for_subscribers(4, timeout=5)
            await eventually(lambda: pub.statistics()["groups"] == {"workers": 3})
            for i in range(300):
                await pub.publish("job.created", i)
            await eventually(lambda: sum(len(seen) for _, seen in members) == 300)
            await eventually(lambda: len(audit_seen) == 300)
        got = Counter(p for _, seen in members for _, p in seen)
        assert set(got) == set(range(300))
        assert set(got.values()) == {1}  # each event exactly once across the group
        assert all(len(seen) == 100 for _, seen in members)  # round-robin
        # The member that left gets nothing more; the others take its share.
        await eventually(lambda: pub.statistics()["groups"] == {"workers": 2})
        for i in range(300, 400):
            await pub.publish("job.created", i)
        await eventually(lambda: sum(len(seen) for _, seen in members[1:]) == 300)
        assert len(leaver_seen) == 100


async def test_slow_subscriber_drops_are_counted_and_publisher_never_blocks(
    namespace: str,
) -> None:
    sub = Subscriber(name="slow", namespace=namespace, max_buffered=50)
    handled = 0

    @sub.on("tick")
    async def slow(payload: object) -> None:
        nonlocal handled
        await anyio.sleep(0.001)
        handled += 1

    async with Publisher(name="fast", namespace=namespace) as pub, sub:
        await sub.wait_for_publishers(1, timeout=5)
        for i in range(3000):
            pub.publish_nowait("tick", i)  # never blocks, however slow the subscriber

        def accounted() -> int:
            stats = sub.statistics()
            return int(stats["handled"] + stats["dropped"] + stats["missed"])

        # Every event ends up handled, dropped here (buffer full) or missed upstream.
        await eventually(lambda: accounted() == 3000, timeout=15)
        stats = sub.statistics()
    assert stats["dropped"] > 0, stats
    assert stats["buffered"] == 0


async def test_sequence_gaps_are_counted_per_publisher() -> None:
    # A raw XPUB stands in for a publisher that lost events, so the gaps are exact.
    registry = MemoryRegistry()
    xpub: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.XPUB)
    xpub.setsockopt(zmq.LINGER, 0)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    ad = Advertisement(
        instance_id="raw-pub",
        name="raw",
        kind="publisher",
        endpoint=f"tcp://127.0.0.1:{port}",
        namespace="ns",
    )
    sub = Subscriber(name="s", namespace="ns", discovery=MemoryDiscovery(registry))
    sub.on("t.#", lambda payload: None)
    announcer = MemoryDiscovery(registry)
    try:
        await announcer.start()
        await announcer.register(ad)
        async with sub:
            # Wait for the welcome subscription: the topic subscription came before it.
            xpub.setsockopt(zmq.RCVTIMEO, 5000)
            while not (await anyio.to_thread.run_sync(xpub.recv)).startswith(b"\x01w:"):
                pass
            for seq in (1, 2, 5, 6, 10):
                xpub.send_multipart([b"t:t.a", codec.encode_event(seq, "t.a", seq)])
            xpub.send_multipart([b"t:t.b", codec.encode_event(7, "t.b", 7)])  # new stream
            xpub.send_multipart([b"t:t.a", codec.encode_event(1, "t.a", 1)])  # restart
            xpub.send_multipart([b"t:t.a", b"\xc1garbage"])
            xpub.send_multipart([b"t:t.a", msgpack.packb([1, 77])])
            await eventually(lambda: sub.statistics()["received"] == 7)
            await eventually(lambda: sub.statistics()["malformed"] == 2)
            stats = sub.statistics()
    finally:
        await announcer.aclose()
        xpub.close(linger=0)
    assert stats["missed"] == 2 + 3  # 3,4 and 7,8,9
    assert stats["resets"] == 1


async def test_late_joiner_and_publisher_restart(namespace: str) -> None:
    sub, seen = recorder(namespace, "news.#")
    async with sub:
        async with Publisher(name="news", namespace=namespace) as first:
            await sub.wait_for_publishers(1, timeout=5)
            await first.publish("news.flash", "before-restart")
            await eventually(lambda: len(seen) == 1)
        await eventually(lambda: sub.statistics()["publishers"] == 0)
        async with Publisher(name="news", namespace=namespace) as second:
            await sub.wait_for_publishers(1, timeout=5)
            await second.publish("news.flash", "from-the-restart")
            await eventually(lambda: len(seen) == 2)
    assert seen == [("news.flash", "before-restart"), ("news.flash", "from-the-restart")]
    late, late_seen = recorder(namespace, "news.#")
    async with Publisher(name="news", namespace=namespace) as pub:
        for i in range(5):
            await pub.publish("news.flash", i)  # nobody listens yet: gone, not a gap
        async with late:
            await late.wait_for_publishers(1, timeout=5)
            await pub.publish("news.flash", "after-join")
            await eventually(lambda: len(late_seen) == 1)
            assert late.statistics()["missed"] == 0
    assert late_seen == [("news.flash", "after-join")]


async def test_handler_errors_are_logged_and_counted(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    sub = Subscriber(name="fragile", namespace=namespace)
    ok: list[int] = []

    @sub.on("n")
    async def fragile(payload: int) -> None:
        if payload % 2:
            raise ValueError(f"odd {payload}")
        ok.append(payload)

    @sub.on("n")
    def sync_handler(payload: int) -> None:
        ok.append(-payload)  # plain def: runs in a worker thread

    with caplog.at_level(logging.ERROR, logger="meshrpc.subscriber"):
        async with Publisher(name="p", namespace=namespace) as pub, sub:
            await sub.wait_for_publishers(1, timeout=5)
            for i in range(4):
                await pub.publish("n", i)
            await eventually(
                lambda: sub.statistics()["handled"] + sub.statistics()["handler_errors"] == 8
            )
    assert sub.statistics()["handler_errors"] == 2
    assert sorted(ok) == [-3, -2, -1, 0, 0, 2]
    assert "odd 1" in caplog.text
    assert "Traceback" in caplog.text


async def test_events_iterator_and_declared_topics(namespace: str) -> None:
    sub = Subscriber(name="reader", namespace=namespace)
    async with (
        Publisher(name="prices", namespace=namespace, topics=["price.#"]) as prices,
        Publisher(name="logs", namespace=namespace, topics=["log.*"]) as logs,
        sub,
    ):
        async with sub.events("price.*") as stream:
            await sub.wait_for_publishers(1, timeout=5)
            await prices.publish("price.eur", 1.5)
            await logs.publish("log.info", "not for us")
            async for topic, payload in stream:
                assert (topic, payload) == ("price.eur", 1.5)
                break
        # Only the publisher whose declared topics can match was connected.
        assert sub.statistics()["publishers"] == 1


async def test_misuse_is_reported(namespace: str) -> None:
    pub = Publisher(name="p", namespace=namespace)
    with pytest.raises(RuntimeError, match="enter the publisher first"):
        pub.publish_nowait("a", 1)
    with pytest.raises(ConfigError):
        Publisher(name="p", topics="price.#")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        Subscriber(name="s", group="a:b")
    sub = Subscriber(name="s")
    with pytest.raises(ConfigError):
        sub.on("pri*", lambda payload: None)
    async with pub:
        with pytest.raises(ConfigError):
            pub.publish_nowait("a.*", 1)
        from meshrpc import ProtocolError

        with pytest.raises(ProtocolError):
            pub.publish_nowait("a", object())


def test_fan_out_to_subscriber_processes(namespace: str) -> None:
    import meshrpc.sync

    children = [
        subprocess.Popen(
            [sys.executable, "tests/pubsub_child.py", namespace, "metric.*", "200"],
            env=procs.env(),
            stdout=subprocess.PIPE,
            text=True,
            cwd=procs.ROOT,
        )
        for _ in range(3)
    ]
    grouped = [
        subprocess.Popen(
            [
                sys.executable,
                "tests/pubsub_child.py",
                namespace,
                "metric.*",
                "100",
                "--group",
                "g",
                "--backend",
                "trio",
            ],
            env=procs.env(),
            stdout=subprocess.PIPE,
            text=True,
            cwd=procs.ROOT,
        )
        for _ in range(2)
    ]
    try:
        with meshrpc.sync.Publisher(name="metrics", namespace=namespace) as pub:
            for child in children + grouped:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "READY"
            pub.wait_for_subscribers(5, timeout=20)
            for i in range(200):
                pub.publish("metric.cpu", i)
            results = []
            for child in children + grouped:
                assert child.stdout is not None
                results.append(json.loads(child.stdout.readline()))
    finally:
        procs.stop(children + grouped)
    for result in results[:3]:
        assert result["topics"] == {"metric.cpu": 200}
        assert result["stats"]["missed"] == 0
    assert sorted(r["topics"]["metric.cpu"] for r in results[3:]) == [100, 100]


async def test_closing_the_subscriber_ends_its_streams(namespace: str) -> None:
    ended = anyio.Event()

    async def read(stream: Any) -> None:
        async for _ in stream:
            pass
        ended.set()

    async with anyio.create_task_group() as tg:
        async with Subscriber(name="s", namespace=namespace) as sub:
            tg.start_soon(read, sub.events("x.#"))
        with anyio.fail_after(5):
            await ended.wait()  # the stream ended with its subscriber


def test_events_with_oversized_topics_are_rejected() -> None:
    from meshrpc import ProtocolError

    frame = codec.encode_event(1, "a" * 201, None)
    with pytest.raises(ProtocolError):
        codec.decode_event(frame)
    with pytest.raises(ProtocolError):
        codec.decode(frame)


async def test_leaving_right_after_a_new_pattern_is_clean(namespace: str) -> None:
    """A pattern added just before leaving starts a connect that runs during shutdown."""
    async with Publisher(name="p", namespace=namespace, topics=["x.#", "y.#"]):
        for _ in range(5):
            sub = Subscriber(name="s", namespace=namespace)
            async with sub:
                sub.events("x.*")
                await sub.wait_for_publishers(1, timeout=10)
                sub.events("y.*")
            assert sub.statistics()["publishers"] == 0
