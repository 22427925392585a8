"""mDNS / DNS-SD discovery with python-zeroconf: the only module that imports it.

One ``Zeroconf`` instance and one browser per process, shared (reference-counted) by
every :class:`MdnsDiscovery`, whatever event loop or thread it lives in. Zeroconf runs
in its own thread with its own asyncio loop: it is created from a worker thread, where
no asyncio loop is running, so it never attaches to the caller's loop (and trio works).
Each advertisement is one service instance of ``_meshrpc._tcp.local.`` with the
advertisement in TXT. Names are unique per instance, so registration skips probing
(``cooperating_responders``) and returns once the first announcement is sent.

Browser callbacks run on zeroconf's loop; they read TXT from the cache (the
announcement carries it) or query for it, and hand the decoded advertisements to a
:class:`~meshrpc.discovery._bridge.Hub`, which wakes each watcher without ever
blocking zeroconf's thread. Malformed records are dropped and counted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import socket
import threading
from collections.abc import AsyncIterator, Coroutine, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import anyio
import anyio.to_thread
import ifaddr
from zeroconf import (  # type: ignore[attr-defined]  # DNS* are top-level, not in __all__
    DNSIncoming,
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    DNSQuestionType,
    DNSText,
    InterfaceChoice,
    IPVersion,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf import Error as ZeroconfError
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.config import load_settings
from meshrpc.discovery._bridge import Hub, Watcher, roundtrip
from meshrpc.discovery.base import DiscoveryEvent
from meshrpc.errors import ConfigError, MeshError, ProtocolError

__all__ = ["SERVICE_TYPE", "MdnsDiscovery"]

logger = logging.getLogger("meshrpc.discovery")

SERVICE_TYPE: Final = "_meshrpc._tcp.local."
_MDNS_GROUP: Final = ("224.0.0.251", 5353)
_FLAGS_QUERY: Final = 0x0000
_FIRST_LOOK_S: Final = 1.0  # s the first look listens for direct answers
_TYPE_PTR: Final = 12
_TYPE_TXT: Final = 16
_CLASS_IN: Final = 1
_OP_TIMEOUT: Final = 10.0  # s: a bound on waiting for zeroconf's loop, never reached normally
_RESOLVE_TIMEOUT_MS: Final = 3000
_MAX_RESOLVING: Final = 256  # concurrent TXT queries; beyond, names are dropped and counted
_NO_PORT: Final = 9  # "discard": for advertisements without an endpoint (requesters)
_LABEL_RE: Final = re.compile(r"[^A-Za-z0-9-]+")
_COUNTERS: Final = ("malformed", "unresolved", "direct_answers")

_T = TypeVar("_T")


class MdnsDiscovery:
    """A :class:`~meshrpc.discovery.base.Discovery` over multicast DNS.

    ``interfaces``: IPv4 addresses to announce and browse on, or ``["all"]``; by
    default ``MESHRPC_INTERFACES``. Every object in a process shares one zeroconf
    instance, so they must all use the same interfaces.

    Raises:
        ConfigError: ``interfaces`` is not ``["all"]`` or a list of IPv4 addresses.
    """

    def __init__(self, interfaces: Sequence[str] | None = None) -> None:
        self._interfaces = _check_interfaces(
            load_settings().interfaces if interfaces is None else interfaces
        )
        self._shared: _Shared | None = None
        self._closed = False
        self._registered: dict[str, ServiceInfo] = {}  # instance_id -> what we announce
        self._watchers: set[Watcher] = set()

    async def start(self) -> None:
        """Join the process's zeroconf instance, starting it if needed; idempotent.

        Raises:
            ConfigError: an interface cannot be used, or differs from the running one.
            MeshError: zeroconf failed to start, or this object was closed.
        """
        if self._closed:
            raise MeshError("this MdnsDiscovery is closed; create a new one")
        if self._shared is None:
            # Not abandoned on cancellation: the reference must be recorded to be released.
            shared = await anyio.to_thread.run_sync(_acquire, self._interfaces)
            if self._shared is not None or self._closed:  # a concurrent start() or aclose()
                await anyio.to_thread.run_sync(_release, shared)
            else:
                self._shared = shared

    async def aclose(self) -> None:
        """Send goodbyes for what this object registered, end its watchers, release.

        Raises:
            MeshError: zeroconf failed to shut down cleanly (resources are released).
        """
        if self._closed:
            return
        self._closed = True
        shared, self._shared = self._shared, None
        for watcher in list(self._watchers):
            watcher.end()
        if shared is None:
            return
        infos = list(self._registered.values())
        self._registered.clear()
        with anyio.CancelScope(shield=True):
            try:
                if infos:
                    await shared.call(shared.async_unregister(infos))
            finally:
                await anyio.to_thread.run_sync(_release, shared)

    async def register(self, advertisement: Advertisement) -> None:
        """Announce ``advertisement``; the same ``instance_id`` again updates it.

        Returns once the first announcement is sent (zeroconf sends two more).

        Raises:
            ConfigError: a property is too long to advertise.
            ProtocolError: the advertisement would not decode on the other side.
            MeshError: not started, closed, or zeroconf failed.
        """
        shared = self._started()
        props = advertisement.to_properties()
        roundtrip(props)  # fail here, not silently on every peer
        old = self._registered.get(advertisement.instance_id)
        info = ServiceInfo(
            SERVICE_TYPE,
            old.name if old is not None else _instance_name(advertisement),
            port=advertisement.address()[1] if advertisement.endpoint else _NO_PORT,
            properties=props,
            server=f"mr-{_label(advertisement.instance_id)[:59]}.local.",
            parsed_addresses=self._addresses(advertisement),
        )
        # Recorded before the await: if we are cancelled, aclose still sends a goodbye.
        self._registered[advertisement.instance_id] = info
        await shared.call(shared.async_register(info))

    async def unregister(self, advertisement: Advertisement) -> None:
        """Withdraw ``advertisement`` (sends a goodbye); a no-op if not registered here.

        Raises:
            MeshError: zeroconf failed.
        """
        info = self._registered.pop(advertisement.instance_id, None)
        if info is not None and self._shared is not None:
            await self._shared.call(self._shared.async_unregister([info]))

    @asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[DiscoveryEvent]]:
        """Follow advertisements: ``added`` for each known now, then changes.

        Raises:
            MeshError: not started, or closed.
        """
        watcher = self._started().hub.subscribe()
        self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)
            watcher.close()

    def statistics(self) -> dict[str, int]:
        """Process-wide counters: ``added``, ``updated``, ``removed``, ``malformed``
        (dropped TXT records), ``overflow`` (over the instance cap), ``unresolved``
        (no TXT obtained), ``direct_answers`` (to the first look), ``known`` (instances
        now); and ``registered`` by this object.
        """
        shared = self._shared
        stats = (
            shared.hub.statistics() if shared is not None else Hub(counters=_COUNTERS).statistics()
        )
        return {**stats, "registered": len(self._registered)}

    def _started(self) -> _Shared:
        if self._closed:
            raise MeshError("this MdnsDiscovery is closed")
        if self._shared is None:
            raise MeshError("call start() before using this MdnsDiscovery")
        return self._shared

    def _addresses(self, ad: Advertisement) -> list[str]:
        host = ad.address()[0] if ad.endpoint else "0.0.0.0"
        if host != "0.0.0.0":
            return [host]
        if self._interfaces != ("all",):
            return list(self._interfaces)
        return [ip for ip in _local_ipv4() if not ip.startswith("127.")] or ["127.0.0.1"]


# -- the per-process zeroconf instance ---------------------------------------------

_LOCK = threading.Lock()
_SHARED: _Shared | None = None


class _Shared:
    """The process's zeroconf instance, its browser and what the browser knows."""

    def __init__(self, interfaces: tuple[str, ...]) -> None:
        self.interfaces = interfaces
        self.refs = 0
        self.hub = Hub(counters=_COUNTERS)
        choice: InterfaceChoice | list[str | int] = (
            InterfaceChoice.All if interfaces == ("all",) else list(interfaces)
        )
        # Called in a worker thread: no running asyncio loop here, so zeroconf starts
        # its own thread and loop instead of attaching to the caller's.
        self.zc = Zeroconf(interfaces=choice, ip_version=IPVersion.V4Only)
        assert self.zc.loop is not None
        self.loop: asyncio.AbstractEventLoop = self.zc.loop
        self._tasks: set[asyncio.Future[Any]] = set()  # keeps zeroconf's broadcasts alive
        self._resolving: set[asyncio.Future[Any]] = set()  # TXT queries in flight
        self._first_looks: set[asyncio.Future[Any]] = set()  # listening for direct answers
        self._announcing: dict[str, asyncio.Future[Any]] = {}  # by service name
        self._browser: AsyncServiceBrowser | None = None
        try:
            self.call_blocking(self._async_start_browser())
        except BaseException:
            self.zc.close()
            raise

    async def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on zeroconf's loop; wait without blocking the caller's loop."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await anyio.to_thread.run_sync(_result, future)

    def call_blocking(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on zeroconf's loop from a thread that may block."""
        return _result(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        """Stop browsing and close zeroconf (joins its thread); blocking."""
        try:
            self.call_blocking(self._async_stop())
        finally:
            self.zc.close()

    # Everything below runs on zeroconf's loop.

    async def async_register(self, info: ServiceInfo) -> None:
        # Repeats of an older announcement must not follow the new one.
        self._stop_announcing(info.name)
        if self.zc.registry.async_get_info_name(info.name) is None:
            announcing = await self.zc.async_register_service(info, cooperating_responders=True)
        else:
            announcing = await self.zc.async_update_service(info)
        self._announcing[info.name] = self._keep(announcing)
        await asyncio.sleep(0)  # the broadcast task sends its first announcement now

    async def async_unregister(self, infos: list[ServiceInfo]) -> None:
        for info in infos:
            # An announcement repeated after the goodbye would resurrect the service.
            self._stop_announcing(info.name)
            if self.zc.registry.async_get_info_name(info.name) is not None:
                self._keep(await self.zc.async_unregister_service(info))
        await asyncio.sleep(0)  # first goodbyes out; the repeats follow in the background

    def _stop_announcing(self, name: str) -> None:
        task = self._announcing.pop(name, None)
        if task is not None:
            task.cancel()

    async def _async_start_browser(self) -> None:
        # QM, not the default QU first query: several processes on one host share port
        # 5353 (SO_REUSEPORT), and the kernel hands a unicast answer to just one of
        # them, usually not the browser that asked. With QU a new requester missed
        # every responder until the second query, a second later.
        self._browser = AsyncServiceBrowser(
            self.zc,
            [SERVICE_TYPE],
            handlers=[self._on_change],
            question_type=DNSQuestionType.QM,
        )
        self._first_look()

    def _first_look(self) -> None:
        """Ask once as a legacy unicast querier (RFC 6762 section 6.7), from a port other
        than 5353: responders answer such a query at once, directly to the asker.

        The browser's own first query waits 20-120 ms and the multicast answers another
        20-120 ms (both random, by the RFC), so a requester started after its responders
        found them ~200 ms late; answered directly it finds them in a few milliseconds.
        The answers go into zeroconf's cache like any other, so the browser reports
        them; the slower multicast answers then refresh the same records.
        """
        query = DNSOutgoing(_FLAGS_QUERY, multicast=False, id_=random.randint(1, 0xFFFF))
        query.add_question(DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN))
        packet = query.packets()[0]
        for address in _unicast_sources(self.interfaces):
            self._keep(self._first_look_from(address, packet), self._first_looks)

    async def _first_look_from(self, address: str, packet: bytes) -> None:
        # The socket is made here, so a look cancelled before it starts leaves none.
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError as exc:
            logger.info("mDNS first look from %s not sent: %s", address, exc)
            return
        with sock:
            try:
                sock.setblocking(False)
                sock.bind((address, 0))
                sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(address)
                )
                sock.sendto(packet, _MDNS_GROUP)
            except OSError as exc:
                # Only a head start: the browser's multicast queries still find everyone.
                logger.info("mDNS first look from %s not sent: %s", address, exc)
                return
            deadline = self.loop.time() + _FIRST_LOOK_S
            while (left := deadline - self.loop.time()) > 0:
                try:
                    data, source = await asyncio.wait_for(self.loop.sock_recvfrom(sock, 9000), left)
                except TimeoutError:
                    return
                answer = DNSIncoming(data, source)
                # From an mDNS responder (RFC 6762 section 11: source port 5353).
                if answer.valid and not answer.is_query() and source[1] == _MDNS_GROUP[1]:
                    self.hub.count("direct_answers")
                    self.zc.record_manager.async_updates_from_response(answer)

    async def _async_stop(self) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
        # Queries are cancelled; pending goodbyes finish (zeroconf waits for them).
        for task in list(self._resolving):
            task.cancel()
        # Awaited, so their sockets are closed before zeroconf's loop stops.
        looks = list(self._first_looks)
        for task in looks:
            task.cancel()
        await asyncio.gather(*looks, return_exceptions=True)

    def _keep(
        self, future: Any, tasks: set[asyncio.Future[Any]] | None = None
    ) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(future)
        tasks = self._tasks if tasks is None else tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    def _on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            self.hub.remove(name)
            return
        text = self._cached_txt(name)
        if text is not None:
            self._accept(name, text)
        elif len(self._resolving) < _MAX_RESOLVING:
            self._keep(self._resolve(service_type, name), self._resolving)
        else:
            self.hub.count("unresolved")
            logger.debug("too many mDNS lookups in flight; dropped %r", name)

    async def _resolve(self, service_type: str, name: str) -> None:
        info = AsyncServiceInfo(service_type, name)
        await info.async_request(self.zc, _RESOLVE_TIMEOUT_MS)
        text = self._cached_txt(name)
        if text is None or not self._ptr_alive(name):
            self.hub.count("unresolved")
            logger.debug("no TXT record for %r", name)
            return
        self._accept(name, text)

    def _accept(self, name: str, text: bytes) -> None:
        try:
            ad = Advertisement.from_properties(_parse_txt(text))
        except ProtocolError as exc:
            self.hub.count("malformed")
            logger.debug("dropped malformed advertisement %r: %s", name, exc)
            self.hub.remove(name)  # an instance whose record turned bad is gone
            return
        self.hub.put(name, ad)

    def _cached_txt(self, name: str) -> bytes | None:
        # The newest record wins: after a change both may be alive for a second.
        now = current_time_millis()
        records = [
            r
            for r in self.zc.cache.get_all_by_details(name, _TYPE_TXT, _CLASS_IN)
            if isinstance(r, DNSText) and not r.is_expired(now)
        ]
        return max(records, key=lambda r: r.created).text if records else None

    def _ptr_alive(self, name: str) -> bool:
        now = current_time_millis()
        return any(
            isinstance(r, DNSPointer) and r.alias == name and not r.is_expired(now)
            for r in self.zc.cache.get_all_by_details(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN)
        )


