"""Discovery backends: who exists on the mesh.

``MdnsDiscovery`` (the default) is imported lazily so that importing this package
does not import zeroconf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshrpc.discovery.base import Discovery, DiscoveryEvent
from meshrpc.discovery.memory import MemoryDiscovery, MemoryRegistry

if TYPE_CHECKING:
    from meshrpc.discovery.mdns import MdnsDiscovery

__all__ = [
    "Discovery",
    "DiscoveryEvent",
    "MdnsDiscovery",
    "MemoryDiscovery",
    "MemoryRegistry",
]


def __getattr__(name: str) -> Any:
    if name == "MdnsDiscovery":
        from meshrpc.discovery.mdns import MdnsDiscovery

        return MdnsDiscovery
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
