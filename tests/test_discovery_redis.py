"""Redis discovery with a real redis-server on loopback: components, crashes, outages."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis as redis_lib

from meshrpc import Requester, Responder
from meshrpc.discovery.redis import RedisDiscovery
from tests.procs import env as child_env
from tests.redis_server import RedisServer, redis_server
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


def spawn(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE, text=True)


def echo(namespace: str, name: str, url: str) -> Responder:
    responder = Responder(name=name, namespace=namespace, discovery=RedisDiscovery(url))

    @responder.on("who")
    async def who(payload: Any) -> str:
        return name

    return responder


async def test_components_find_each_other_through_redis_by_configuration(
    server: RedisServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHRPC_DISCOVERY", server.url)
    responder = Responder(name="r", namespace=namespace)
    responder.on("who", lambda payload: "r")
    async with responder, Requester(name="c", namespace=namespace) as client:
        assert await client.send("who", timeout=10) == "r"
        keys = redis_lib.Redis.from_url(server.url).keys("meshrpc:ad:*")
        assert len(keys) == 1


async def test_join_and_clean_leave_are_seen_at_once(server: RedisServer, namespace: str) -> None:
    async with Requester(name="c", namespace=namespace, discovery=RedisDiscovery(server.url)) as c:
        started = time.monotonic()
        async with echo(namespace, "a", server.url), echo(namespace, "b", server.url):
            assert await c.wait_for_responders("who", 2, timeout=10) == 2
            joined = time.monotonic() - started
            assert {await c.send("who", timeout=5) for _ in range(20)} == {"a", "b"}
        left = time.monotonic()
        await eventually(lambda: c.statistics()["peers"] == 0, timeout=5)
        assert time.monotonic() - left < 1.0
        assert joined < 3.0


async def test_a_crashed_member_expires(server: RedisServer, namespace: str) -> None:
    code = (
        "import anyio, sys\n"
        "from meshrpc import Responder\n"
        "from meshrpc.discovery.redis import RedisDiscovery\n"
        "r = Responder(name='doomed', namespace=sys.argv[1],\n"
        "              discovery=RedisDiscovery(sys.argv[2]))\n"
        "r.on('who', lambda p: 'doomed')\n"
        "async def main():\n"
        "    async with r:\n"
        "        print('READY', flush=True)\n"
        "        await anyio.sleep_forever()\n"
        "anyio.run(main)\n"
    )
    proc = spawn([sys.executable, "-c", code, namespace, server.url])
    try:
        async with Requester(
            name="c", namespace=namespace, discovery=RedisDiscovery(server.url)
        ) as client:
            await client.wait_for_responders("who", timeout=20)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = time.monotonic()
            # The transport notices at once; discovery forgets it when its key expires.
            await eventually(lambda: client.statistics()["peers"] == 0, timeout=10)
            assert time.monotonic() - killed < 6.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


async def test_calls_go_on_while_redis_is_down_and_members_re_register(
    server: RedisServer, namespace: str
) -> None:
    async with (
        echo(namespace, "a", server.url),
        echo(namespace, "b", server.url),
        Requester(name="c", namespace=namespace, discovery=RedisDiscovery(server.url)) as c,
    ):
        await c.wait_for_responders("who", 2, timeout=10)
        server.stop()
        down = time.monotonic()
        failed = ok = 0
        while time.monotonic() - down < 4.0:  # longer than the TTL
            try:
                await c.send("who", timeout=2)
                ok += 1
            except Exception:
                failed += 1
            await anyio.sleep(0.005)
        assert (ok, failed) >= (100, 0)
        assert failed == 0
        assert c.statistics()["usable_peers"] == 2
        server.start()  # empty: it lost every key
        # Members put themselves back; a requester that starts now finds both.
        async with Requester(
            name="late", namespace=namespace, discovery=RedisDiscovery(server.url)
        ) as late:
            assert await late.wait_for_responders("who", 2, timeout=10) == 2
        assert c.statistics()["usable_peers"] == 2


async def test_garbage_in_redis_is_ignored_and_counted(server: RedisServer, namespace: str) -> None:
    raw = redis_lib.Redis.from_url(server.url)
    raw.set("meshrpc:ad:bogus", "{not json")
    raw.zadd("meshrpc:ads", {"bogus": time.time() + 60})
    raw.publish("meshrpc:changes", "?what")
    discovery = RedisDiscovery(server.url)
    async with (
        echo(namespace, "a", server.url),
        Requester(name="c", namespace=namespace, discovery=discovery) as c,
    ):
        assert await c.send("who", timeout=10) == "a"
        await eventually(lambda: discovery.statistics().get("malformed", 0) >= 1)