def _acquire(interfaces: tuple[str, ...]) -> _Shared:
    global _SHARED
    with _LOCK:
        if _SHARED is None:
            # Checked here because zeroconf leaks its socket when an interface fails.
            missing = set(interfaces) - {"all", "127.0.0.1", *_local_ipv4()}
            if missing:
                raise ConfigError(
                    f"interfaces {sorted(missing)!r} are not IPv4 addresses of this host"
                )
            try:
                _SHARED = _Shared(interfaces)
            except OSError as exc:
                logger.exception("cannot start mDNS on %s", ", ".join(interfaces))
                raise ConfigError(f"cannot use interfaces {interfaces!r} for mDNS: {exc}") from exc
            except ZeroconfError as exc:
                logger.exception("cannot start mDNS")
                raise MeshError(f"cannot start mDNS: {exc!r}") from exc
        elif _SHARED.interfaces != interfaces:
            raise ConfigError(
                f"mDNS already runs on {_SHARED.interfaces!r} in this process; every "
                f"component of a process must use the same interfaces, not {interfaces!r}"
            )
        _SHARED.refs += 1
        return _SHARED


def _release(shared: _Shared) -> None:
    global _SHARED
    with _LOCK:
        shared.refs -= 1
        if shared.refs > 0:
            return
        if _SHARED is shared:
            _SHARED = None
        try:
            shared.close()
        except (ZeroconfError, OSError, TimeoutError) as exc:
            logger.exception("closing mDNS failed")
            raise MeshError(f"closing mDNS failed: {exc!r}") from exc


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("mDNS background task failed: %r", exc)


