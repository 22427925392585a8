"""Test hosts in network namespaces, joined by a bridge in their own switch namespace.

Nothing here can reach the machine's real network: the hosts and the switch are fresh
namespaces with no route out (only their /24 and the multicast route mDNS needs on
their own interface), and the bridge connects nothing but them. Needs root and
iproute2; tests skip without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

SUBNET = "10.77.{net}.{host}"


def available() -> str | None:
    """Why namespaces cannot be used here, or ``None`` when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    return None


def skip_unless_available() -> pytest.MarkDecorator:
    reason = available()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@dataclass
class Host:
    name: str  # the namespace
    address: str
    port: str  # the switch port (in the switch namespace)

    def command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


@dataclass
class Network:
    switch: str
    hosts: list[Host]

    def cut(self, host: Host) -> None:
        """Two-way partition: the host's switch port goes down."""
        ip("-n", self.switch, "link", "set", host.port, "down")

    def heal(self, host: Host) -> None:
        ip("-n", self.switch, "link", "set", host.port, "up")


@contextmanager
def network(n_hosts: int) -> Iterator[Network]:
    """``n_hosts`` hosts on one bridge; every namespace is deleted on exit."""
    tag = uuid.uuid4().hex[:6]
    net = int(tag[:2], 16) % 200 + 20  # 10.77.<net>.0/24, varied between runs
    switch = f"msw-{tag}"
    created: list[str] = []
    try:
        ip("netns", "add", switch)
        created.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        hosts = []
        for i in range(1, n_hosts + 1):
            name = f"mh{i}-{tag}"
            ip("netns", "add", name)
            created.append(name)
            port = f"p{i}"
            ip("link", "add", "eth0", "netns", name, "type", "veth", "peer", "name", port,
               "netns", switch)  # fmt: skip
            ip("-n", switch, "link", "set", port, "master", "br0")
            ip("-n", switch, "link", "set", port, "up")
            address = SUBNET.format(net=net, host=i)
            ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
            # mDNS sends to 224.0.0.251; without a route the host has no way to reach it.
            ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0")
            hosts.append(Host(name, address, port))
        yield Network(switch, hosts)
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
