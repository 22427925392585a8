"""Messages of the request/reply wire protocol, as plain values (no I/O).

Each message travels as one msgpack array; the first two elements are the protocol
version and the kind. ``docs/protocol.md`` is the normative description.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DRAINING",
    "ERROR",
    "EVENT",
    "INFO",
    "INFO_REQUEST",
    "ERROR_CODES",
    "PING",
    "PONG",
    "PROTOCOL_VERSION",
    "REPLY",
    "REQUEST",
    "WELCOME",
    "Draining",
    "ErrorReply",
    "Event",
    "Gossip",
    "Info",
    "InfoRequest",
    "Message",
    "Ping",
    "Pong",
    "Reply",
    "Request",
    "Welcome",
]

PROTOCOL_VERSION: Final = 1

REQUEST: Final = 1
REPLY: Final = 2
ERROR: Final = 3
DRAINING: Final = 4
PING: Final = 5
PONG: Final = 6
EVENT: Final = 7
WELCOME: Final = 8
INFO_REQUEST: Final = 9
INFO: Final = 10

# Why the call failed, as carried in ERROR messages. A requester maps each code to
# exactly one exception class; unknown codes from newer peers become RemoteError.
ERROR_CODES: Final = (
    "remote",  # the handler raised
    "unknown_type",  # no handler for the type on this responder
    "overloaded",  # refused before running: concurrency limit
    "draining",  # refused before running: the responder is shutting down
    "expired",  # refused before running: the deadline had already passed
    "bad_request",  # the request could not be decoded
    "bad_result",  # the handler's return value could not be encoded or was too large
)


# Request and Reply are built once per call on the hot path; a frozen dataclass's
# __init__ (object.__setattr__ per field) costs about four times a plain one's.
@dataclass(slots=True)
class Request:
    """Ask the responder to run the handler of ``type``.

    ``deadline_ms`` is the time left when sent (relative, so clocks need not agree);
    ``attempt`` counts from 1; ``meta`` carries the caller's name and user metadata.
    """

    call_id: int
    type: str
    deadline_ms: int
    payload: Any = None
    attempt: int = 1
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    """The handler returned ``payload``."""

    call_id: int
    payload: Any = None


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """The call failed for ``code`` (one of ``ERROR_CODES``)."""

    call_id: int
    code: str
    error_type: str
    message: str
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Draining:
    """The responder is shutting down: send it no new calls."""


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level liveness probe; answered with :class:`Pong` by the pump."""

    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to :class:`Ping` carrying the same nonce."""

    nonce: int


@dataclass(frozen=True, slots=True)
class Event:
    """A published event. ``seq`` numbers the publisher's events per stream (a topic,
    or one group member's share) from 1, so a subscriber can count the ones it missed.
    """

    seq: int
    topic: str
    payload: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Welcome:
    """A publisher's answer to a subscriber's welcome subscription: its earlier
    subscriptions are now live at that publisher."""


@dataclass(frozen=True, slots=True)
class Gossip:
    """One advertisement passed on by a member: its TXT properties, and how many
    milliseconds ago the passer last heard of it from its owner (0: from the owner)."""

    props: dict[str, str]
    age_ms: int = 0


@dataclass(frozen=True, slots=True)
class InfoRequest:
    """Static discovery: "who are you, whom do you know?" The asker also hands over its
    own advertisements (``ads``) and the instance ids it withdrew (``gone``)."""

    nonce: int
    ads: tuple[Gossip, ...] = ()
    gone: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Info:
    """The answer: the responder's own advertisement(s), the ones it knows of, and the
    instances it knows withdrew, each as ``(instance id, milliseconds ago)``."""

    nonce: int
    own: tuple[Gossip, ...] = ()
    known: tuple[Gossip, ...] = ()
    gone: tuple[tuple[str, int], ...] = ()


Message = (
    Request | Reply | ErrorReply | Draining | Ping | Pong | Event | Welcome | InfoRequest | Info
)
