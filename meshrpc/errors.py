"""Every exception meshrpc raises, in one place.

The hierarchy::

    MeshError                       base of everything below
    ├── ConfigError                 bad keyword argument or MESHRPC_* variable (also ValueError)
    ├── ProtocolError               bytes that are not a valid meshrpc message, or a payload
    │   │                           that cannot be encoded; never anything else from decoding
    │   └── MessageTooLarge         refused before sending: over the configured size limit
    └── CallError                   a call ended without a result; exactly one per call
        ├── RemoteError             the handler raised; carries class name, message, traceback
        │   └── UnknownType         the responder does not handle this type (mixed versions)
        ├── DeadlineExceeded        the deadline passed first (also TimeoutError)
        ├── NoResponder             no responder for the type appeared before the deadline
        ├── PeerLost                the responder vanished holding the call: outcome unknown
        └── Overloaded              refused without running (concurrency limit or draining)

Errors of the libraries underneath (``zmq.ZMQError``, zeroconf's) are mapped at the
boundary and never reach users.
"""

from __future__ import annotations

__all__ = [
    "CallError",
    "ConfigError",
    "DeadlineExceeded",
    "MeshError",
    "MessageTooLarge",
    "NoResponder",
    "Overloaded",
    "PeerLost",
    "ProtocolError",
    "RemoteError",
    "UnknownType",
]


class MeshError(Exception):
    """Base class of every meshrpc error."""


class ConfigError(MeshError, ValueError):
    """A configuration value (argument or ``MESHRPC_*`` variable) is invalid."""


class ProtocolError(MeshError):
    """Input that is not a valid meshrpc message, or a value that cannot be encoded."""


class MessageTooLarge(ProtocolError):
    """A message exceeds the size limit; raised by the sender before anything is sent."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class CallError(MeshError):
    """A call ended without a result. ``type`` is the message type that was called."""

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message)
        self.type = type


class RemoteError(CallError):
    """The remote handler raised an exception.

    ``remote_type`` is the remote exception's class name, ``remote_message`` its message
    and ``remote_traceback`` its formatted traceback when the responder sends one.
    """

    def __init__(
        self,
        remote_type: str,
        remote_message: str,
        remote_traceback: str | None = None,
        *,
        type: str | None = None,
        peer: str | None = None,
    ) -> None:
        where = f" in {type!r}" if type else ""
        super().__init__(f"{remote_type}{where}: {remote_message}", type=type)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.peer = peer


class UnknownType(RemoteError):
    """The responder that received the call has no handler for its type."""


class DeadlineExceeded(CallError, TimeoutError):
    """The call's deadline passed before an outcome arrived."""


class NoResponder(CallError):
    """No responder answering the type appeared before the deadline."""


class PeerLost(CallError):
    """The responder disconnected while holding the call; it may or may not have run."""


class Overloaded(CallError):
    """The responder refused the call without running it (busy or draining)."""