def _result(future: Future[_T]) -> _T:
    try:
        return future.result(_OP_TIMEOUT)
    except TimeoutError:
        future.cancel()
        logger.exception("zeroconf's event loop did not answer within %s s", _OP_TIMEOUT)
        raise MeshError(f"zeroconf did not answer within {_OP_TIMEOUT} s") from None
    except ZeroconfError as exc:
        logger.exception("zeroconf failed")
        raise MeshError(f"mDNS failed: {exc!r}") from exc


def _check_interfaces(interfaces: Sequence[str]) -> tuple[str, ...]:
    result = tuple(interfaces)
    if result == ("all",):
        return result
    if not result or isinstance(interfaces, str):
        raise ConfigError(f"interfaces={interfaces!r}: give ['all'] or a list of IPv4 addresses")
    for address in result:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise ConfigError(f"interface {address!r} is not an IPv4 address") from None
    return result


def _unicast_sources(interfaces: tuple[str, ...]) -> list[str]:
    if interfaces != ("all",):
        return list(interfaces)
    return [ip for ip in _local_ipv4() if not ip.startswith("127.")] or ["127.0.0.1"]


def _local_ipv4() -> list[str]:
    return [
        ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)
    ]


def _label(text: str) -> str:
    return _LABEL_RE.sub("-", text).strip("-") or "x"


def _instance_name(ad: Advertisement) -> str:
    # <= 63 bytes: a DNS label. The instance id makes it unique, so no probing.
    return f"{_label(ad.name)[:30]}-{_label(ad.instance_id)[:32]}.{SERVICE_TYPE}"


def _parse_txt(text: bytes) -> dict[bytes | str, bytes | str | None]:
    """TXT rdata (length-prefixed strings) to properties; first occurrence wins."""
    props: dict[bytes | str, bytes | str | None] = {}
    i = 0
    while i < len(text):
        length = text[i]
        part = text[i + 1 : i + 1 + length]
        i += 1 + length
        key, sep, value = part.partition(b"=")
        if key and key not in props:
            props[key] = value if sep else None
    return props
