"""Built-in statistics events: what ``meshrpc monitor`` shows.

Every ``MESHRPC_STATS_INTERVAL`` seconds (default 1; 0 turns it off) each process
publishes, per mesh (namespace, key, environment, secret), one event on the topic
``meshrpc.stats`` with a snapshot of its components: identity, ``statistics()``, and for
requesters which responders they talk to. It is sent by one hidden publisher per mesh
and process, run by an agent thread with its own event loop, so components in any
event loop (or the blocking facade's threads) share it and their lifetimes do not
matter to it; the thread (``meshrpc-stats``) lives as long as the process. A mesh's
publisher closes with its last component. Publishing with no subscriber costs almost
nothing (ZeroMQ drops it at the socket); the snapshots are built only when someone
listens.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.from_thread
import anyio.lowlevel

if TYPE_CHECKING:
    from meshrpc._components.common import Component
    from meshrpc._components.publisher import Publisher

__all__ = ["PUBLISHER_NAME", "TOPIC", "join", "leave"]

logger = logging.getLogger("meshrpc.stats")

TOPIC: Final = "meshrpc.stats"
PUBLISHER_NAME: Final = "meshrpc-stats"  # prefix of the hidden publishers' names

Labels = tuple[str, str, str, str]  # namespace, key, environment, secret key id


def _labels(component: Component) -> Labels:
    s = component.settings
    secret = s.secret.reveal() if s.secret is not None else ""
    return (s.namespace, s.key, s.environment, secret)


class _Agent:
    """One per process, started by the first component that reports and then kept for
    the life of the process (a daemon thread named ``meshrpc-stats`` with its own event
    loop); a mesh's hidden publisher is closed as soon as its last component leaves."""

    def __init__(self, interval: float) -> None:
        self.lock = threading.Lock()
        self.components: dict[int, Component] = {}
        self.interval = interval
        self._publishers: dict[Labels, Publisher] = {}
        self._closing: list[tuple[Labels, threading.Event]] = []
        self._wake: anyio.Event | None = None
        self._token: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshrpc-stats", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        anyio.run(self._main)

    async def _main(self) -> None:
        self._token = anyio.lowlevel.current_token()
        self._wake = anyio.Event()
        self._ready.set()
        next_round = 0.0
        while True:
            # Publishers are entered and left by this task only (task-group rules).
            await self._close_requested()
            if time.monotonic() >= next_round:
                try:
                    await self._round()
                except Exception:  # a bad round must not end statistics for the process
                    logger.exception("statistics round failed")
                next_round = time.monotonic() + self.interval
            with anyio.move_on_after(max(0.0, next_round - time.monotonic())):
                await self._wake.wait()
            self._wake = anyio.Event()

    def close_group(self, labels: Labels) -> None:
        """Close the publisher of ``labels`` now, waiting for it (from another thread),
        so a component that leaves takes its mesh's sockets with it."""
        done = threading.Event()
        with self.lock:
            self._closing.append((labels, done))
        anyio.from_thread.run_sync(self._poke, token=self._token)
        done.wait(10)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _close_requested(self) -> None:
        with self.lock:
            closing, self._closing = self._closing, []
            in_use = {_labels(c) for c in self.components.values()}
        for labels, done in closing:
            if labels not in in_use:
                await self._close(labels)
            done.set()

    async def _close(self, labels: Labels) -> None:
        pub = self._publishers.pop(labels, None)
        if pub is not None:
            # Left in this task, directly: a publisher's task group is open here, so
            # no other cancel scope may be entered around its exit.
            await pub.__aexit__(None, None, None)

    async def _round(self) -> None:
        from meshrpc._components.publisher import Publisher

        with self.lock:
            components = list(self.components.values())
        groups: dict[Labels, list[Component]] = {}
        for component in components:
            groups.setdefault(_labels(component), []).append(component)
        for labels in [k for k in self._publishers if k not in groups]:
            await self._close(labels)
        for labels, members in groups.items():
            pub = self._publishers.get(labels)
            if pub is None:
                namespace, key, environment, secret = labels
                first = members[0].settings
                pub = Publisher(
                    name=f"{PUBLISHER_NAME} {socket.gethostname()[:40]}:{os.getpid()}",
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
                self._publishers[labels] = pub
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
            _agent = _Agent(interval)
        agent = _agent
    with agent.lock:
        agent.components[id(component)] = component


def leave(component: Component) -> None:
    """Stop reporting ``component``; its mesh's publisher closes with the last one."""
    agent = _agent
    if agent is None:
        return
    labels = _labels(component)
    with agent.lock:
        if agent.components.pop(id(component), None) is None:
            return
        still_used = any(_labels(c) == labels for c in agent.components.values())
    if not still_used:
        agent.close_group(labels)
