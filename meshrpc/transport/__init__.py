"""Transports: the ``Transport`` protocol and its ZeroMQ implementation (imported lazily)."""

from __future__ import annotations

from typing import Any

from meshrpc.transport.base import Connection, Listener, Transport

__all__ = ["Connection", "Listener", "Transport", "ZmqTransport"]


def __getattr__(name: str) -> Any:
    if name == "ZmqTransport":
        from meshrpc.transport.zmq import ZmqTransport

        return ZmqTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
