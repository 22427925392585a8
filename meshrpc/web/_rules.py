"""The bridge's rules, pure: allow-lists, the Origin check, and the browser's JSON messages.

Nothing here does I/O; ``_bridge.py`` applies these to live WebSocket connections.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from meshrpc._protocol import topics
from meshrpc.errors import ConfigError

__all__ = [
    "MAX_DEPTH",
    "AllowList",
    "BadMessage",
    "Call",
    "Subscribe",
    "Unsubscribe",
    "dumps",
    "error_reply",
    "normalise_origin",
    "origin_allowed",
    "parse",
]

_MAX_ID_LEN: Final = 128
MAX_DEPTH: Final = 64  # arrays and objects nested in one message, at the most
_DEFAULT_PORTS: Final = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class AllowList:
    """Exact names and wildcard patterns (``*`` one segment, ``#`` any depth) exposed."""

    __slots__ = ("patterns",)

    def __init__(self, patterns: Iterable[str], what: str) -> None:
        if isinstance(patterns, str):
            raise ConfigError(f"{what} must be a list of names or patterns, not one string")
        checked = []
        for pattern in patterns:
            try:
                checked.append(topics.check_pattern(pattern))
            except ConfigError as exc:
                raise ConfigError(f"{what}: {exc}") from None
        self.patterns: tuple[str, ...] = tuple(dict.fromkeys(checked))

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"AllowList({list(self.patterns)!r})"

    def allows(self, name: str) -> bool:
        """Whether a request type or an event topic is exposed."""
        return any(topics.matches(p, name) for p in self.patterns)

    def allows_pattern(self, pattern: str) -> bool:
        """Whether every topic ``pattern`` can match is exposed (conservatively)."""
        return any(topics.covers(p, pattern) for p in self.patterns)


def origin_allowed(origin: str | None, host: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether a WebSocket upgrade carrying ``Origin: origin`` may connect.

    Browsers always send Origin on a WebSocket upgrade; other clients may not, and are
    let through (they can forge any header, so authorisation belongs in the hooks).
    ``allowed`` None means same origin: the Origin's host and port are the ``Host``
    header's. Otherwise the Origin must be listed (``"*"`` allows any).
    """
    if origin is None:
        return True
    origin = origin.strip().lower().rstrip("/")
    if allowed is not None:
        return "*" in allowed or origin in allowed
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
        origin_host, origin_port = parts.hostname, parts.port
        target = urlsplit("//" + host.strip().lower())
        host_name, host_port = target.hostname, target.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not origin_host or not host_name:
        return False
    default = _DEFAULT_PORTS[parts.scheme]
    # A Host header without a port means the scheme's default one; behind a proxy that
    # terminates TLS the request's own scheme may differ, so take the Origin's.
    return (origin_host, origin_port or default) == (host_name, host_port or default)


def normalise_origin(origin: str) -> str:
    """An ``allowed_origins`` entry as browsers send it: ``scheme://host[:port]``.

    Raises:
        ConfigError: not an http(s) origin (or ``"*"``/``"null"``).
    """
    value = origin.strip().lower().rstrip("/")
    if value in ("*", "null"):
        return value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
    ):
        raise ConfigError(
            f"allowed origin {origin!r} must look like 'https://app.example.com[:port]'"
        )
    return value


# -- the browser's messages -----------------------------------------------------------

MessageId = str | int | None


class BadMessage(Exception):
    """A browser message that is not one of the protocol's; ``id`` when it had one."""

    def __init__(self, message: str, id: MessageId = None) -> None:
        super().__init__(message)
        self.id = id


@dataclass(frozen=True, slots=True)
class Call:
    id: MessageId
    type: str
    payload: Any
    timeout: float | None


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: MessageId
    pattern: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: MessageId
    pattern: str


def parse(text: str) -> Call | Subscribe | Unsubscribe:
    """One browser message (a JSON object) as a request.

    Beyond JSON, refused: NaN and infinite numbers, nesting deeper than
    :data:`MAX_DEPTH`, and lone surrogates (``"\\ud800"``), which no UTF-8 frame or
    msgpack string can carry: each would fail later, far from the browser's mistake.
    Request types and patterns are topic-shaped names: no control characters, and a
    call's type has no wildcard or empty segment.

    Raises:
        BadMessage: not JSON, not an object, or fields missing or of the wrong kind.
    """
    try:
        message = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise BadMessage("a message must be a JSON object")
    msg_id = message.get("id")
    if not (
        msg_id is None
        or (isinstance(msg_id, int) and not isinstance(msg_id, bool))
        or (isinstance(msg_id, str) and len(msg_id) <= _MAX_ID_LEN and _is_text(msg_id))
    ):
        raise BadMessage(f"id must be a number or a string of at most {_MAX_ID_LEN} characters")
    _check_value(text, message, msg_id)
    op = message.get("op", "call")
    if op == "call":
        kind = message.get("type")
        if not isinstance(kind, str) or not _is_type_name(kind):
            raise BadMessage(
                "type must be a name of at most 200 characters: dot-separated non-empty "
                "segments, no wildcards, no control characters",
                msg_id,
            )
        timeout = message.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise BadMessage("timeout must be a positive number of seconds", msg_id)
        return Call(msg_id, kind, message.get("payload"), None if timeout is None else timeout)
    if op in ("subscribe", "unsubscribe"):
        pattern = message.get("pattern")
        try:
            topics.check_pattern(pattern)  # type: ignore[arg-type]
        except ConfigError as exc:
            raise BadMessage(str(exc), msg_id) from None
        assert isinstance(pattern, str)
        if _CONTROL.search(pattern):
            raise BadMessage("pattern must not contain control characters", msg_id)
        return Subscribe(msg_id, pattern) if op == "subscribe" else Unsubscribe(msg_id, pattern)
    shown = repr(op) if isinstance(op, str) and len(op) <= 40 else "of this kind"
    raise BadMessage(f"unknown op {shown}: use 'call', 'subscribe' or 'unsubscribe'", msg_id)


def dumps(value: Any) -> str:
    """Compact JSON that JavaScript's ``JSON.parse`` accepts (no NaN or Infinity).

    Raises:
        TypeError, ValueError, RecursionError: the value has no JSON form.
    """
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def error_reply(msg_id: MessageId, kind: str, message: str, **extra: Any) -> str:
    """``{"id": ..., "error": {"kind": ..., "message": ..., **extra}}`` as JSON."""
    return dumps({"id": msg_id, "error": {"kind": kind, "message": message, **extra}})


_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# A JSON escape of a UTF-16 surrogate (paired ones decode to one character, lone ones
# stay surrogates); rarely in real text, so its absence spares walking the message.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal[:20]} is beyond a double")
    return value


def _is_type_name(name: str) -> bool:
    if not name or len(name) > 200 or _CONTROL.search(name):
        return False
    return all(segment and segment not in ("*", "#") for segment in name.split("."))


def _check_value(text: str, message: dict[str, Any], msg_id: MessageId) -> None:
    """Refuse nesting beyond MAX_DEPTH and strings holding lone surrogates.

    Raises:
        BadMessage: either.
    """
    # Fewer brackets than the limit cannot nest deeper: most messages stop here.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        level: list[Any] = [message]
        for _ in range(MAX_DEPTH):
            level = [
                child
                for value in level
                for child in (value.values() if type(value) is dict else value)
                if type(child) is dict or type(child) is list
            ]
            if not level:
                break
        else:
            raise BadMessage(f"arrays and objects must be nested at most {MAX_DEPTH} deep", msg_id)
    if _SURROGATE_ESCAPE.search(text) and not _is_text(json.dumps(message, ensure_ascii=False)):
        raise BadMessage("strings must not hold lone surrogates (not Unicode text)", msg_id)


def _is_text(value: str) -> bool:
    """Whether ``value`` has a UTF-8 form (no lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
