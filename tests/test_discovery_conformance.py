"""Every discovery backend passes the same conformance suite (meshrpc.testing.discovery)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from meshrpc.discovery.base import Discovery
from meshrpc.discovery.mdns import MdnsDiscovery
from meshrpc.discovery.memory import MemoryDiscovery, MemoryRegistry
from meshrpc.testing.discovery import DiscoveryConformance
from tests.procs import free_port
from tests.redis_server import RedisServer, redis_server

pytestmark = [pytest.mark.timeout(60)]

Factory = Callable[[], AbstractAsyncContextManager[Discovery]]


def factory_of(make: Callable[[], Discovery]) -> Factory:
    @asynccontextmanager
    async def new() -> AsyncIterator[Discovery]:
        discovery = make()
        await discovery.start()
        try:
            yield discovery
        finally:
            await discovery.aclose()

    return new


class TestMemory(DiscoveryConformance):
    @pytest.fixture
    def discovery_factory(self) -> Factory:
        registry = MemoryRegistry()
        return factory_of(lambda: MemoryDiscovery(registry))


class TestMdns(DiscoveryConformance):
    @pytest.fixture
    def discovery_factory(self) -> Factory:
        return factory_of(lambda: MdnsDiscovery(interfaces=["127.0.0.1"]))


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


class TestRedis(DiscoveryConformance):
    @pytest.fixture
    def discovery_factory(self, redis: RedisServer) -> Factory:
        from meshrpc.discovery.redis import RedisDiscovery

        return factory_of(lambda: RedisDiscovery(redis.url))


class TestStatic(DiscoveryConformance):
    """Static discovery needs a live seed: a responder of this process on a fixed port,
    whose backend is static too (it answers the gossip)."""

    @pytest.fixture
    async def discovery_factory(self) -> AsyncIterator[Factory]:
        from meshrpc import Responder
        from meshrpc._backends import default_transport
        from meshrpc.config import load_settings
        from meshrpc.discovery.static import StaticDiscovery

        port = free_port()
        seeds = [f"tcp://127.0.0.1:{port}"]
        settings = load_settings(environ={"MESHRPC_INTERFACES": "127.0.0.1"})

        def make() -> Discovery:
            return StaticDiscovery(
                seeds, lambda: default_transport(settings), interval=0.2, ttl=2.0
            )

        seed = Responder(name="seed", namespace="conf-seed", port=port, discovery=make())
        seed.on("ping", lambda payload: "pong")
        async with seed:
            yield factory_of(make)
