"""Requester: sends calls to responders that answer the type, balancing between them."""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup, TaskStatus

from meshrpc._components import context
from meshrpc._components.common import Component
from meshrpc._protocol import codec
from meshrpc._protocol.advertisement import Advertisement, check_type_name
from meshrpc._protocol.envelope import PROTOCOL_VERSION, Draining, ErrorReply, Pong, Reply
from meshrpc._runtime import Completion, Runtime, current_runtime
from meshrpc.balancer import Balancer
from meshrpc.discovery.base import Discovery, DiscoveryEvent
from meshrpc.errors import (
    CallError,
    ConfigError,
    DeadlineExceeded,
    NoResponder,
    Overloaded,
    PeerLost,
    ProtocolError,
    RemoteError,
    UnknownType,
)
from meshrpc.transport.base import Connection, PeerState, Transport

__all__ = ["Requester"]

logger = logging.getLogger("meshrpc.requester")

_MAX_REFUSALS = 4  # refused-before-running retries (overloaded/draining) per call


class _Peer:
    """One responder instance and our connection to it."""

    __slots__ = ("ad", "assigned", "conn", "draining", "pending", "withdrawn")

    def __init__(self, ad: Advertisement) -> None:
        self.ad = ad
        self.conn: Connection | None = None
        self.pending: dict[int, Completion] = {}
        self.assigned = 0
        self.draining = False
        self.withdrawn = False

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    @property
    def usable(self) -> bool:
        conn = self.conn
        return conn is not None and conn.is_up and not self.draining and not self.withdrawn


