"""Built-in statistics events: what ``meshrpc monitor`` shows.

Every ``MESHRPC_STATS_INTERVAL`` seconds (default 1; 0 turns it off) each process
publishes, per mesh (namespace, key, environment, secret), one event on the topic
``meshrpc.stats`` with a snapshot of its components: identity, ``statistics()``, and for
requesters which responders they talk to. It is sent by one hidden publisher per mesh
and process, run by an agent thread with its own event loop, so components in any
event loop (or the blocking facade's threads) share it and their lifetimes do not
matter to it. Publishing with no subscriber costs almost nothing (ZeroMQ drops it at
the socket); the snapshots are built only when someone listens.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

if TYPE_CHECKING:
    from meshrpc._components.common import Component
    from meshrpc._components.publisher import Publisher

__all__ = ["TOPIC", "join", "leave"]

logger = logging.getLogger("meshrpc.stats")

TOPIC: Final = "meshrpc.stats"

Labels = tuple[str, str, str, str]  # namespace, key, environment, secret key id


def _labels(component: Component) -> Labels:
    s = component.settings
    secret = s.secret.reveal() if s.secret is not None else ""
    return (s.namespace, s.key, s.environment, secret)


class _Agent:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.components: dict[int, Component] = {}
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._scope: anyio.CancelScope | None = None
        self._done = threading.Event()
        self.interval = 1.0

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

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def _main(self) -> None:
        publishers: dict[Labels, Publisher] = {}
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                while True:
                    await self._round(publishers)
                    await anyio.sleep(self.interval)
        finally:
            with anyio.CancelScope(shield=True):
                for pub in publishers.values():
                    await pub.__aexit__(None, None, None)
            self._done.set()

    async def _round(self, publishers: dict[Labels, Publisher]) -> None:
        from meshrpc._components.publisher import Publisher

        with self.lock:
            components = list(self.components.values())
        groups: dict[Labels, list[Component]] = {}
        for component in components:
            groups.setdefault(_labels(component), []).append(component)
        for labels in [k for k in publishers if k not in groups]:
            await publishers.pop(labels).__aexit__(None, None, None)
        for labels, members in groups.items():
            pub = publishers.get(labels)
            if pub is None:
                namespace, key, environment, secret = labels
                first = members[0].settings
                pub = Publisher(
                    name=f"meshrpc-stats {socket.gethostname()[:40]}:{os.getpid()}",
                    namespace=namespace,
                    key=key,
                    environment=environment,
                    secret=secret or None,
                    interfaces=first.interfaces,
                    stats_interval=0,
                )
                try:
                    await pub.__aenter__()
                except Exception as exc:
                    logger.warning("cannot publish statistics for %r: %s", namespace, exc)
                    continue
                publishers[labels] = pub
            if not pub.statistics().get("subscribers"):
                continue  # nobody is watching: do not even build the snapshots
            snapshots = [s for s in (_snapshot(c) for c in members) if s is not None]
            pub.publish_nowait(
                TOPIC,
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "time": time.time(),
                    "components": snapshots,
                },
            )


def _snapshot(component: Component) -> dict[str, Any] | None:
    try:
        return component._snapshot()
    except RuntimeError:
        # Read from this thread while the component's loop changed a dict: next round.
        return None


_agent: _Agent | None = None
_agent_lock = threading.Lock()


def join(component: Component) -> None:
    """Report ``component`` from now on (if its stats interval is not 0)."""
    global _agent
    interval = component.settings.stats_interval
    if interval <= 0:
        return
    with _agent_lock:
        if _agent is None:
            _agent = _Agent()
            _agent.interval = interval
            _agent.start()
        with _agent.lock:
            _agent.components[id(component)] = component


def leave(component: Component) -> None:
    """Stop reporting ``component``; the agent stops with the last one."""
    global _agent
    with _agent_lock:
        agent = _agent
        if agent is None:
            return
        with agent.lock:
            if agent.components.pop(id(component), None) is None:
                return
            if agent.components:
                return
        _agent = None
    agent.stop()
