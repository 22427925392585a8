"""What every component shares: identity, settings, backends, and the ways to run it."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import anyio
from anyio.abc import TaskStatus

from meshrpc._backends import default_discovery, default_transport
from meshrpc._protocol.advertisement import Advertisement
from meshrpc.config import Settings, load_settings
from meshrpc.discovery.base import Discovery
from meshrpc.errors import ConfigError
from meshrpc.security import FOREIGN, MeshKeys, derive, sign, verify
from meshrpc.transport.base import Transport

__all__ = ["Component"]

logger = logging.getLogger("meshrpc")
T = TypeVar("T")


class Component:
    """Base of Responder and Requester: constructing one does no I/O."""

    kind: str = ""

    def __init__(
        self,
        name: str,
        *,
        namespace: str | None,
        key: str | None,
        environment: str | None,
        discovery: Discovery | None,
        transport: Transport | None,
        **overrides: Any,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.settings: Settings = load_settings(
            {"namespace": namespace, "key": key, "environment": environment, **overrides}
        )
        self.instance_id = uuid.uuid4().hex
        self._discovery_arg = discovery
        self._transport_arg = transport
        self._entered = False
        self._keys: MeshKeys | None = None

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def run(self, *, backend: str = "asyncio") -> None:
        """Serve until SIGINT or SIGTERM, then stop gracefully (blocks; for scripts)."""
        from meshrpc._components.lifecycle import run

        run(self, backend=backend)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Enter, report started, and serve until cancelled."""
        async with self:
            task_status.started()
            await anyio.sleep_forever()

    async def __aenter__(self) -> Self:
        raise NotImplementedError

    async def __aexit__(self, *exc_info: object) -> None:
        raise NotImplementedError

    def _claim(self) -> None:
        if self._entered:
            raise RuntimeError(f"{type(self).__name__} {self.name!r} can only be entered once")
        self._entered = True

    def _backends(self) -> tuple[Discovery, Transport]:
        if self.settings.secret is not None:
            self._keys = derive(self.settings.secret)
        discovery = self._discovery_arg or default_discovery(self.settings, self._keys)
        transport = self._transport_arg or default_transport(self.settings, self._keys)
        return discovery, transport

    async def _report(self, joining: bool) -> None:
        """Start or stop publishing this component's statistics (``stats.py``)."""
        from meshrpc._components import stats

        if self.settings.stats_interval > 0:
            await anyio.to_thread.run_sync(stats.join if joining else stats.leave, self)

    def statistics(self) -> dict[str, Any]:
        raise NotImplementedError

    def _snapshot(self) -> dict[str, Any]:
        """What the statistics event says about this component (read from any thread)."""
        ad = getattr(self, "_advertisement", None)
        return {
            "id": self.instance_id,
            "name": self.name,
            "kind": self.kind,
            "namespace": self.settings.namespace,
            "version": getattr(self, "version", ""),
            "types": list(ad.types) if ad is not None else [],
            "endpoint": ad.endpoint if ad is not None else "",
            "stats": self.statistics(),
        }

    def _sign(self, ad: Advertisement) -> Advertisement:
        return sign(ad, self._keys) if self._keys is not None else ad

    def _admit(self, ad: Advertisement, stats: dict[str, int]) -> bool:
        """Whether ``ad`` is a member of our mesh: same partition labels, and with a
        secret, a valid signature under it (counted in ``stats`` as ``forged_ads``, or
        ``foreign_ads`` when signed under another secret)."""
        if not ad.same_mesh(self.settings.namespace, self.settings.key, self.settings.environment):
            return False
        if self._keys is None:
            return not ad.mac  # a signed advertisement belongs to a private mesh
        why = verify(ad, self._keys)
        if why is None:
            return True
        # Another mesh's members share the LAN legitimately; anything else is forged,
        # tampered with, or from a member without the secret.
        stats["foreign_ads" if why == FOREIGN else "forged_ads"] += 1
        logger.debug("ignoring advertisement of %r at %r: %s", ad.name, ad.endpoint, why)
        return False

    def _bind_host(self) -> str:
        interfaces = self.settings.interfaces
        return interfaces[0] if len(interfaces) == 1 and interfaces != ("all",) else "0.0.0.0"

    async def _bind_first_free(self, bind: Callable[[int], Awaitable[T]]) -> T:
        """``bind(port)`` for each port of ``settings.port`` until one is free.

        Raises:
            ConfigError: none of them could be bound.
        """
        low, high = self.settings.port
        failure: ConfigError | None = None
        for port in range(low, high + 1):
            try:
                return await bind(port)
            except ConfigError as exc:
                failure = exc
        span = str(low) if low == high else f"{low}-{high}"
        raise ConfigError(f"no port of {span} could be bound: {failure}")

    def _advertise_host(self) -> str:
        if self.settings.advertise_host:
            return self.settings.advertise_host
        interfaces = self.settings.interfaces
        if interfaces != ("all",):
            return interfaces[0]
        return _primary_ipv4()

    def _identity(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "kind": self.kind,
            "namespace": self.settings.namespace,
            "key": self.settings.key,
            "environment": self.settings.environment,
            "host": socket.gethostname()[:60],
            "pid": os.getpid(),
        }

    def __repr__(self) -> str:
        ns = f" namespace={self.settings.namespace!r}" if self.settings.namespace else ""
        return f"<{type(self).__name__} {self.name!r}{ns} id={self.instance_id[:8]}>"


def _primary_ipv4() -> str:
    # The first non-loopback IPv4 address of an up interface: routable from the LAN,
    # unlike 0.0.0.0 or 127.0.0.1. ifaddr comes with zeroconf.
    import ifaddr

    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                return ip.ip
    return "127.0.0.1"
