"""The ``Transport`` protocol: moving frames between responders and requesters.

A transport delivers whole frames (bytes) and reports peer state; it knows nothing of
message kinds. Receiving is push-style: the transport runs its receive loops as tasks
in the task group the component passes in, and calls the component's callbacks
synchronously from the event loop (callbacks must not block). Sending never blocks:
it either queues the frame on the socket or reports that it could not — at once, or,
for a frame a transport held back to send with others, through ``on_unsent``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

from anyio.abc import TaskGroup

__all__ = [
    "Connection",
    "EventSource",
    "Listener",
    "OnEvent",
    "OnSubscription",
    "OnFrame",
    "OnPeerFrame",
    "OnPeerUnsent",
    "OnState",
    "OnUnsent",
    "PeerState",
    "Subscription",
    "Transport",
]

PeerState = Literal["up", "down"]
OnPeerFrame = Callable[[bytes, bytes], None]
"""Listener callback: ``(peer_id, frame)``."""
OnFrame = Callable[[bytes], None]
"""Connection callback: ``(frame)``."""
OnState = Callable[[PeerState], None]
"""Connection state callback: ``"up"`` once the handshake completed, ``"down"`` on loss."""
OnSubscription = Callable[[bool, bytes], None]
"""Publisher callback: ``(subscribed, prefix)`` for each (un)subscription a subscriber sends;
a subscriber that disconnects is reported as unsubscribing from everything it had."""
OnEvent = Callable[[bytes, bytes], None]
"""Subscription callback: ``(topic_frame, frame)``."""
OnUnsent = Callable[[list[bytes]], None]
"""Connection callback: frames ``send`` accepted but that were then provably not sent."""
OnPeerUnsent = Callable[[bytes, list[bytes]], None]
"""Listener callback: ``(peer_id, frames)`` accepted by ``send`` but then not sent."""


@runtime_checkable
class EventSource(Protocol):
    """The publisher's side: one bound socket fanning frames out to subscribers."""

    @property
    def endpoint(self) -> str: ...

    def send(self, topic: bytes, frame: bytes) -> None:
        """Queue ``frame`` under ``topic`` for every subscriber whose prefix matches.

        Never blocks: a subscriber whose queue is full misses it (at-most-once).
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Subscription(Protocol):
    """The subscriber's side: a connection to one publisher endpoint."""

    @property
    def endpoint(self) -> str: ...

    @property
    def is_up(self) -> bool: ...

    def subscribe(self, prefix: bytes) -> None:
        """Receive frames whose topic starts with ``prefix`` (sent on to the publisher)."""
        ...

    def unsubscribe(self, prefix: bytes) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Listener(Protocol):
    """The responder's side: one bound socket that many requesters connect to."""

    @property
    def endpoint(self) -> str:
        """Where requesters connect, e.g. ``tcp://127.0.0.1:53121``."""
        ...

    def send(self, peer_id: bytes, frame: bytes) -> bool:
        """Queue ``frame`` for ``peer_id``; ``False`` when the peer is gone or not reading."""
        ...

    async def aclose(self, *, linger: float = 0.0) -> None:
        """Stop receiving and close the socket, giving queued frames ``linger`` seconds."""
        ...


@runtime_checkable
class Connection(Protocol):
    """The requester's side: a connection to one responder endpoint."""

    @property
    def endpoint(self) -> str: ...

    @property
    def is_up(self) -> bool:
        """Whether the handshake completed and the peer has not been lost since."""
        ...

    def send(self, frame: bytes) -> bool:
        """Queue ``frame``; ``False`` when it provably was not sent (not connected, full)."""
        ...

    async def aclose(self) -> None:
        """Close the connection; queued frames are discarded."""
        ...


@runtime_checkable
class Transport(Protocol):
    """Creates listeners and connections whose receive loops run in ``task_group``."""

    async def listen(
        self,
        task_group: TaskGroup,
        host: str,
        port: int,
        on_frame: OnPeerFrame,
        on_unsent: OnPeerUnsent | None = None,
    ) -> Listener:
        """Bind ``host:port`` (port 0: any free port).

        Raises:
            ConfigError: the address cannot be bound.
        """
        ...

    async def connect(
        self,
        task_group: TaskGroup,
        endpoint: str,
        on_frame: OnFrame,
        on_state: OnState,
        on_unsent: OnUnsent | None = None,
        *,
        batch: bool = False,
    ) -> Connection:
        """Start connecting to ``endpoint``; ``on_state`` reports when it is up or lost.

        ``batch``: the peer takes several frames per message (it advertises so), and
        frames sent in one loop turn may be batched; ``on_unsent`` then reports those
        that could not be sent after all.

        Raises:
            ConfigError: the endpoint is malformed.
        """
        ...

    async def publish_on(
        self, task_group: TaskGroup, host: str, port: int, on_subscription: OnSubscription
    ) -> EventSource:
        """Bind an event source on ``host:port`` (port 0: any free port).

        Raises:
            ConfigError: the address cannot be bound.
        """
        ...

    async def subscribe_to(
        self, task_group: TaskGroup, endpoint: str, on_event: OnEvent, on_state: OnState
    ) -> Subscription:
        """Start receiving from the event source at ``endpoint`` (nothing until subscribed).

        Raises:
            ConfigError: the endpoint is malformed.
        """
        ...