class Requester(Component):
    """Sends calls (:meth:`send`) to the responders of its mesh that answer the type."""

    kind = "requester"

    def __init__(
        self,
        name: str,
        namespace: str | None = None,
        key: str | None = None,
        environment: str | None = None,
        *,
        timeout: float | None = None,
        balance: str | None = None,
        interfaces: str | list[str] | tuple[str, ...] | None = None,
        max_message: int | None = None,
        max_queued: int | None = None,
        discovery: Discovery | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            name,
            namespace=namespace,
            key=key,
            environment=environment,
            discovery=discovery,
            transport=transport,
            timeout=timeout,
            balance=balance,
            interfaces=interfaces,
            max_message=max_message,
            max_queued=max_queued,
        )
        self._balancer = Balancer(self.settings.balance)
        self._ids = itertools.count(1)
        self._peers: dict[str, _Peer] = {}
        self._candidates: dict[str, list[_Peer]] = {}
        self._retiring: set[Connection] = set()
        self._changed: anyio.Event | None = None
        self._waiting = 0
        self._tg: TaskGroup | None = None
        self._runtime: Runtime | None = None
        self._discovery: Discovery | None = None
        self._transport: Transport | None = None
        self._stats = dict.fromkeys(
            (
                "sent",
                "ok",
                "remote_errors",
                "timeouts",
                "no_responder",
                "peer_lost",
                "overloaded",
                "retries",
                "late_replies",
                "malformed",
            ),
            0,
        )

    # -- calls --------------------------------------------------------------------

    async def send(
        self,
        type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call ``type`` on one responder and return what its handler returned.

        The deadline is ``timeout`` seconds (default ``MESHRPC_TIMEOUT``); inside a
        handler it is never later than the current call's deadline. With no responder
        yet, the call waits for one until the deadline.

        Raises:
            RemoteError: the handler raised (``UnknownType``: the responder lacks it).
            DeadlineExceeded: no outcome before the deadline.
            NoResponder: no responder for ``type`` appeared before the deadline.
            PeerLost: the responder vanished holding the call; it may have run.
            Overloaded: every responder tried refused the call without running it.
            ProtocolError: the payload cannot be encoded or is too large, or the reply
                was malformed.
        """
        if self._tg is None:
            raise RuntimeError(f"enter the requester first: `async with {self!r}:`")
        check_type_name(type)
        deadline = time.monotonic() + self._timeout(timeout)
        parent = context._get()
        if parent is not None and parent.deadline < deadline:
            deadline = parent.deadline
        call_meta: dict[str, Any] = {"from": self.name}
        if meta:
            call_meta["m"] = meta
        attempt = 1
        refusals = 0
        while True:
            peer = self._choose(type)
            if peer is None:
                await self._wait_for_peer(type, deadline)
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._stats["timeouts"] += 1
                raise DeadlineExceeded(f"deadline passed before {type!r} was sent", type=type)
            call_id = next(self._ids)
            frame = codec.encode_request(
                call_id,
                type,
                math.ceil(remaining * 1000),
                payload,
                attempt=attempt,
                meta=call_meta,
                max_size=self.settings.max_message,
            )
            assert self._runtime is not None
            assert peer.conn is not None
            call = self._runtime.completion()
            peer.pending[call_id] = call
            if not peer.conn.send(frame):
                # Provably not sent (no live connection, or its queue is full): pick
                # again; a peer whose connection is down is no longer a candidate.
                del peer.pending[call_id]
                self._invalidate()
                refusals += 1
                if refusals > _MAX_REFUSALS:
                    await anyio.sleep(min(0.005 * refusals, max(0.0, remaining)))
                continue
            peer.assigned += 1
            self._stats["sent"] += 1
            try:
                replied = await call.wait(deadline)
            finally:
                # Also on cancellation: an entry left behind would never be removed.
                if peer.pending.pop(call_id, None) is not None:
                    self._retire_if_idle(peer)
            if not replied:
                self._stats["timeouts"] += 1
                raise DeadlineExceeded(
                    f"{type!r} got no reply from {peer.ad.name!r} within the deadline",
                    type=type,
                )
            error = call.error
            if error is None:
                self._stats["ok"] += 1
                return call.result
            if isinstance(error, Overloaded) and refusals < _MAX_REFUSALS:
                # Refused before running: safe to try again, elsewhere if possible.
                refusals += 1
                attempt += 1
                self._stats["retries"] += 1
                await anyio.sleep(random.uniform(0, 0.002 * refusals))
                continue
            if isinstance(error, CallError) and error.type is None:
                error.type = type
            raise error

    async def wait_for_responders(
        self, type: str, n: int = 1, *, timeout: float | None = None
    ) -> int:
        """Wait until ``n`` connected responders answer ``type``; returns how many do.

        Raises:
            NoResponder: fewer than ``n`` before the timeout (default ``MESHRPC_TIMEOUT``).
        """
        if self._tg is None:
            raise RuntimeError(f"enter the requester first: `async with {self!r}:`")
        check_type_name(type)
        deadline = time.monotonic() + self._timeout(timeout)
        while True:
            count = len(self._usable(type))
            if count >= n:
                return count
            assert self._changed is not None
            changed = self._changed
            with anyio.move_on_after(deadline - time.monotonic()):
                await changed.wait()
            if not changed.is_set():
                raise NoResponder(
                    f"{count} of {n} responders for {type!r} after the timeout", type=type
                )

    def statistics(self) -> dict[str, Any]:
        """Counters since start, plus peers, usable peers and calls in flight."""
        return {
            **self._stats,
            "peers": len(self._peers),
            "usable_peers": sum(1 for p in self._peers.values() if p.usable),
            "in_flight": sum(p.in_flight for p in self._peers.values()),
            "waiting_for_responder": self._waiting,
        }

    def responders(self) -> list[Advertisement]:
        """Advertisements of the responders currently known (connected or not)."""
        return [p.ad for p in self._peers.values()]

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._claim()
        discovery, transport = self._backends()
        self._transport = transport
        self._changed = anyio.Event()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._runtime = current_runtime(tg)
        try:
            await discovery.start()
            self._discovery = discovery
            # Started (not start_soon) so the watch is live when `async with` returns.
            await tg.start(self._watch, name=f"meshrpc-watch {self.name}")
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        with anyio.CancelScope(shield=True):
            # Stop the watcher and the pumps first, so nothing uses discovery or a
            # connection while they are being closed.
            tg.cancel_scope.cancel()
            try:
                for peer in list(self._peers.values()):
                    self._fail_pending(peer, "the requester was closed")
                    if peer.conn is not None:
                        await peer.conn.aclose()
                self._peers.clear()
                for conn in list(self._retiring):
                    await conn.aclose()
                self._retiring.clear()
                self._invalidate()
            finally:
                if self._discovery is not None:
                    await self._discovery.aclose()
        # Outside the shield: the task group must be exited in the scope it was entered.
        await tg.__aexit__(None, None, None)

    # -- peers --------------------------------------------------------------------

    async def _watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        assert self._discovery is not None
        async with self._discovery.watch() as events:
            task_status.started()
            async for event in events:
                await self._on_discovery(event)

    async def _on_discovery(self, event: DiscoveryEvent) -> None:
        ad = event.advertisement
        if (
            ad.kind != "responder"
            or ad.protocol != PROTOCOL_VERSION
            or not ad.endpoint
            or not ad.same_mesh(
                self.settings.namespace, self.settings.key, self.settings.environment
            )
        ):
            return
        existing = self._peers.get(ad.instance_id)
        if event.kind == "removed":
            if existing is not None:
                del self._peers[ad.instance_id]
                existing.withdrawn = True
                self._retire_if_idle(existing)
                self._invalidate()
            return
        if existing is not None and existing.ad.endpoint == ad.endpoint:
            existing.ad = ad
            self._invalidate()
            return
        if existing is not None:
            # Same instance on a new endpoint: a restart. The old connection's calls
            # are lost with the old process.
            existing.withdrawn = True
            self._fail_pending(existing, "the responder restarted")
            self._retire_if_idle(existing)
        peer = _Peer(ad)
        self._peers[ad.instance_id] = peer
        assert self._transport is not None
        assert self._tg is not None
        try:
            peer.conn = await self._transport.connect(
                self._tg,
                ad.endpoint,
                lambda frame: self._on_frame(peer, frame),
                lambda state: self._on_state(peer, state),
            )
        except ConfigError as exc:
            logger.warning("ignoring responder %r at %r: %s", ad.name, ad.endpoint, exc)
            self._peers.pop(ad.instance_id, None)
        self._invalidate()

    def _on_state(self, peer: _Peer, state: PeerState) -> None:
        if state == "down":
            self._fail_pending(peer, "the connection to the responder was lost")
            self._retire_if_idle(peer)
        self._invalidate()

    def _on_frame(self, peer: _Peer, frame: bytes) -> None:
        try:
            message = codec.decode(frame, max_size=self.settings.max_message)
        except ProtocolError as exc:
            self._stats["malformed"] += 1
            logger.debug("malformed frame from %s: %s", peer.ad.endpoint, exc)
            return
        if isinstance(message, Reply):
            call = peer.pending.pop(message.call_id, None)
            if call is None:
                self._stats["late_replies"] += 1
                return
            call.result = message.payload
            call.set()
        elif isinstance(message, ErrorReply):
            call = peer.pending.pop(message.call_id, None)
            if call is None:
                self._stats["late_replies"] += 1
                return
            call.error = self._error(peer, message)
            call.set()
            if message.code == "draining":
                peer.draining = True
                self._invalidate()
        elif isinstance(message, Draining):
            peer.draining = True
            self._invalidate()
        elif isinstance(message, Pong):
            pass
        else:
            self._stats["malformed"] += 1
        if peer.withdrawn:
            self._retire_if_idle(peer)

    def _error(self, peer: _Peer, message: ErrorReply) -> CallError | ProtocolError:
        code = message.code
        name = peer.ad.name
        if code in ("overloaded", "draining"):
            self._stats["overloaded"] += 1
            return Overloaded(f"{name!r} refused the call: {message.message}")
        if code == "expired":
            self._stats["timeouts"] += 1
            return DeadlineExceeded(f"{name!r} received the call after its deadline")
        if code == "bad_request":
            self._stats["malformed"] += 1
            return ProtocolError(f"{name!r} could not decode the request: {message.message}")
        self._stats["remote_errors"] += 1
        cls = UnknownType if code == "unknown_type" else RemoteError
        return cls(message.error_type, message.message, message.traceback, peer=name)

    def _fail_pending(self, peer: _Peer, why: str) -> None:
        calls, peer.pending = peer.pending, {}
        for call in calls.values():
            self._stats["peer_lost"] += 1
            call.error = PeerLost(
                f"{why} ({peer.ad.name!r} at {peer.ad.endpoint}); the call may or may not have run"
            )
            call.set()

    def _retire_if_idle(self, peer: _Peer) -> None:
        if peer.withdrawn and not peer.pending and peer.conn is not None and self._tg:
            conn, peer.conn = peer.conn, None
            # Tracked until closed: shutdown closes whatever this task did not get to.
            self._retiring.add(conn)
            self._tg.start_soon(self._close_retired, conn)

    async def _close_retired(self, conn: Connection) -> None:
        await conn.aclose()
        self._retiring.discard(conn)

    # -- choosing -----------------------------------------------------------------

    def _usable(self, type: str) -> list[_Peer]:
        peers = self._candidates.get(type)
        if peers is None:
            peers = [p for p in self._peers.values() if p.usable and type in p.ad.types]
            self._candidates[type] = peers
        return peers

    def _choose(self, type: str) -> _Peer | None:
        peers = self._usable(type)
        if not peers:
            return None
        peer = self._balancer.choose(peers)
        if not peer.usable:  # changed since the list was cached
            self._invalidate()
            return self._choose(type)
        return peer

    def _invalidate(self) -> None:
        self._candidates.clear()
        if self._changed is not None:
            self._changed.set()
            self._changed = anyio.Event()

    async def _wait_for_peer(self, type: str, deadline: float) -> None:
        if self._waiting >= self.settings.max_queued:
            self._stats["no_responder"] += 1
            raise NoResponder(
                f"no responder for {type!r} and {self._waiting} calls already waiting (max_queued)",
                type=type,
            )
        assert self._changed is not None
        changed = self._changed
        self._waiting += 1
        try:
            with anyio.move_on_after(deadline - time.monotonic()):
                await changed.wait()
        finally:
            self._waiting -= 1
        if not changed.is_set():
            self._stats["no_responder"] += 1
            known = sum(1 for p in self._peers.values() if type in p.ad.types)
            detail = f" ({known} known but not reachable)" if known else ""
            raise NoResponder(
                f"no responder for {type!r} in namespace {self.settings.namespace!r} "
                f"before the deadline{detail}",
                type=type,
            )

    def _timeout(self, timeout: float | None) -> float:
        if timeout is None:
            return self.settings.timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return float(timeout)
