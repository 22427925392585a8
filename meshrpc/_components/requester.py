"""Requester: sends calls to responders that answer the type, balancing between them."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup, TaskStatus
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from meshrpc._components import context
from meshrpc._components.common import Component
from meshrpc._protocol import codec
from meshrpc._protocol.advertisement import Advertisement, check_type_name
from meshrpc._protocol.envelope import PROTOCOL_VERSION, Draining, ErrorReply, Ping, Pong, Reply
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
from meshrpc.resilience import Breaker, RetryBudget, backoff
from meshrpc.security import Secret
from meshrpc.transport.base import Connection, PeerState, Transport

__all__ = ["Requester"]

logger = logging.getLogger("meshrpc.requester")

_MAX_REFUSALS = 4  # refused-before-running retries (overloaded/draining) per call


_TEND_INTERVAL = 0.25  # s between liveness/ejection checks; a peer holding calls that
# sent nothing for this long is pinged
_PING_TIMEOUT = 1.0  # s a PING may go unanswered before the peer counts as unresponsive


class _Refused(Overloaded):
    """A responder refused the call before running it (internal: triggers a retry)."""

    def __init__(self, message: str, *, draining: bool) -> None:
        super().__init__(message)
        self.draining = draining


class _Unsent(Exception):
    """The transport held the call back to batch it, then could not send it (internal)."""


class _Peer:
    """One responder instance, our connection to it, and what we know of its health."""

    __slots__ = (
        "ad",
        "assigned",
        "breaker",
        "conn",
        "draining",
        "greeted",
        "heard",
        "pending",
        "ping_nonce",
        "ping_sent",
        "retryable",
        "withdrawn",
    )

    def __init__(self, ad: Advertisement, breaker: Breaker) -> None:
        self.ad = ad
        self.conn: Connection | None = None
        self.pending: dict[int, Completion] = {}
        # Calls to idempotent handlers: failed over at once when the peer stops answering.
        self.retryable: set[int] = set()
        self.assigned = 0
        self.draining = False
        self.withdrawn = False
        self.breaker = breaker
        # Up at the transport is not enough: a peer takes calls once it answered a PING,
        # so an endpoint that speaks ZMTP but not meshrpc never receives any.
        self.greeted = False
        self.heard = False
        self.ping_nonce = 0
        self.ping_sent = 0.0

    @property
    def in_flight(self) -> int:
        return len(self.pending)

    @property
    def usable(self) -> bool:
        conn = self.conn
        return (
            conn is not None
            and conn.is_up
            and self.greeted
            and not self.draining
            and not self.withdrawn
        )


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
        version: str | None = None,
        attempt_timeout: float | None = None,
        retry_budget: float | None = None,
        balance: str | None = None,
        interfaces: str | list[str] | tuple[str, ...] | None = None,
        max_message: int | None = None,
        max_queued: int | None = None,
        secret: str | Secret | None = None,
        handshake_timeout: float | None = None,
        max_peers: int | None = None,
        stats_interval: float | None = None,
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
            stats_interval=stats_interval,
            secret=secret,
            handshake_timeout=handshake_timeout,
            max_peers=max_peers,
            max_message=max_message,
            max_queued=max_queued,
            retry_budget=retry_budget,
        )
        self.version = version or ""
        try:
            self._versions = SpecifierSet(self.version)
        except InvalidSpecifier as exc:
            raise ConfigError(
                f"version must be a PEP 440 specifier such as '>=2,<3', got {version!r}: {exc}"
            ) from None
        self._attempt_timeout = (
            None if attempt_timeout is None else self._timeout(attempt_timeout, "attempt_timeout")
        )
        self._budget = RetryBudget(self.settings.retry_budget, clock=time.monotonic)
        self._balancer = Balancer(self.settings.balance)
        self._ids = itertools.count(1)
        self._nonces = itertools.count(1)
        # Durations of the latest successful calls, for the monitor's percentiles.
        self._latencies: deque[float] = deque(maxlen=1024)
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
                "refusals",
                "retries",
                "retries_refused",
                "attempt_timeouts",
                "ejections",
                "unresponsive",
                "late_replies",
                "malformed",
                "forged_ads",
                "foreign_ads",
                "peers_refused",
                "version_mismatch",
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
        attempt_timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call ``type`` on one responder and return what its handler returned.

        The deadline is ``timeout`` seconds (default ``MESHRPC_TIMEOUT``); inside a
        handler it is never later than the current call's deadline. With no responder
        yet, the call waits for one until the deadline. Calls refused before running
        (overloaded, draining, not sent) are retried on another responder; calls to a
        handler declared ``idempotent`` are also retried after ``PeerLost`` and, with
        ``attempt_timeout`` (default: the requester's), after an attempt got no reply
        in that time. Every retry stays within the deadline and the retry budget.

        Raises:
            RemoteError: the handler raised (``UnknownType``: the responder lacks it).
            DeadlineExceeded: no outcome before the deadline.
            NoResponder: no responder for ``type`` appeared before the deadline.
            PeerLost: the responder vanished holding the call; it may have run.
            Overloaded: the responders tried refused the call without running it, and
                the deadline or the retry budget left no further try.
            ProtocolError: the payload cannot be encoded or is too large, or the reply
                was malformed.
        """
        if self._tg is None:
            raise RuntimeError(f"enter the requester first: `async with {self!r}:`")
        check_type_name(type)
        deadline = time.monotonic() + self._timeout(timeout)
        per_attempt = (
            self._attempt_timeout
            if attempt_timeout is None
            else self._timeout(attempt_timeout, "attempt_timeout")
        )
        parent = context._get()
        if parent is not None and parent.deadline < deadline:
            deadline = parent.deadline
        call_meta: dict[str, Any] = {"from": self.name}
        if meta:
            call_meta["m"] = meta
        started = time.monotonic()
        self._budget.deposit(started)
        attempt = 1
        unsent = 0
        avoid: _Peer | None = None
        while True:
            peer = self._choose(type, avoid)
            if peer is None:
                await self._wait_for_peer(type, deadline)
                continue
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                self._stats["timeouts"] += 1
                raise DeadlineExceeded(f"deadline passed before {type!r} was sent", type=type)
            call_id = next(self._ids)
            call_meta["t"] = int(time.time() * 1000)
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
                unsent += 1
                if unsent > _MAX_REFUSALS:
                    await anyio.sleep(min(0.005 * unsent, max(0.0, remaining)))
                continue
            retryable = type in peer.ad.idempotent
            if retryable:
                peer.retryable.add(call_id)
            peer.assigned += 1
            self._stats["sent"] += 1
            wait_until = deadline
            if retryable and per_attempt is not None:
                wait_until = min(deadline, now + per_attempt)
            try:
                replied = await call.wait(wait_until)
            finally:
                # Also on cancellation: an entry left behind would never be removed.
                peer.retryable.discard(call_id)
                if peer.pending.pop(call_id, None) is not None:
                    self._retire_if_idle(peer)
            error: BaseException | None
            if not replied:
                self._peer_failed(peer)
                if wait_until < deadline and self._may_retry(deadline):
                    self._stats["attempt_timeouts"] += 1
                    attempt, avoid = attempt + 1, peer
                    continue
                self._stats["timeouts"] += 1
                raise DeadlineExceeded(
                    f"{type!r} got no reply from {peer.ad.name!r} within the deadline",
                    type=type,
                )
            error = call.error
            if isinstance(error, _Unsent):
                peer.assigned -= 1
                self._stats["sent"] -= 1
                self._invalidate()
                unsent += 1
                avoid = peer
                continue
            if error is None:
                peer.breaker.success()
                self._stats["ok"] += 1
                self._latencies.append(time.monotonic() - started)
                return call.result
            if isinstance(error, _Refused):
                # Not run (overloaded or draining): safe to try again, elsewhere if we can.
                # A draining peer refuses each caller at most once, so those retries need
                # no budget.
                pause = 0.0 if error.draining else backoff(attempt)
                if error.draining or self._may_retry(deadline, pause):
                    if pause:
                        await anyio.sleep(pause)
                    attempt, avoid = attempt + 1, peer
                    continue
                self._stats["overloaded"] += 1
                raise Overloaded(f"{error} (no retry left within the deadline and budget)")
            if isinstance(error, PeerLost):
                self._peer_failed(peer)
                if retryable and self._may_retry(deadline):
                    attempt, avoid = attempt + 1, peer
                    continue
                self._stats["peer_lost"] += 1
            elif isinstance(error, RemoteError) and not isinstance(error, UnknownType):
                self._peer_failed(peer)
            else:
                peer.breaker.success()  # it answered: alive, whatever the verdict
            if isinstance(error, CallError) and error.type is None:
                error.type = type
            raise error

    def _may_retry(self, deadline: float, pause: float = 0.0) -> bool:
        """Whether one more attempt fits the deadline and the retry budget (and take it)."""
        if deadline - time.monotonic() <= pause + 0.001:
            return False
        if not self._budget.try_withdraw():
            self._stats["retries_refused"] += 1
            return False
        self._stats["retries"] += 1
        return True

    def _peer_failed(self, peer: _Peer) -> None:
        if peer.breaker.failure(lambda: self._may_eject(peer)):
            self._stats["ejections"] += 1
            logger.info(
                "requester %r: %r at %s ejected for %.1fs after %d failures",
                self.name,
                peer.ad.name,
                peer.ad.endpoint,
                peer.breaker.ejected_until - time.monotonic(),
                peer.breaker.threshold,
            )
            self._invalidate()

    def _may_eject(self, peer: _Peer) -> bool:
        # Never more than half of the live peers out, and never the last: a wave of bad
        # requests (or a sick caller) must not take the whole mesh out of rotation.
        live = [p for p in self._peers.values() if p.usable]
        ejected = sum(1 for p in live if p.breaker.ejected)
        return ejected + 1 <= len(live) // 2

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
        """Counters since start, plus peers (known, usable, ejected), calls in flight and
        waiting, and the retry tokens available now."""
        return {
            **self._stats,
            "peers": len(self._peers),
            "usable_peers": sum(1 for p in self._peers.values() if p.usable),
            "ejected_peers": sum(1 for p in self._peers.values() if p.breaker.ejected),
            "selectable_peers": sum(
                1 for p in self._peers.values() if p.usable and not p.breaker.ejected
            ),
            "in_flight": sum(p.in_flight for p in self._peers.values()),
            "waiting_for_responder": self._waiting,
            "retry_tokens": round(self._budget.available(), 2),
        }

    def _snapshot(self) -> dict[str, Any]:
        snapshot = super()._snapshot()
        latencies = sorted(self._latencies)
        if latencies:
            snapshot["latency_ms"] = {
                "p50": latencies[len(latencies) // 2] * 1000,
                "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            }
        snapshot["peers"] = [
            {
                "id": p.ad.instance_id,
                "name": p.ad.name,
                "endpoint": p.ad.endpoint,
                "sent": p.assigned,
                "in_flight": len(p.pending),
                "usable": p.usable,
                "ejected": p.breaker.ejected,
            }
            for p in list(self._peers.values())
        ]
        return snapshot

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
            tg.start_soon(self._tend, name=f"meshrpc-tend {self.name}")
        except BaseException:
            await self._shutdown()
            raise
        await self._report(True)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._shutdown()

    async def _shutdown(self) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        with anyio.CancelScope(shield=True):
            await self._report(False)
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
            or not self._admit(ad, self._stats)
        ):
            return
        existing = self._peers.get(ad.instance_id)
        if event.kind != "removed" and not self._version_ok(ad):
            self._stats["version_mismatch"] += 1
            logger.debug(
                "requester %r skips %r version %r (wants %r)",
                self.name,
                ad.name,
                ad.version,
                self.version,
            )
            if existing is None:
                return
            event = DiscoveryEvent("removed", ad)  # an update to a version we do not want
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
        same_endpoint = [p for p in self._peers.values() if p.ad.endpoint == ad.endpoint]
        if any(p.ad.issued > ad.issued for p in same_endpoint):
            return  # a replay of an older signed record for an endpoint we know newer
        for other in same_endpoint:
            # Another instance on this endpoint means that one is gone (a port has one
            # owner): a process killed without goodbye, whose record mDNS would keep
            # for a long time, and which must not hold a second connection to the new.
            del self._peers[other.ad.instance_id]
            other.withdrawn = True
            self._fail_pending(other, "another responder took over its endpoint")
            self._retire_if_idle(other)
        if len(self._peers) >= self.settings.max_peers:
            self._stats["peers_refused"] += 1
            logger.warning(
                "requester %r ignores responder %r at %s: already %d known (max_peers)",
                self.name,
                ad.name,
                ad.endpoint,
                len(self._peers),
            )
            return
        peer = _Peer(ad, Breaker(clock=time.monotonic))
        self._peers[ad.instance_id] = peer
        assert self._transport is not None
        assert self._tg is not None
        try:
            peer.conn = await self._transport.connect(
                self._tg,
                ad.endpoint,
                lambda frame: self._on_frame(peer, frame),
                lambda state: self._on_state(peer, state),
                lambda frames: self._on_unsent(peer, frames),
                batch=ad.batches,
            )
        except ConfigError as exc:
            logger.warning("ignoring responder %r at %r: %s", ad.name, ad.endpoint, exc)
            self._peers.pop(ad.instance_id, None)
        self._invalidate()

    def _on_state(self, peer: _Peer, state: PeerState) -> None:
        if state == "down":
            peer.greeted = False
            self._fail_pending(peer, "the connection to the responder was lost")
            self._retire_if_idle(peer)
            self._invalidate()
        else:
            self._greet(peer)

    def _on_unsent(self, peer: _Peer, frames: list[bytes]) -> None:
        # Calls the transport accepted to batch but could not send after all: they never
        # left, so they go elsewhere like any call that was not sent. (A lost PING is
        # the liveness check's business.)
        for frame in frames:
            call_id = codec.request_call_id(frame)
            call = peer.pending.pop(call_id, None) if call_id is not None else None
            if call is not None:
                peer.retryable.discard(call_id)
                call.error = _Unsent()
                call.set()
        self._retire_if_idle(peer)

    def _on_frame(self, peer: _Peer, frame: bytes) -> None:
        peer.heard = True
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
            peer.retryable.discard(message.call_id)
            call.error = self._error(peer, message)
            call.set()
            if message.code == "draining":
                peer.draining = True
                self._invalidate()
        elif isinstance(message, Draining):
            peer.draining = True
            self._invalidate()
        elif isinstance(message, Pong):
            if message.nonce == peer.ping_nonce:
                peer.ping_sent = 0.0
                if not peer.greeted:
                    peer.greeted = True
                    self._invalidate()
        else:
            self._stats["malformed"] += 1
        if peer.withdrawn:
            self._retire_if_idle(peer)

    def _error(self, peer: _Peer, message: ErrorReply) -> CallError | ProtocolError:
        code = message.code
        name = peer.ad.name
        if code in ("overloaded", "draining"):
            self._stats["refusals"] += 1
            return _Refused(
                f"{name!r} refused the call: {message.message}", draining=code == "draining"
            )
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
        peer.retryable.clear()
        for call in calls.values():
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
            live = [p for p in self._peers.values() if p.usable and type in p.ad.types]
            # Ejected peers only when nothing else is left: never eject the last one.
            peers = [p for p in live if not p.breaker.ejected] or live
            self._candidates[type] = peers
        return peers

    def _choose(self, type: str, avoid: _Peer | None = None) -> _Peer | None:
        peers = self._usable(type)
        if not peers:
            return None
        if avoid is not None and len(peers) > 1 and avoid in peers:
            # A retry goes elsewhere when there is an elsewhere.
            peers = [p for p in peers if p is not avoid]
        peer = self._balancer.choose(peers)
        if not peer.usable:  # changed since the list was cached
            self._invalidate()
            return self._choose(type, avoid)
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

    def _timeout(self, timeout: float | None, what: str = "timeout") -> float:
        if timeout is None:
            return self.settings.timeout
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise ConfigError(f"{what} must be a positive number of seconds, got {timeout!r}")
        return float(timeout)

    def _version_ok(self, ad: Advertisement) -> bool:
        if not self.version:
            return True
        try:
            return Version(ad.version) in self._versions
        except InvalidVersion:
            return False  # no version, or not PEP 440: cannot satisfy a specifier

    # -- liveness -----------------------------------------------------------------

    async def _tend(self) -> None:
        """Re-admit ejected peers whose time is up; PING peers that hold calls but went
        quiet, and treat one that does not answer as unresponsive.

        ZeroMQ heartbeats are answered by libzmq's own thread, so they cannot see a
        responder whose event loop is stuck; only an application-level PING can.
        """
        nonces = self._nonces
        while True:
            await anyio.sleep(_TEND_INTERVAL)
            now = time.monotonic()
            changed = False
            for peer in list(self._peers.values()):
                if peer.breaker.maybe_readmit():
                    changed = True
                if not peer.greeted:
                    conn = peer.conn
                    if conn is not None and conn.is_up and now - peer.ping_sent > _PING_TIMEOUT:
                        self._greet(peer)  # the first greeting was lost or unanswered
                    continue
                if not peer.pending or peer.conn is None or not peer.conn.is_up:
                    peer.heard, peer.ping_sent = False, 0.0
                    continue
                if peer.heard:
                    peer.heard, peer.ping_sent = False, 0.0
                    continue
                if not peer.ping_sent:
                    peer.ping_nonce = next(nonces)
                    peer.ping_sent = now
                    peer.conn.send(codec.encode(Ping(peer.ping_nonce)))
                elif now - peer.ping_sent > _PING_TIMEOUT:
                    peer.ping_sent = now  # ask again later rather than every tick
                    self._unresponsive(peer, now)
                    changed = True
            if changed:
                self._invalidate()

    def _greet(self, peer: _Peer) -> None:
        if peer.conn is not None:
            peer.ping_nonce = next(self._nonces)
            peer.ping_sent = time.monotonic()
            peer.conn.send(codec.encode(Ping(peer.ping_nonce)))

    def _unresponsive(self, peer: _Peer, now: float) -> None:
        self._stats["unresponsive"] += 1
        logger.warning(
            "requester %r: %r at %s holds %d calls and has not answered a PING for %.1fs",
            self.name,
            peer.ad.name,
            peer.ad.endpoint,
            len(peer.pending),
            _PING_TIMEOUT,
        )
        if not peer.breaker.ejected and self._may_eject(peer):
            peer.breaker.eject()
            self._stats["ejections"] += 1
        # Calls to idempotent handlers go elsewhere now; the others keep waiting for
        # their reply or deadline, since running them twice is not allowed.
        for call_id in list(peer.retryable):
            call = peer.pending.pop(call_id, None)
            if call is not None:
                call.error = PeerLost(f"{peer.ad.name!r} at {peer.ad.endpoint} stopped answering")
                call.set()
        peer.retryable.clear()
