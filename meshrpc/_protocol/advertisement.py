"""What a component announces, and its encoding as DNS-SD TXT properties.

TXT strings are limited to 255 bytes each, so the list of types is split over as
many ``t0``, ``t1``... keys as needed (the idempotent ones likewise over ``i0``,
``i1``...). Decoding rejects anything malformed with :class:`ProtocolError`;
discovery backends drop (and count) such records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from meshrpc._protocol.envelope import PROTOCOL_VERSION
from meshrpc.errors import ConfigError, ProtocolError

__all__ = [
    "KINDS",
    "Advertisement",
    "check_type_name",
]

KINDS: Final = ("responder", "requester", "publisher", "subscriber")

_TXT_VALUE_MAX: Final = 250  # leaves room for "tNN=" inside the 255-byte string limit
_MAX_TYPES: Final = 4096
_MAX_TYPE_LEN: Final = 200
_ENDPOINT_RE: Final = re.compile(r"^tcp://(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$")


def check_type_name(type: str) -> str:
    """Validate a message type (or topic) name.

    Raises:
        ConfigError: not a non-empty string of at most 200 characters without newlines.
    """
    if not isinstance(type, str) or not type or len(type) > _MAX_TYPE_LEN or "\n" in type:
        raise ConfigError(
            f"message type {type!r} must be a non-empty string of at most "
            f"{_MAX_TYPE_LEN} characters without newlines"
        )
    if not type.isascii():
        try:
            type.encode()
        except UnicodeEncodeError:  # a lone surrogate: it could never go on the wire
            raise ConfigError(f"message type {type!r} is not valid Unicode text") from None
    return type


@dataclass(frozen=True, slots=True)
class Advertisement:
    """One component's announcement. ``instance_id`` is unique per process start."""

    instance_id: str
    name: str
    kind: str
    endpoint: str
    namespace: str = ""
    key: str = ""
    environment: str = ""
    version: str = ""
    types: tuple[str, ...] = ()
    idempotent: tuple[str, ...] = ()
    """The subset of ``types`` whose handlers are safe to run more than once."""
    protocol: int = PROTOCOL_VERSION
    host: str = ""
    pid: int = 0
    key_id: str = ""
    """Public id of the mesh secret that signed this (empty: unsigned)."""
    issued: int = 0
    """Unix time the signature was made."""
    mac: str = ""
    """Authentication tag over every other property (``meshrpc.security``)."""
    batches: bool = False
    """It takes several frames in one ZeroMQ message (``docs/protocol.md``)."""

    def same_mesh(self, namespace: str, key: str, environment: str) -> bool:
        """Whether this component may talk to one with the given partition labels."""
        return (self.namespace, self.key, self.environment) == (namespace, key, environment)

    def address(self) -> tuple[str, int]:
        """The endpoint's host and port.

        Raises:
            ProtocolError: the endpoint is not ``tcp://a.b.c.d:port``.
        """
        match = _ENDPOINT_RE.match(self.endpoint)
        if match is None:
            raise ProtocolError(f"endpoint {self.endpoint!r} is not tcp://IPv4:port")
        return match.group(1), int(match.group(2))

    def to_properties(self) -> dict[str, str]:
        """TXT properties; every key=value pair fits one 255-byte TXT string."""
        props = {
            "v": str(self.protocol),
            "id": self.instance_id,
            "n": self.name,
            "k": self.kind,
            "e": self.endpoint,
            "ns": self.namespace,
            "key": self.key,
            "env": self.environment,
            "ver": self.version,
            "h": self.host,
            "pid": str(self.pid),
        }
        if self.key_id:
            props["kid"] = self.key_id
            props["ts"] = str(self.issued)
        if self.batches:
            props["mp"] = "1"
        if self.mac:
            props["mac"] = self.mac
        for name, value in props.items():
            if len(name) + 1 + len(value.encode()) > 255:
                raise ConfigError(f"advertised {name!r} is too long: {value[:40]!r}...")
        for index, chunk in enumerate(_chunks(self.types)):
            props[f"t{index}"] = chunk
        for index, chunk in enumerate(_chunks(self.idempotent)):
            props[f"i{index}"] = chunk
        return props

    @classmethod
    def from_properties(cls, props: Mapping[bytes | str, bytes | str | None]) -> Advertisement:
        """Decode TXT properties.

        Raises:
            ProtocolError: a required property is missing or malformed.
        """
        text: dict[str, str] = {}
        for raw_key, raw_value in props.items():
            try:
                k = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
                if raw_value is None:
                    v = ""
                elif isinstance(raw_value, bytes):
                    v = raw_value.decode()
                else:
                    v = raw_value
            except UnicodeDecodeError:
                raise ProtocolError("advertisement property is not UTF-8") from None
            text[k] = v
        try:
            protocol = int(text["v"])
            pid = int(text.get("pid") or 0)
            ad = cls(
                instance_id=text["id"],
                name=text["n"],
                kind=text["k"],
                endpoint=text.get("e", ""),
                namespace=text.get("ns", ""),
                key=text.get("key", ""),
                environment=text.get("env", ""),
                version=text.get("ver", ""),
                types=_join_types(text, "t"),
                idempotent=_join_types(text, "i"),
                protocol=protocol,
                host=text.get("h", ""),
                pid=pid,
                key_id=text.get("kid", ""),
                issued=int(text.get("ts") or 0),
                mac=text.get("mac", ""),
                batches=text.get("mp") == "1",
            )
        except (KeyError, ValueError) as exc:
            raise ProtocolError(f"malformed advertisement: {exc!r}") from None
        if not ad.instance_id or ad.kind not in KINDS:
            raise ProtocolError(f"malformed advertisement: id={ad.instance_id!r} kind={ad.kind!r}")
        if ad.endpoint:
            ad.address()
        return ad


def _chunks(types: tuple[str, ...]) -> list[str]:
    chunks: list[str] = []
    current = ""
    for name in types:
        candidate = f"{current}\n{name}" if current else name
        if len(candidate.encode()) > _TXT_VALUE_MAX and current:
            chunks.append(current)
            candidate = name
        current = candidate
    if current:
        chunks.append(current)
    return chunks


def _join_types(text: dict[str, str], prefix: str) -> tuple[str, ...]:
    types: list[str] = []
    index = 0
    while f"{prefix}{index}" in text:
        types.extend(t for t in text[f"{prefix}{index}"].split("\n") if t)
        index += 1
        if len(types) > _MAX_TYPES:
            raise ValueError("too many types")
    return tuple(types)
