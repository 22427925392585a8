"""Static discovery: seed endpoints instead of multicast, membership by gossip.

``MESHRPC_DISCOVERY=static`` with ``MESHRPC_PEERS=tcp://10.0.0.5:7000,...`` (responder
endpoints on fixed ports). Every ``interval`` seconds this process's agent connects to
each seed and to every responder it has learned of, and sends INFO_REQUEST over that
connection: it hands over the advertisements registered in this process (and the ones
it withdrew), and the responder answers INFO with its own advertisement and every one
it knows, each with its age (how long ago someone heard of it from its owner). So one
live seed is enough to learn the whole mesh, responders are re-checked directly, and a
member that stops being heard of, directly or through others, is dropped after ``ttl``.
Ages travel with the gossip, so members cannot keep a dead one alive by repeating it
to each other; a withdrawal travels as a tombstone for ``ttl``.

The agent runs its own event loop in a thread (one per seed list, key and process,
shared by the components), using the same transport as the components: with a mesh
secret, the gossip is encrypted and only members can take part.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Final

import anyio
from anyio.abc import TaskGroup
from anyio.from_thread import BlockingPortal, start_blocking_portal

from meshrpc._protocol import codec
from meshrpc._protocol.advertisement import Advertisement
from meshrpc._protocol.envelope import Draining, Gossip, Info, InfoRequest
from meshrpc.discovery._agent import AgentDiscovery, SharedAgents
from meshrpc.discovery._bridge import Hub, roundtrip
from meshrpc.errors import ConfigError, ProtocolError
from meshrpc.transport.base import Connection, PeerState, Transport

__all__ = ["StaticDiscovery"]

logger = logging.getLogger("meshrpc.discovery.static")

_MAX_CONNECTIONS: Final = 256  # responders checked directly; the rest only by gossip


@dataclass
class _State:
    """What the agent knows, shared with the responders of this process (locked)."""

    ttl: float
    hub: Hub = field(default_factory=lambda: Hub(counters=("malformed", "rounds", "answers")))
    lock: threading.Lock = field(default_factory=threading.Lock)
    own: dict[str, Advertisement] = field(default_factory=dict)
    heard: dict[str, float] = field(default_factory=dict)  # id -> when its owner was heard
    tombstones: dict[str, float] = field(default_factory=dict)  # id -> when withdrawn

    def accept(self, gossip: Gossip, now: float) -> None:
        """Take in one advertisement heard ``gossip.age_ms`` ago from its owner."""
        try:
            ad = roundtrip(gossip.props)
        except ProtocolError as exc:
            self.hub.count("malformed")
            logger.debug("ignoring a malformed advertisement in gossip: %s", exc)
            return
        heard = now - gossip.age_ms / 1000.0
        key = ad.instance_id
        with self.lock:
            if key in self.own or now - heard > self.ttl:
                return
            withdrawn = self.tombstones.get(key)
            if withdrawn is not None and heard <= withdrawn:
                return  # older news than its withdrawal
            self.heard[key] = max(heard, self.heard.get(key, heard))
        self.hub.put(key, ad)

    def withdraw(self, key: str, when: float) -> None:
        """``key`` withdrew at ``when``: forget it, unless heard of since."""
        with self.lock:
            if key in self.own or self.heard.get(key, -1.0) > when:
                return
            self.tombstones[key] = max(when, self.tombstones.get(key, when))
            self.heard.pop(key, None)
        self.hub.remove(key)

    def withdrawals(self, now: float) -> tuple[tuple[str, int], ...]:
        """Recent withdrawals with their ages, for INFO answers."""
        with self.lock:
            return tuple((k, int((now - t) * 1000)) for k, t in self.tombstones.items())

    def expire(self, now: float) -> None:
        with self.lock:
            stale = [
                k
                for k in self.hub.snapshot()
                if k not in self.own and now - self.heard.get(k, now) > self.ttl
            ]
            for key in stale:
                self.heard.pop(key, None)
            for key in [k for k, t in self.tombstones.items() if now - t > self.ttl]:
                del self.tombstones[key]
        for key in stale:
            self.hub.remove(key)

    def gossip(self, now: float) -> tuple[Gossip, ...]:
        """Everything known, each with its age."""
        with self.lock:
            own = set(self.own)
            heard = dict(self.heard)
        items = []
        for key, ad in self.hub.snapshot().items():
            age = 0.0 if key in own else max(0.0, now - heard.get(key, now))
            items.append(Gossip(ad.to_properties(), int(age * 1000)))
        return tuple(items)


class _Agent:
    """Polls the seeds and known responders from its own event loop thread."""

    def __init__(
        self,
        seeds: tuple[str, ...],
        transport_factory: Callable[[], Transport],
        *,
        interval: float,
        ttl: float,
    ) -> None:
        self.seeds = seeds
        self.interval = interval
        self.state = _State(ttl)
        self._transport_factory = transport_factory
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._kick: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._done = threading.Event()
        self._gone: dict[str, float] = {}  # withdrawn here: tell the others for a while
        self._conns: dict[str, Connection] = {}
        self._nonces = itertools.count(1)

    @property
    def hub(self) -> Hub:
        return self.state.hub

    def start(self) -> None:
        self._portal_cm = start_blocking_portal("asyncio")
        self._portal = self._portal_cm.__enter__()
        self._portal.start_task_soon(self._main)

    def stop(self) -> None:
        if self._portal is None or self._portal_cm is None:
            return
        self._portal.call(self._cancel)
        self._done.wait(10)
        self._portal_cm.__exit__(None, None, None)
        self._portal = None

    def register(self, ad: Advertisement) -> None:
        with self.state.lock:
            self.state.own[ad.instance_id] = ad
            self._gone.pop(ad.instance_id, None)
            self.state.tombstones.pop(ad.instance_id, None)
        self.state.hub.put(ad.instance_id, ad)
        self._poke()

    def unregister(self, key: str) -> None:
        with self.state.lock:
            if self.state.own.pop(key, None) is None:
                return
            self._gone[key] = time.monotonic()
        self.state.withdraw(key, time.monotonic())
        self._poke()

    def _poke(self) -> None:
        # Tell the others now rather than at the next round.
        if self._portal is not None:
            self._portal.call(self._wake)

    def _wake(self) -> None:
        if self._kick is not None:
            self._kick.set()

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _main(self) -> None:
        transport = self._transport_factory()
        conns = self._conns
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                async with anyio.create_task_group() as tg:
                    while True:
                        self._kick = anyio.Event()
                        await self._round(tg, transport, conns)
                        with anyio.move_on_after(self.interval):
                            await self._kick.wait()
        finally:
            with anyio.CancelScope(shield=True):
                for conn in conns.values():
                    await conn.aclose()
            self._done.set()

    async def _round(
        self, tg: TaskGroup, transport: Transport, conns: dict[str, Connection]
    ) -> None:
        now = time.monotonic()
        state = self.state
        state.expire(now)
        state.hub.count("rounds")
        targets = list(self.seeds)
        for ad in state.hub.snapshot().values():
            direct = ad.kind == "responder" and ad.endpoint and ad.instance_id not in state.own
            if direct and ad.endpoint not in targets and len(targets) < _MAX_CONNECTIONS:
                targets.append(ad.endpoint)
        for endpoint in [e for e in conns if e not in targets]:
            await conns.pop(endpoint).aclose()
        for endpoint in targets:
            if endpoint not in conns:
                try:
                    conns[endpoint] = await transport.connect(
                        tg,
                        endpoint,
                        partial(self._on_frame, endpoint),
                        partial(self._on_state, endpoint),
                    )
                except ConfigError as exc:
                    logger.warning("static discovery cannot use %s: %s", endpoint, exc)
        frame = self._request(now)
        for conn in conns.values():
            conn.send(frame)  # not up yet: asked as soon as it is (_on_state)

    def _request(self, now: float) -> bytes:
        state = self.state
        with state.lock:
            own = tuple(Gossip(ad.to_properties(), 0) for ad in state.own.values())
            self._gone = {k: t for k, t in self._gone.items() if now - t <= state.ttl}
            gone = tuple(self._gone)
        return codec.encode(InfoRequest(next(self._nonces), own, gone))

    def _on_state(self, endpoint: str, peer_state: PeerState) -> None:
        # Ask a new (or re-established) connection at once rather than at the next
        # round: that is most of the time a joining process waits.
        conn = self._conns.get(endpoint)
        if peer_state == "up" and conn is not None:
            conn.send(self._request(time.monotonic()))

    def _on_frame(self, endpoint: str, frame: bytes) -> None:
        try:
            message = codec.decode(frame)
        except ProtocolError as exc:
            self.state.hub.count("malformed")
            logger.debug("malformed frame from %s: %s", endpoint, exc)
            return
        if isinstance(message, Draining):
            # The responder there is leaving: whoever it told (maybe nobody, if its
            # seeds are down) or not, we know now.
            now = time.monotonic()
            for key, ad in self.state.hub.snapshot().items():
                if ad.endpoint == endpoint and key not in self.state.own:
                    self.state.withdraw(key, now)
            return
        if not isinstance(message, Info):
            return  # a PONG or an error reply from a peer that does not gossip
        self.state.hub.count("answers")
        now = time.monotonic()
        for item in (*message.own, *message.known):
            self.state.accept(item, now)
        for key, age_ms in message.gone:
            self.state.withdraw(key, now - age_ms / 1000.0)


class StaticDiscovery(AgentDiscovery[_Agent]):
    """A :class:`~meshrpc.discovery.base.Discovery` from seed endpoints (see the module
    docstring). ``transport_factory`` makes the transport the gossip runs on (the
    components' own kind, with their secret); ``key`` tells agents of different meshes
    in one process apart."""

    _shared: SharedAgents[_Agent] = SharedAgents()
    _closed_message = "this StaticDiscovery was closed; create a new one"

    def __init__(
        self,
        seeds: Sequence[str],
        transport_factory: Callable[[], Transport],
        *,
        key: str = "",
        interval: float = 1.0,
        ttl: float = 5.0,
    ) -> None:
        if not seeds:
            raise ConfigError(
                "static discovery needs seed endpoints: MESHRPC_PEERS=tcp://host:port,..."
            )
        if not 0 < interval < ttl:
            raise ConfigError("the static discovery interval must be shorter than its TTL")
        self.seeds = tuple(seeds)
        super().__init__((self.seeds, key, interval, ttl))
        self._factory = transport_factory
        self._interval = interval
        self._ttl = ttl

    def _make_agent(self) -> _Agent:
        return _Agent(self.seeds, self._factory, interval=self._interval, ttl=self._ttl)

    def gossip(self, request: InfoRequest, own: Advertisement | None) -> Info:
        """A responder's answer to INFO_REQUEST: take in what the asker brought, and
        tell it who we are and whom we know (called on the responder's event loop)."""
        state = self._need().state
        now = time.monotonic()
        for item in request.ads:
            state.accept(Gossip(item.props, 0), now)  # from its owner, directly
        for key in request.gone:
            state.withdraw(key, now)
        mine = (Gossip(own.to_properties(), 0),) if own is not None else ()
        return Info(request.nonce, mine, state.gossip(now), state.withdrawals(now))
