"""ZeroMQ transport under anyio: the only module that imports ``zmq``.

pyzmq's asyncio integration does not run on trio, so each socket gets one pump task
that drains it with ``NOBLOCK`` until ``zmq.Again`` and then waits on the socket's
file descriptor with ``anyio.wait_readable`` — which works on every anyio backend.

The descriptor is edge-triggered: any socket operation (a send included) may consume
the wake-up for messages that are already queued. So after every send we look at
``EVENTS`` and, if input is pending, drain right there instead of waiting for a wake-up
that will not come.

Options that prevent silent loss (see ``shared/RELIABILITY.md``): ``IMMEDIATE`` so a
requester never queues calls into a dead peer's pipe (they would run seconds late on a
restarted process), heartbeats so a silent peer is detected, ``ROUTER_MANDATORY`` so a
reply to a vanished requester is an error we count, ``MAXMSGSIZE`` so a hostile peer
cannot make us allocate without bound.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import threading
from collections.abc import Callable
from typing import Final

import anyio
import zmq
import zmq.backend
from anyio.abc import TaskGroup
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from meshrpc._runtime import current_backend
from meshrpc.errors import ConfigError
from meshrpc.transport.base import (
    OnEvent,
    OnFrame,
    OnPeerFrame,
    OnPeerUnsent,
    OnState,
    OnSubscription,
    OnUnsent,
    PeerState,
)

__all__ = ["ZmqConnection", "ZmqEventSource", "ZmqListener", "ZmqSubscription", "ZmqTransport"]

logger = logging.getLogger("meshrpc.transport")
_zap_log = logging.getLogger("meshrpc.transport.zap")

# Plain ints: pyzmq's constants are enum members, and enum arithmetic per message
# showed up in profiles.
_NOBLOCK: Final = int(zmq.NOBLOCK)
_SEND_MORE: Final = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS: Final = int(zmq.EVENTS)
_POLLIN: Final = int(zmq.POLLIN)
_RCVMORE: Final = int(zmq.RCVMORE)
# The backend's own methods: pyzmq's Python-level wrappers turn every option into an
# enum member first, which cost more than the call itself on the per-message path.
_raw_get: Final = zmq.backend.Socket.get
_raw_recv: Final = zmq.backend.Socket.recv
_raw_send: Final = zmq.backend.Socket.send
_BATCH: Final = 512  # messages handled per wake-up before letting other tasks run
# Frames one multipart message may carry, and their bytes: past either, the batch goes
# out at once and a new one starts. Small batches keep both ends busy: with one batch
# per turn, a requester and a responder took turns over the whole window (each idle
# while the other worked); in batches of 16 the peer starts on the first replies while
# the rest are computed (64 in flight: ~30k -> ~40k calls/s on 2 cores).
_OUT_FRAMES: Final = 16
_OUT_BYTES: Final = 1 << 20
_MAX_BATCHING_PEERS: Final = 10_000  # requesters remembered as taking batches
_ENDPOINT_RE: Final = re.compile(r"^tcp://[^\s:]+:\d{1,5}$")
_MONITOR_EVENTS: Final = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


_MAX_SOCKETS: Final = 16384


def _context() -> zmq.Context[zmq.Socket[bytes]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    # libzmq's default of 1023 sockets per context is about 340 connections. The limit
    # sizes the context when it creates its first socket; set later, it changes nothing.
    if ctx.get(zmq.MAX_SOCKETS) < _MAX_SOCKETS:
        ctx.set(zmq.MAX_SOCKETS, _MAX_SOCKETS)
    return ctx


class ZmqTransport:
    """Creates ROUTER listeners and per-peer DEALER connections."""

    def __init__(
        self,
        *,
        max_message: int = 16 * 1024 * 1024,
        heartbeat_interval: float = 0.5,
        heartbeat_timeout: float = 1.5,
        handshake_timeout: float = 5.0,
        high_water_mark: int = 10_000,
        curve_secret: bytes | None = None,
        key_id: str = "",
    ) -> None:
        """``curve_secret`` (32 bytes, from ``meshrpc.security``) makes every socket use
        CurveZMQ with the mesh keypair; servers admit only clients holding it (ZAP)."""
        self._curve: tuple[bytes, bytes] | None = None
        self._zap_domain = ""
        if curve_secret is not None:
            if len(curve_secret) != 32:
                raise ConfigError("the CurveZMQ secret key must be 32 bytes")
            if not zmq.has("curve"):
                raise ConfigError("this libzmq was built without CURVE; a secret needs it")
            secret_z85 = z85.encode(curve_secret)
            self._curve = (secret_z85, zmq.curve_public(secret_z85))
            self._zap_domain = f"meshrpc-{key_id or 'mesh'}"
        self._max_message = max_message
        self._heartbeat_ms = int(heartbeat_interval * 1000)
        self._heartbeat_timeout_ms = int(heartbeat_timeout * 1000)
        self._handshake_ms = int(handshake_timeout * 1000)
        self._hwm = high_water_mark
        self.dropped_frames = 0

    async def listen(
        self,
        task_group: TaskGroup,
        host: str,
        port: int,
        on_frame: OnPeerFrame,
        on_unsent: OnPeerUnsent | None = None,
    ) -> ZmqListener:
        """Bind a ROUTER on ``host:port`` (0: any free port).

        Raises:
            ConfigError: the address cannot be bound.
        """
        sock = self._socket(zmq.ROUTER, server=True)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        endpoint = self._bind(sock, host, port)
        listener = ZmqListener(sock, endpoint, on_frame, self, on_unsent)
        listener._pump.start(task_group, f"meshrpc-listen {endpoint}")
        return listener

    async def connect(
        self,
        task_group: TaskGroup,
        endpoint: str,
        on_frame: OnFrame,
        on_state: OnState,
        on_unsent: OnUnsent | None = None,
        *,
        batch: bool = False,
    ) -> ZmqConnection:
        """Connect a DEALER to ``endpoint``; ``on_state`` says when it is up or lost.

        ``batch``: the responder takes several frames per message (it says so in its
        advertisement), so calls of one loop turn may go out together.

        Raises:
            ConfigError: the endpoint is malformed.
        """
        sock, monitor = self._connect(zmq.DEALER, endpoint, immediate=True)
        conn = ZmqConnection(
            sock, monitor, endpoint, on_frame, on_state, self, on_unsent, batch=batch
        )
        conn._pump.start(task_group, f"meshrpc-conn {endpoint}")
        conn._monitor.start(task_group, f"meshrpc-monitor {endpoint}")
        return conn

    async def publish_on(
        self, task_group: TaskGroup, host: str, port: int, on_subscription: OnSubscription
    ) -> ZmqEventSource:
        """Bind an XPUB on ``host:port``; subscriptions are reported to ``on_subscription``.

        Raises:
            ConfigError: the address cannot be bound.
        """
        sock = self._socket(zmq.XPUB, server=True)
        # Every (un)subscription, duplicates included, and unsubscriptions for all of a
        # departed subscriber's prefixes: that is how a publisher knows who is live.
        sock.setsockopt(zmq.XPUB_VERBOSER, 1)
        endpoint = self._bind(sock, host, port)
        source = ZmqEventSource(sock, endpoint, on_subscription, self)
        source._pump.start(task_group, f"meshrpc-publish {endpoint}")
        return source

    async def subscribe_to(
        self, task_group: TaskGroup, endpoint: str, on_event: OnEvent, on_state: OnState
    ) -> ZmqSubscription:
        """Connect a SUB to ``endpoint``; ``on_state`` says when it is up or lost.

        Raises:
            ConfigError: the endpoint is malformed.
        """
        sock, monitor = self._connect(zmq.SUB, endpoint)
        sub = ZmqSubscription(sock, monitor, endpoint, on_event, on_state, self)
        sub._pump.start(task_group, f"meshrpc-sub {endpoint}")
        sub._monitor.start(task_group, f"meshrpc-sub-monitor {endpoint}")
        return sub

    def _bind(self, sock: zmq.Socket[bytes], host: str, port: int) -> str:
        address = f"tcp://{host}:{port if port else '*'}"
        try:
            sock.bind(address)
        except zmq.ZMQError as exc:
            self.release(sock)
            raise ConfigError(f"cannot listen on {address}: {exc}") from None
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def release(self, sock: zmq.Socket[bytes]) -> None:
        """Close a socket made by :meth:`_socket` (and let go of the ZAP handler)."""
        if not sock.closed:
            sock.close(linger=0)
        _ZAP.forget(sock)

    def _connect(
        self, kind: int, endpoint: str, *, immediate: bool = False
    ) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        if not _ENDPOINT_RE.match(endpoint):
            raise ConfigError(f"endpoint {endpoint!r} is not tcp://host:port")
        sock = self._socket(kind)
        if immediate:
            sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        try:
            monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        except zmq.ZMQError as exc:
            self.release(sock)
            raise ConfigError(
                f"cannot monitor a connection to {endpoint}: {exc} (raise `ulimit -n`; "
                f"this process may hold {_MAX_SOCKETS} sockets, three per connection)"
            ) from None
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            sock.disable_monitor()
            monitor.close(linger=0)
            sock.close(linger=0)
            raise ConfigError(f"cannot connect to {endpoint}: {exc}") from None
        return sock, monitor

    def _socket(self, kind: int, *, server: bool = False) -> zmq.Socket[bytes]:
        try:
            sock: zmq.Socket[bytes] = _context().socket(kind)
        except zmq.ZMQError as exc:
            # EMFILE: the context's MAX_SOCKETS or the process's open-file limit. Each
            # connection takes three sockets (a DEALER or SUB, and its monitor's pair).
            raise ConfigError(
                f"cannot create a ZeroMQ socket: {exc} (raise `ulimit -n`; this process "
                f"may hold {_MAX_SOCKETS} sockets, three per connection)"
            ) from None
        if self._curve is not None:
            secret, public = self._curve
            sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
            if server:
                sock.setsockopt(zmq.CURVE_SERVER, 1)
                # Without a ZAP domain and handler a CURVE server admits any client
                # key; with them, only clients holding the mesh key get in.
                sock.setsockopt(zmq.ZAP_DOMAIN, self._zap_domain.encode())
                sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
                _ZAP.acquire(sock, self._zap_domain, public)
            else:
                sock.setsockopt(zmq.CURVE_SERVERKEY, public)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_message + 1024)
        sock.setsockopt(zmq.SNDHWM, self._hwm)
        sock.setsockopt(zmq.RCVHWM, self._hwm)
        sock.setsockopt(zmq.HANDSHAKE_IVL, self._handshake_ms)
        if not server:
            # Only the connecting side pings: the bound side answers PINGs by itself,
            # and the TTL each PING carries makes it drop a client it stops hearing
            # from. Pinging from both ends doubled an idle connection's traffic.
            sock.setsockopt(zmq.HEARTBEAT_IVL, self._heartbeat_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, self._heartbeat_timeout_ms)
            sock.setsockopt(zmq.HEARTBEAT_TTL, self._heartbeat_timeout_ms)
        return sock


class _ZapHandler:
    """The process's ZAP handler: admits a CURVE client to a mesh's server sockets only
    if its public key is that mesh's. One authenticator thread per process (ZAP is bound
    once per ZeroMQ context), started with the first secret server socket and stopped
    with the last; a lock guards it because components may live on several threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._auth: ThreadAuthenticator | None = None
        self._keys: dict[str, bytes] = {}  # ZAP domain -> the mesh public key (Z85)
        self._sockets: dict[int, str] = {}  # id(socket) -> its domain, while open
        self.refused: dict[str, int] = {}

    def acquire(self, sock: zmq.Socket[bytes], domain: str, public: bytes) -> None:
        with self._lock:
            if self._auth is None:
                auth = ThreadAuthenticator(_context(), log=_zap_log)
                auth.start()
                auth.thread.name = "meshrpc-zap"
                self._auth = auth
            self._keys[domain] = public
            self._auth.configure_curve_callback(domain, self)
            self._sockets[id(sock)] = domain

    def forget(self, sock: zmq.Socket[bytes]) -> None:
        with self._lock:
            domain = self._sockets.pop(id(sock), None)
            if domain is None:
                return
            if domain not in self._sockets.values():
                self._keys.pop(domain, None)
                if self._auth is not None:
                    self._auth.credentials_providers.pop(domain, None)
            if not self._sockets and self._auth is not None:
                auth, self._auth = self._auth, None
                auth.stop()

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook, called on the authenticator thread."""
        expected = self._keys.get(domain)
        if expected is not None and hmac.compare_digest(key, expected):
            return True
        self.refused[domain] = self.refused.get(domain, 0) + 1
        logger.info("refused a connection with a foreign key to %s", domain)
        return False


_ZAP = _ZapHandler()


class _Pump:
    """Owns one socket: hands received frames to ``handle``, closes the socket at the end.

    On asyncio the socket's descriptor gets a persistent reader callback (a task that
    re-registers on every wake-up costs several times more per message); on trio one
    task waits with ``wait_readable``.
    """

    __slots__ = (
        "_busy",
        "_fd",
        "_scheduled",
        "closed",
        "handle",
        "loop",
        "routed",
        "scope",
        "sock",
        "soon",
        "streaming",
    )

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        handle: Callable[[list[bytes]], None],
        *,
        streaming: bool = False,
        routed: bool = False,
    ) -> None:
        self.sock = sock
        self.handle = handle
        self.routed = routed
        # Streaming sockets (SUB) usually have many frames per wake-up: receiving until
        # zmq.Again costs one exception per batch instead of an EVENTS check per frame.
        self.streaming = streaming
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]
        self._busy = False
        self._scheduled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        # Runs a callback soon after the current one, on the socket's event loop: where
        # batches are flushed at the end of a loop turn.
        self.soon: Callable[[Callable[[], None]], object] | None = None
        # Created here, not in run(), so aclose() works even before the task started.
        self.scope = anyio.CancelScope()
        self.closed = anyio.Event()

    def start(self, task_group: TaskGroup, name: str) -> None:
        if current_backend() == "asyncio":
            self.loop = asyncio.get_running_loop()
            self.soon = self.loop.call_soon
            self.loop.add_reader(self._fd, self._on_readable)
            self._schedule()  # frames may be queued before the first edge
        else:
            import trio

            self.soon = trio.lowlevel.current_trio_token().run_sync_soon
            task_group.start_soon(self._run, name=name)

    async def _run(self) -> None:
        try:
            with self.scope:
                while True:
                    if self.drain(_BATCH):
                        await anyio.lowlevel.checkpoint()
                    else:
                        await anyio.wait_readable(self._fd)
        finally:
            self.sock.close()  # with the LINGER option set on the socket
            _ZAP.forget(self.sock)
            self.closed.set()

    def _on_readable(self) -> None:
        self._scheduled = False
        if self.drain(_BATCH):
            self._schedule()  # more queued: continue after other callbacks had a turn

    def _schedule(self) -> None:
        if not self._scheduled and self.loop is not None:
            self._scheduled = True
            self.loop.call_soon(self._on_readable)

    def drain(self, limit: int | None = None) -> bool:
        """Handle queued frames; ``True`` when ``limit`` stopped it with more waiting."""
        if self._busy or self.sock.closed:
            return False  # a callback sent and re-entered us; the outer loop continues
        self._busy = True
        sock = self.sock
        handled = 0
        try:
            # Polling EVENTS is cheaper than letting recv raise zmq.Again at the end,
            # unless many frames are expected per wake-up.
            while self.streaming or _has_input(sock):
                if limit is not None and handled >= limit:
                    return True
                try:
                    if self.routed:
                        # A ROUTER's routing id is always followed by a frame: one
                        # RCVMORE check fewer per message.
                        frames = [_raw_recv(sock, _NOBLOCK), _raw_recv(sock, _NOBLOCK)]
                    else:
                        frames = [_raw_recv(sock, _NOBLOCK)]
                    while _raw_get(sock, _RCVMORE):
                        frames.append(_raw_recv(sock, _NOBLOCK))
                except zmq.Again:
                    return False
                handled += 1
                try:
                    self.handle(frames)
                except Exception:  # a bug handling one frame must not stop the socket
                    logger.exception("error handling a frame; it was dropped")
            return False
        finally:
            self._busy = False

    def after_send(self) -> None:
        # The send may have consumed the descriptor's edge for frames already queued.
        if self.loop is not None:
            # One EVENTS check per loop turn, however many sends: it runs while the
            # caller waits for its reply anyway, so it costs no latency.
            self._schedule()
        elif not self._busy and _has_input(self.sock):
            self.drain()

    async def aclose(self, linger: float = 0.0) -> None:
        if linger and not self.sock.closed:
            self.sock.setsockopt(zmq.LINGER, int(linger * 1000))
        if self.loop is not None:
            if not self.sock.closed:
                self.loop.remove_reader(self._fd)
                self.sock.close()
                _ZAP.forget(self.sock)
            self.closed.set()
            return
        self.scope.cancel()
        await self.closed.wait()


def _has_input(sock: zmq.Socket[bytes]) -> bool:
    events: int = _raw_get(sock, _EVENTS)  # type: ignore[assignment]
    return bool(events & _POLLIN)


class ZmqListener:
    """A bound ROUTER; frames arrive as ``(peer_id, frame)``.

    Replies sent in one loop turn go out together, one multipart message per
    requester: every message costs libzmq a wake-up of its I/O thread when that thread
    is idle, so a burst of replies costs one instead of one each. Only requesters that
    sent several frames in a message themselves get batches (an older one would drop
    them); the others get one frame per message.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        endpoint: str,
        on_frame: OnPeerFrame,
        transport: ZmqTransport,
        on_unsent: OnPeerUnsent | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._on_frame = on_frame
        self._on_unsent = on_unsent
        self._transport = transport
        self._pump = _Pump(sock, self._handle, routed=True)
        # peer -> frames waiting for the end of this loop turn; None: no turn open.
        self._out: dict[bytes, list[bytes]] | None = None
        self._out_bytes = 0
        self._batching: dict[bytes, None] = {}  # peers known to take batches, oldest first

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def send(self, peer_id: bytes, frame: bytes) -> bool:
        """Queue ``frame`` for ``peer_id``; ``False`` if the peer is gone or not reading.

        Frames to a batching peer after the first of a loop turn are batched: if their
        batch cannot be sent at the end of the turn, ``on_unsent`` reports them.
        """
        out = self._out
        if out is not None and peer_id in self._batching:
            batch = out.get(peer_id)
            if batch is None:
                out[peer_id] = [frame]
            else:
                batch.append(frame)
                if len(batch) >= _OUT_FRAMES:
                    self._send_batch(peer_id, out.pop(peer_id))
                    self._pump.after_send()
            self._out_bytes += len(frame)
            if self._out_bytes >= _OUT_BYTES:
                self._flush_now()
                self._pump.after_send()
            return True
        sock = self._pump.sock
        try:
            # Two plain sends: send_multipart's generality costs more than the send.
            _raw_send(sock, peer_id, _SEND_MORE)
            _raw_send(sock, frame, _NOBLOCK)
        except zmq.ZMQError as exc:
            # EHOSTUNREACH: the requester disconnected; EAGAIN: it stopped reading and
            # its queue is full. Either way the reply cannot be delivered now.
            logger.debug("reply to %r not sent: %s", peer_id, exc)
            return False
        soon = self._pump.soon
        if out is None and soon is not None:
            self._out = {}
            soon(self._flush)
        self._pump.after_send()
        return True

    def _flush(self) -> None:
        out, self._out, self._out_bytes = self._out, None, 0
        if out:
            try:
                for peer_id, frames in out.items():
                    self._send_batch(peer_id, frames)
                self._pump.after_send()
            except Exception:  # on trio an escaping error would end the whole run
                logger.exception("flushing replies on %s failed", self._endpoint)

    def _flush_now(self) -> None:
        out = self._out
        if out:
            self._out, self._out_bytes = {}, 0
            for peer_id, frames in out.items():
                self._send_batch(peer_id, frames)

    def _send_batch(self, peer_id: bytes, frames: list[bytes]) -> None:
        sock = self._pump.sock
        try:
            _raw_send(sock, peer_id, _SEND_MORE)
            last = len(frames) - 1
            for i, frame in enumerate(frames):
                _raw_send(sock, frame, _NOBLOCK if i == last else _SEND_MORE)
        except zmq.ZMQError as exc:
            # A ROUTER fails only on the routing id (a requester gone, or its queue
            # full): nothing of the batch was queued.
            logger.debug("%d replies to %r not sent: %s", len(frames), peer_id, exc)
            if self._on_unsent is not None:
                self._on_unsent(peer_id, frames)

    async def aclose(self, *, linger: float = 0.0) -> None:
        self._flush_now()
        self._out = None
        await self._pump.aclose(linger)

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self._transport.dropped_frames += 1
            logger.debug("dropped a message of %d frames (expected 2 or more)", len(frames))
            return
        peer_id, on_frame = frames[0], self._on_frame
        if len(frames) > 2 and peer_id not in self._batching:
            self._batching[peer_id] = None
            if len(self._batching) > _MAX_BATCHING_PEERS:
                del self._batching[next(iter(self._batching))]
        for i in range(1, len(frames)):
            on_frame(peer_id, frames[i])


