"""Configuration: keyword arguments beat ``MESHRPC_*`` variables, which beat defaults.

``VARIABLES`` is the one table of every environment variable meshrpc reads; the docs'
configuration table is generated from the same rows. An invalid value raises
:class:`~meshrpc.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from meshrpc.errors import ConfigError
from meshrpc.security import Secret

__all__ = ["VARIABLES", "Settings", "Variable", "load_settings"]

BALANCE_STRATEGIES = ("least-pending", "round-robin", "random")


@dataclass(frozen=True, slots=True)
class Variable:
    """One configuration variable: its environment name, settings field, default, meaning."""

    env: str
    field: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    sensitive: bool = False
    """Never echo the value (in errors, reprs or docs)."""


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise ValueError("must be a positive number")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be zero or a positive number")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _port(raw: str) -> tuple[int, int]:
    first, sep, last = raw.strip().partition("-")
    low = int(first)
    high = int(last) if sep else low
    if not (0 <= low <= 65535 and 0 <= high <= 65535) or (sep and not 0 < low <= high):
        raise ValueError(
            "must be a port (0: any free port) or a range like 7000-7010, within 1-65535"
        )
    return low, high


def _advertise_host(raw: str) -> str:
    value = raw.strip()
    octets = value.split(".")
    if len(octets) != 4 or not all(o.isdigit() and 0 <= int(o) <= 255 for o in octets):
        raise ValueError("must be an IPv4 address that peers can reach")
    if value == "0.0.0.0" or value.startswith("255."):
        raise ValueError(f"{value} is not an address peers can reach")
    return value


def _interfaces(raw: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in raw.split(",") if p.strip())
    if not parts:
        raise ValueError("must be 'all' or a comma-separated list of IPv4 addresses")
    if parts == ("all",):
        return parts
    for part in parts:
        octets = part.split(".")
        if len(octets) != 4 or not all(o.isdigit() and 0 <= int(o) <= 255 for o in octets):
            raise ValueError(f"{part!r} is not an IPv4 address (or use 'all')")
    return parts


def _balance(raw: str) -> str:
    value = raw.strip().lower()
    if value not in BALANCE_STRATEGIES:
        raise ValueError(f"must be one of {', '.join(BALANCE_STRATEGIES)}")
    return value


def _discovery(raw: str) -> str:
    value = raw.strip()
    if value.lower() in ("mdns", "static"):
        return value.lower()
    if value.lower().startswith(("redis://", "rediss://")):
        return value
    raise ValueError("must be 'mdns', 'static' or a Redis URL like redis://host:6379/0")


_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


def _peers(raw: str) -> tuple[str, ...]:
    text = raw.strip()
    if text.startswith("@"):  # @/path/to/file: one endpoint per line, # comments
        path = text[1:]
        try:
            with open(path) as f:
                text = ",".join(line.split("#", 1)[0].strip() for line in f)
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    peers = tuple(p.strip() for p in text.split(",") if p.strip())
    for peer in peers:
        host, sep, port = peer.removeprefix("tcp://").rpartition(":")
        if (
            not peer.startswith("tcp://")
            or not sep
            or not port.isdigit()
            or not 0 < int(port) <= 65535
            or not _HOSTNAME.match(host)
        ):
            raise ValueError(f"{peer!r} is not tcp://host:port")
    return peers


def _secret(raw: str) -> Secret:
    try:
        return Secret(raw)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _text(raw: str) -> str:
    return raw.strip()


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "MESHRPC_NAMESPACE",
        "namespace",
        "",
        _text,
        "Namespace components join when none is given; only equal namespaces talk.",
    ),
    Variable(
        "MESHRPC_KEY",
        "key",
        "",
        _text,
        "Partition key inside a namespace (cote's `key`); only equal keys talk.",
    ),
    Variable(
        "MESHRPC_ENVIRONMENT",
        "environment",
        "",
        _text,
        "Environment label (e.g. staging); only equal environments talk.",
    ),
    Variable(
        "MESHRPC_TIMEOUT",
        "timeout",
        10.0,
        _positive_float,
        "Default deadline of a call, in seconds.",
    ),
    Variable(
        "MESHRPC_INTERFACES",
        "interfaces",
        ("all",),
        _interfaces,
        "IPv4 addresses to announce, discover and listen on; `all` for every interface. "
        "Tests and demos use 127.0.0.1.",
    ),
    Variable(
        "MESHRPC_DISCOVERY",
        "discovery",
        "mdns",
        _discovery,
        "Discovery backend: `mdns` (multicast on the LAN), `static` (seed endpoints in "
        "MESHRPC_PEERS) or a Redis URL `redis://host:port/db`.",
    ),
    Variable(
        "MESHRPC_PEERS",
        "peers",
        (),
        _peers,
        "Static discovery: comma-separated seed endpoints `tcp://10.0.0.5:7000,...` of "
        "responders, or `@/path/file` with one per line. One live seed is enough.",
    ),
    Variable(
        "MESHRPC_PORT",
        "port",
        (0, 0),
        _port,
        "Port responders and publishers bind: a number, a range `7000-7010` (the first "
        "free one), or 0 for any free port.",
    ),
    Variable(
        "MESHRPC_ADVERTISE_HOST",
        "advertise_host",
        "",
        _advertise_host,
        "Address to advertise instead of the interface's (behind NAT, in containers).",
    ),
    Variable(
        "MESHRPC_BALANCE",
        "balance",
        "least-pending",
        _balance,
        "How a requester picks among responders: least-pending (power of two "
        "choices), round-robin or random.",
    ),
    Variable(
        "MESHRPC_MAX_MESSAGE",
        "max_message",
        16 * 1024 * 1024,
        _positive_int,
        "Largest message in bytes; senders refuse bigger ones, sockets drop them.",
    ),
    Variable(
        "MESHRPC_MAX_CONCURRENCY",
        "max_concurrency",
        1000,
        _positive_int,
        "Calls a responder runs at once; beyond it calls are refused as Overloaded "
        "and retried elsewhere.",
    ),
    Variable(
        "MESHRPC_MAX_QUEUED",
        "max_queued",
        10000,
        _positive_int,
        "Calls a requester lets wait for a responder to appear; beyond it they fail "
        "at once with NoResponder.",
    ),
    Variable(
        "MESHRPC_RETRY_BUDGET",
        "retry_budget",
        0.1,
        _non_negative_float,
        "Retries a requester may add, as a share of its calls (plus a reserve of 5 a "
        "second), so a failing mesh is not flooded; 0 allows only the reserve.",
    ),
    Variable(
        "MESHRPC_SECRET",
        "secret",
        None,
        _secret,
        "Mesh secret (16+ characters): members derive CurveZMQ keys from it, encrypt and "
        "authenticate every connection, and sign advertisements; others are refused.",
        sensitive=True,
    ),
    Variable(
        "MESHRPC_HANDSHAKE_TIMEOUT",
        "handshake_timeout",
        5.0,
        _positive_float,
        "Seconds a new connection may take to complete its handshake before it is closed.",
    ),
    Variable(
        "MESHRPC_MAX_PEERS",
        "max_peers",
        1024,
        _positive_int,
        "Responders (or publishers) a component connects to at most; further "
        "advertisements are ignored and counted, so a flood cannot exhaust memory.",
    ),
    Variable(
        "MESHRPC_STATS_INTERVAL",
        "stats_interval",
        1.0,
        _non_negative_float,
        "Seconds between the statistics events components publish for `meshrpc monitor` "
        "(topic meshrpc.stats; built only while someone listens); 0 turns them off.",
    ),
    Variable(
        "MESHRPC_DRAIN_TIMEOUT",
        "drain_timeout",
        10.0,
        _non_negative_float,
        "Seconds a stopping responder lets in-flight calls finish.",
    ),
    Variable(
        "MESHRPC_SEND_TRACEBACKS",
        "send_tracebacks",
        True,
        lambda raw: _boolean(raw),
        "Whether responders send handler tracebacks to callers in errors.",
    ),
    Variable(
        "MESHRPC_UVLOOP",
        "uvloop",
        "auto",
        lambda raw: _uvloop(raw),
        "Loops meshrpc starts itself (run(), meshrpc.sync, the CLI) on asyncio use uvloop: "
        "`auto` when installed (`meshrpc[fast]`), `on` (required) or `off`.",
    ),
)

_BY_FIELD = {v.field: v for v in VARIABLES}


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true/false (1/0, yes/no, on/off)")


def _uvloop(raw: str) -> str:
    value = raw.strip().lower()
    if value == "auto":
        return value
    try:
        return "on" if _boolean(value) else "off"
    except ValueError:
        raise ValueError("must be auto, on or off") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Resolved configuration of one component."""

    namespace: str
    key: str
    environment: str
    timeout: float
    interfaces: tuple[str, ...]
    discovery: str
    peers: tuple[str, ...]
    port: tuple[int, int]
    advertise_host: str
    balance: str
    max_message: int
    max_concurrency: int
    max_queued: int
    retry_budget: float
    secret: Secret | None
    handshake_timeout: float
    max_peers: int
    stats_interval: float
    drain_timeout: float
    send_tracebacks: bool
    uvloop: str


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Resolve settings: non-``None`` overrides, then the environment, then defaults.

    Raises:
        ConfigError: a variable or an override has an invalid value.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var in VARIABLES:
        raw = env.get(var.env)
        if raw is None or raw.strip() == "":
            values[var.field] = var.default
            continue
        try:
            values[var.field] = var.parse(raw)
        except ValueError as exc:
            shown = var.env if var.sensitive else f"{var.env}={raw!r}"
            raise ConfigError(f"{shown} is invalid: {exc}") from None
    for field, value in (overrides or {}).items():
        if value is None:
            continue
        known = _BY_FIELD.get(field)
        if known is None:
            raise ConfigError(f"unknown setting {field!r}")
        values[field] = _check_override(known, value)
    return Settings(**values)


def _check_override(var: Variable, value: Any) -> Any:
    # Keyword arguments get the same validation as their variables, so the error a
    # user sees does not depend on where the value came from.
    if isinstance(value, Secret) and var.sensitive:
        return value
    shown = var.field if var.sensitive else f"{var.field}={value!r}"
    if isinstance(value, bool) and var.default is not True and var.default is not False:
        raise ConfigError(f"{shown} is invalid")
    if var.sensitive and not isinstance(value, str):
        raise ConfigError(f"{shown} must be a string or a meshrpc.security.Secret")
    if var.field == "port" and isinstance(value, (tuple, list)) and len(value) == 2:
        raw = f"{value[0]}-{value[1]}"
    else:
        raw = ",".join(value) if isinstance(value, (tuple, list)) else str(value)
    try:
        return var.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{shown} is invalid: {exc}") from None
