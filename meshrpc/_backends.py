"""Default discovery and transport for a component's settings (imports are lazy).

Importing meshrpc does not import zmq or zeroconf until a component starts, which
keeps ``import meshrpc`` cheap and lets other backends be used without them.
"""

from __future__ import annotations

from meshrpc.config import Settings
from meshrpc.discovery.base import Discovery
from meshrpc.errors import ConfigError
from meshrpc.security import MeshKeys
from meshrpc.transport.base import Transport

__all__ = ["default_discovery", "default_transport"]


def default_discovery(settings: Settings, keys: MeshKeys | None = None) -> Discovery:
    """The discovery backend ``settings.discovery`` names.

    Raises:
        ConfigError: the backend's library is not installed, or ``static`` has no peers.
    """
    kind = settings.discovery
    if kind.startswith(("redis://", "rediss://")):
        try:
            from meshrpc.discovery.redis import RedisDiscovery
        except ImportError:
            raise ConfigError(
                "MESHRPC_DISCOVERY is a Redis URL but the redis package is missing: "
                "pip install 'meshrpc[redis]'"
            ) from None
        return RedisDiscovery(kind)
    if kind == "static":
        from meshrpc.discovery.static import StaticDiscovery

        return StaticDiscovery(
            settings.peers,
            lambda: default_transport(settings, keys),
            key=keys.key_id if keys else "",
        )
    from meshrpc.discovery.mdns import MdnsDiscovery

    return MdnsDiscovery(interfaces=settings.interfaces)


def default_transport(settings: Settings, keys: MeshKeys | None = None) -> Transport:
    """The ZeroMQ transport for ``settings``; with mesh ``keys``, CurveZMQ everywhere."""
    from meshrpc.transport.zmq import ZmqTransport

    return ZmqTransport(
        max_message=settings.max_message,
        handshake_timeout=settings.handshake_timeout,
        curve_secret=keys.curve_secret if keys else None,
        key_id=keys.key_id if keys else "",
    )