class _Monitor:
    """Follows a connecting socket's monitor: ``up`` after each handshake, ``down`` on loss."""

    def __init__(self, sock: zmq.Socket[bytes], endpoint: str, on_state: OnState) -> None:
        self.up = False
        self._endpoint = endpoint
        self._on_state = on_state
        self.pump = _Pump(sock, self._handle)

    def start(self, task_group: TaskGroup, name: str) -> None:
        self.pump.start(task_group, name)

    def _handle(self, frames: list[bytes]) -> None:
        try:
            event = parse_monitor_message(frames)
        except Exception as exc:  # a malformed monitor frame would be a libzmq bug
            logger.warning("unreadable monitor event from %s: %r", self._endpoint, exc)
            return
        state: PeerState | None = None
        if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            state = "up"
        elif self.up:
            state = "down"
        if state is None or (state == "up") == self.up:
            return
        self.up = state == "up"
        self._on_state(state)

    async def aclose(self, owner: zmq.Socket[bytes]) -> None:
        self.up = False
        if not owner.closed:
            try:
                owner.disable_monitor()
            except zmq.ZMQError as exc:
                logger.debug("disable_monitor on %s: %s", self._endpoint, exc)
        await self.pump.aclose()


class ZmqConnection:
    """A DEALER connected to one responder, with a monitor for its handshake and loss.

    To a responder that takes batches, calls sent in one loop turn after the first go
    out together at its end as one multipart message.
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        monitor: zmq.Socket[bytes],
        endpoint: str,
        on_frame: OnFrame,
        on_state: OnState,
        transport: ZmqTransport,
        on_unsent: OnUnsent | None = None,
        *,
        batch: bool = False,
    ) -> None:
        self._endpoint = endpoint
        self._on_frame = on_frame
        self._on_state = on_state
        self._on_unsent = on_unsent
        self._transport = transport
        self._batch = batch
        self._pump = _Pump(sock, self._handle)
        self._monitor = _Monitor(monitor, endpoint, self._state_changed)
        self._out: list[bytes] | None = None  # waiting for the end of this loop turn
        self._out_bytes = 0

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def is_up(self) -> bool:
        return self._monitor.up

    def send(self, frame: bytes) -> bool:
        """Queue ``frame``; ``False`` when it was provably not sent.

        Frames after the first of a loop turn may be batched: if their batch cannot be
        sent at the end of the turn, ``on_unsent`` reports them (not sent either).
        """
        if not self._monitor.up:
            return False
        out = self._out
        if out is not None:
            out.append(frame)
            self._out_bytes += len(frame)
            if len(out) >= _OUT_FRAMES or self._out_bytes >= _OUT_BYTES:
                self._out, self._out_bytes = [], 0
                self._send_batch(out)
                self._pump.after_send()
            return True
        try:
            _raw_send(self._pump.sock, frame, _NOBLOCK)
        except zmq.ZMQError as exc:
            # With IMMEDIATE, EAGAIN means no completed connection (or a full queue):
            # the frame was not queued anywhere, so the call can safely go elsewhere.
            logger.debug("send to %s refused: %s", self._endpoint, exc)
            return False
        soon = self._pump.soon
        if self._batch and soon is not None:
            self._out = []
            soon(self._flush)
        self._pump.after_send()
        return True

    def _flush(self) -> None:
        out, self._out, self._out_bytes = self._out, None, 0
        if out:
            try:
                self._send_batch(out)
                self._pump.after_send()
            except Exception:  # on trio an escaping error would end the whole run
                logger.exception("flushing calls to %s failed", self._endpoint)

    def _send_batch(self, frames: list[bytes]) -> None:
        sock = self._pump.sock
        sent = 0
        try:
            last = len(frames) - 1
            for frame in frames:
                _raw_send(sock, frame, _NOBLOCK if sent == last else _SEND_MORE)
                sent += 1
        except zmq.ZMQError as exc:
            # libzmq queues a multipart message whole or not at all: on a failure the
            # parts already written are discarded with it, so none of these went out.
            logger.debug("%d frames to %s not sent: %s", len(frames), self._endpoint, exc)
            if sent:
                # Failing mid-message leaves the DEALER discarding until a final part;
                # without one it would also discard the next frame sent, silently.
                try:
                    _raw_send(sock, b"", _NOBLOCK)
                except zmq.ZMQError as end_exc:  # socket gone: nothing left to discard
                    logger.debug("ending a failed batch to %s: %s", self._endpoint, end_exc)
            if self._on_unsent is not None:
                self._on_unsent(frames)

    def _state_changed(self, state: PeerState) -> None:
        if state == "down":
            # Held back in this turn and not sent: report them before the loss, so the
            # owner sends them elsewhere rather than failing them as possibly run (and
            # they cannot leave later on a connection that came back meanwhile).
            out, self._out = self._out, ([] if self._out is not None else None)
            self._out_bytes = 0
            if out and self._on_unsent is not None:
                self._on_unsent(out)
        self._on_state(state)

    async def aclose(self) -> None:
        out, self._out = self._out, None
        if out and self._on_unsent is not None:
            self._on_unsent(out)  # discarded with the connection: never sent
        await self._monitor.aclose(self._pump.sock)
        await self._pump.aclose()

    def _handle(self, frames: list[bytes]) -> None:
        on_frame = self._on_frame
        for frame in frames:
            on_frame(frame)


class ZmqEventSource:
    """A bound XPUB: fans events out and reports subscriptions."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        endpoint: str,
        on_subscription: OnSubscription,
        transport: ZmqTransport,
    ) -> None:
        self._endpoint = endpoint
        self._on_subscription = on_subscription
        self._transport = transport
        self._pump = _Pump(sock, self._handle)

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def send(self, topic: bytes, frame: bytes) -> None:
        """Queue ``frame`` under ``topic``; subscribers with full queues miss it."""
        sock = self._pump.sock
        _raw_send(sock, topic, _SEND_MORE)
        _raw_send(sock, frame, _NOBLOCK)
        self._pump.after_send()

    async def aclose(self) -> None:
        await self._pump.aclose()

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 1 or not frames[0] or frames[0][0] not in (0, 1):
            self._transport.dropped_frames += 1
            return
        self._on_subscription(frames[0][0] == 1, frames[0][1:])


