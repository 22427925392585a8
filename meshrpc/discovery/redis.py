"""Discovery through a Redis server: for networks where multicast does not pass.

The only module that imports ``redis``. Data model (prefix ``meshrpc:``)::

    meshrpc:ad:<instance id>   the advertisement's TXT properties as JSON, with a TTL
    meshrpc:ads                sorted set: instance id -> expiry time (for listing)
    meshrpc:changes            pub/sub channel: "+<id>" registered, "-<id>" withdrawn

One agent thread per Redis URL and process (shared by every component, refcounted)
refreshes this process's registrations every ``heartbeat`` seconds (TTL ``ttl``),
listens to the channel, and re-reads the whole set every ``resync`` seconds. A crashed
member's key expires, so it is removed within ``ttl`` plus a resync; a clean
unregister is seen at once.

Redis being unavailable never removes anything: the watchers keep what they know,
so calls between known peers go on; registrations are retried until Redis answers
again (also after a restart that lost its data). After reconnecting, absence is only
believed once every member had a full TTL to re-register.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import suppress
from typing import Any, Final

import redis

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.discovery._agent import AgentDiscovery, SharedAgents
from meshrpc.discovery._bridge import Hub, roundtrip
from meshrpc.errors import ConfigError, ProtocolError

__all__ = ["RedisDiscovery"]

logger = logging.getLogger("meshrpc.discovery.redis")

PREFIX: Final = "meshrpc:"
INDEX: Final = PREFIX + "ads"
CHANNEL: Final = PREFIX + "changes"
_MAX_VALUE: Final = 64 * 1024  # bytes of one stored advertisement


def _key(instance_id: str) -> str:
    return f"{PREFIX}ad:{instance_id}"


class _Agent:
    """This process's link to one Redis server (a thread; see the module docstring)."""

    def __init__(self, url: str, *, ttl: float, heartbeat: float, resync: float) -> None:
        self.url = url
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.resync = resync
        self.hub = Hub(counters=("malformed", "redis_errors", "reconnects"))
        self._own: dict[str, dict[str, str]] = {}  # instance id -> TXT properties
        self._withdrawn: dict[str, float] = {}  # own ids unregistered, and when
        self._own_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = redis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
        )
        self._connected_since: float | None = None
        self._last_seen: dict[str, float] = {}
        self.connected = threading.Event()

    # -- called from components (any thread) --------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"meshrpc-redis {self.url}")
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.close()

    def register(self, ad: Advertisement) -> None:
        props = ad.to_properties()
        with self._own_lock:
            self._own[ad.instance_id] = props
        self.hub.put(ad.instance_id, ad)  # local members see it even without Redis
        try:
            self._store(ad.instance_id, props)
            self._client.publish(CHANNEL, "+" + ad.instance_id)
        except redis.RedisError as exc:
            self._failed(exc, "registering")  # the heartbeat keeps trying

    def unregister(self, instance_id: str) -> None:
        with self._own_lock:
            known = self._own.pop(instance_id, None)
            if known is not None:
                now = time.monotonic()
                self._withdrawn = {k: t for k, t in self._withdrawn.items() if now - t < self.ttl}
                self._withdrawn[instance_id] = now
        if known is None:
            return
        self.hub.remove(instance_id)
        try:
            pipe = self._client.pipeline()
            pipe.delete(_key(instance_id))
            pipe.zrem(INDEX, instance_id)
            pipe.publish(CHANNEL, "-" + instance_id)
            pipe.execute()
        except redis.RedisError as exc:
            # Its key expires within the TTL anyway.
            self._failed(exc, "unregistering")

    # -- the agent thread ---------------------------------------------------------

    def _run(self) -> None:
        pubsub: Any = None
        next_beat = next_sync = 0.0
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub(  # type: ignore[no-untyped-call]
                        ignore_subscribe_messages=True
                    )
                    pubsub.subscribe(CHANNEL)
                    self._connected()
                    next_beat = next_sync = 0.0
                now = time.monotonic()
                if now >= next_beat:
                    self._beat()
                    next_beat = now + self.heartbeat
                if now >= next_sync:
                    self._sync()
                    next_sync = now + self.resync
                message = pubsub.get_message(timeout=min(0.2, self.heartbeat))
                while message is not None:
                    self._on_message(message)
                    message = pubsub.get_message(timeout=0)
            except (redis.RedisError, OSError) as exc:
                self._failed(exc, "talking to")
                if pubsub is not None:
                    # The connection is already broken; there is nothing left to release.
                    with suppress(redis.RedisError, OSError):
                        pubsub.close()
                    pubsub = None
                self._stop.wait(0.5)  # then reconnect
        if pubsub is not None:
            with suppress(redis.RedisError, OSError):
                pubsub.close()

    def _connected(self) -> None:
        if self._connected_since is None:
            self._connected_since = time.monotonic()
            self.hub.count("reconnects")
            self.connected.set()
            logger.info("discovery connected to %s", self.url)
            # Everyone gets a full TTL to re-register before absence means anything.
            now = time.monotonic()
            for key in self._last_seen:
                self._last_seen[key] = now

    def _failed(self, exc: BaseException, doing: str) -> None:
        self.hub.count("redis_errors")
        if self._connected_since is not None or not self.hub.statistics()["redis_errors"] > 1:
            logger.warning(
                "discovery: error %s Redis at %s (%s); keeping what is known", doing, self.url, exc
            )
        self._connected_since = None
        self.connected.clear()

    def _store(self, instance_id: str, props: dict[str, str]) -> None:
        value = json.dumps(props, separators=(",", ":"))
        pipe = self._client.pipeline()
        pipe.set(_key(instance_id), value, px=int(self.ttl * 1000))
        pipe.zadd(INDEX, {instance_id: time.time() + self.ttl})
        pipe.execute()

    def _beat(self) -> None:
        with self._own_lock:
            own = list(self._own.items())
        for instance_id, props in own:
            self._store(instance_id, props)

    def _sync(self) -> None:
        now_wall = time.time()
        self._client.zremrangebyscore(INDEX, "-inf", now_wall - self.ttl)
        listed = self._client.zrangebyscore(INDEX, now_wall - self.ttl, "+inf")
        ids = [i for i in listed if isinstance(i, str)]  # decode_responses: always str
        values = self._client.mget([_key(i) for i in ids]) if ids else []
        now = time.monotonic()
        present: set[str] = set()
        for instance_id, value in zip(ids, values, strict=True):
            if isinstance(value, str) and self._accept(instance_id, value):
                present.add(instance_id)
                self._last_seen[instance_id] = now
        with self._own_lock:
            present.update(self._own)
        settled = self._connected_since is not None and now - self._connected_since >= self.ttl
        for instance_id in list(self.hub.snapshot()):
            if instance_id in present:
                continue
            seen = self._last_seen.get(instance_id, now)
            if settled and now - seen >= self.ttl:
                self.hub.remove(instance_id)
                self._last_seen.pop(instance_id, None)

    def _on_message(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if not isinstance(data, str) or len(data) < 2 or data[0] not in "+-":
            self.hub.count("malformed")
            return
        instance_id = data[1:]
        if data[0] == "-":
            with self._own_lock:
                if instance_id in self._own:
                    return
            self.hub.remove(instance_id)
            self._last_seen.pop(instance_id, None)
            return
        value = self._client.get(_key(instance_id))
        if isinstance(value, str) and self._accept(instance_id, value):
            self._last_seen[instance_id] = time.monotonic()

    def _accept(self, instance_id: str, value: str) -> bool:
        with self._own_lock:
            if instance_id in self._own:
                # Ours: what this process registered last is the truth, not a copy
                # read from Redis a moment before it changed.
                return True
            withdrawn = self._withdrawn.get(instance_id)
            if withdrawn is not None and time.monotonic() - withdrawn < self.ttl:
                return False  # ours, just withdrawn: a read from before must not revive it
        try:
            ad = _parse(instance_id, value)
        except ProtocolError as exc:
            self.hub.count("malformed")
            logger.debug("ignoring a malformed advertisement %r in Redis: %s", instance_id, exc)
            return False
        return self.hub.put(instance_id, ad)


def _parse(instance_id: str, value: str) -> Advertisement:
    """Decode a stored advertisement.

    Raises:
        ProtocolError: too large, not JSON, not a map of strings, not an advertisement,
            or stored under another instance's key.
    """
    if len(value) > _MAX_VALUE:
        raise ProtocolError("advertisement too large")
    try:
        props = json.loads(value)
    except ValueError:
        raise ProtocolError("advertisement is not JSON") from None
    if not isinstance(props, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in props.items()
    ):
        raise ProtocolError("advertisement is not a map of strings")
    ad = roundtrip(props)
    if ad.instance_id != instance_id:
        raise ProtocolError("advertisement stored under another instance id")
    return ad


class RedisDiscovery(AgentDiscovery[_Agent]):
    """A :class:`~meshrpc.discovery.base.Discovery` on a Redis server at ``url``
    (``redis://host:port/db``), through this process's agent for that URL."""

    _shared: SharedAgents[_Agent] = SharedAgents()
    _closed_message = "this RedisDiscovery was closed; create a new one"

    def __init__(
        self, url: str, *, ttl: float = 3.0, heartbeat: float = 1.0, resync: float = 1.0
    ) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"not a Redis URL: {url!r} (expected redis://host:port/db)")
        if not 0 < heartbeat < ttl:
            raise ConfigError("the Redis heartbeat must be shorter than the TTL")
        super().__init__(url)
        self.url = url
        self._settings = (ttl, heartbeat, resync)

    def _make_agent(self) -> _Agent:
        ttl, heartbeat, resync = self._settings
        return _Agent(self.url, ttl=ttl, heartbeat=heartbeat, resync=resync)
