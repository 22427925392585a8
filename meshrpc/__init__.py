"""meshrpc: a zero-configuration RPC mesh — mDNS discovery, msgpack over ZeroMQ, on anyio.

calc = meshrpc.Responder(name="calc")

@calc.on("add")
async def add(payload):
    return payload["a"] + payload["b"]

async with meshrpc.Requester(name="client") as client:
    await client.send("add", {"a": 1, "b": 2})
"""

from __future__ import annotations

from meshrpc._components.context import CallContext, current_call
from meshrpc._components.lifecycle import run, serve
from meshrpc._components.publisher import Publisher
from meshrpc._components.requester import Requester
from meshrpc._components.responder import Responder
from meshrpc._components.subscriber import Subscriber
from meshrpc.errors import (
    CallError,
    ConfigError,
    DeadlineExceeded,
    MeshError,
    MessageTooLarge,
    NoResponder,
    Overloaded,
    PeerLost,
    ProtocolError,
    RemoteError,
    UnknownType,
)

__version__ = "0.1.0"

__all__ = [
    "CallContext",
    "CallError",
    "ConfigError",
    "DeadlineExceeded",
    "MeshError",
    "MessageTooLarge",
    "NoResponder",
    "Overloaded",
    "PeerLost",
    "ProtocolError",
    "Publisher",
    "RemoteError",
    "Requester",
    "Responder",
    "Subscriber",
    "UnknownType",
    "__version__",
    "current_call",
    "run",
    "serve",
]