class ZmqSubscription:
    """A SUB connected to one publisher, with a monitor for its handshake and loss."""

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        monitor: zmq.Socket[bytes],
        endpoint: str,
        on_event: OnEvent,
        on_state: OnState,
        transport: ZmqTransport,
    ) -> None:
        self._endpoint = endpoint
        self._on_event = on_event
        self._transport = transport
        self._pump = _Pump(sock, self._handle, streaming=True)
        self._monitor = _Monitor(monitor, endpoint, on_state)

    @property
    def endpoint(self) -> str:
        return self._endpoint

    @property
    def is_up(self) -> bool:
        return self._monitor.up

    def subscribe(self, prefix: bytes) -> None:
        """Receive frames whose topic starts with ``prefix``."""
        self._pump.sock.setsockopt(zmq.SUBSCRIBE, prefix)
        self._pump.after_send()

    def unsubscribe(self, prefix: bytes) -> None:
        """Stop one earlier :meth:`subscribe` of ``prefix``."""
        self._pump.sock.setsockopt(zmq.UNSUBSCRIBE, prefix)
        self._pump.after_send()

    async def aclose(self) -> None:
        await self._monitor.aclose(self._pump.sock)
        await self._pump.aclose()

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self._transport.dropped_frames += 1
            logger.debug("dropped a message of %d frames from %s", len(frames), self._endpoint)
            return
        self._on_event(frames[0], frames[1])
