"""A private mesh from one secret: key derivation and advertisement authentication.

Pure functions (hashlib and hmac only). The transport turns :attr:`MeshKeys.curve_secret`
into a CurveZMQ keypair; components sign their advertisements with
:attr:`MeshKeys.ad_key` and ignore advertisements that do not verify.

KDF (normative; ``docs/security.md``)::

    master = scrypt(secret UTF-8, salt=b"meshrpc/mesh/v1", n=2**14, r=8, p=1, dklen=32)
    curve_secret = HMAC-SHA256(master, b"curve25519 secret key")   # 32 bytes
    ad_key       = HMAC-SHA256(master, b"advertisement mac key")
    key_id       = HMAC-SHA256(master, b"key id")[:6].hex()         # not secret

scrypt makes guessing a weak secret from a captured advertisement MAC expensive;
the derived values are cached per secret, so a process pays the cost once.

Advertisement MAC: ``base64url(HMAC-SHA256(ad_key, canonical)[:16])`` where canonical
is every TXT property but ``mac`` (``kid`` and ``ts`` included), sorted by key, as
``key=value`` lines joined by newlines.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from meshrpc._protocol.advertisement import Advertisement
from meshrpc.errors import ConfigError

__all__ = [
    "AD_MAX_SKEW",
    "FOREIGN",
    "MeshKeys",
    "Secret",
    "derive",
    "sign",
    "verify",
]

_SALT: Final = b"meshrpc/mesh/v1"
_MIN_SECRET_LEN: Final = 16
FOREIGN: Final = "signed for another mesh"
AD_MAX_SKEW: Final = 300  # s an advertisement's timestamp may be ahead of our clock


class Secret:
    """A mesh secret that never shows itself: not in ``repr``, ``str`` or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str) or len(value) < _MIN_SECRET_LEN:
            raise ConfigError(
                f"a mesh secret must be a string of at least {_MIN_SECRET_LEN} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(
            self._value.encode(), other._value.encode()
        )

    def __hash__(self) -> int:
        return hash(self._value)  # per process (randomised): reveals nothing outside


@dataclass(frozen=True, slots=True)
class MeshKeys:
    """What a member derives from the secret. ``key_id`` is public (it names the mesh
    in advertisements and ZAP domains); the rest never leaves the process."""

    key_id: str
    curve_secret: bytes = field(repr=False)
    ad_key: bytes = field(repr=False)


def derive(secret: Secret) -> MeshKeys:
    """Derive the mesh keys (cached: scrypt runs once per secret and process)."""
    return _derive(secret.reveal())


@functools.lru_cache(maxsize=8)
def _derive(secret: str) -> MeshKeys:
    master = hashlib.scrypt(secret.encode(), salt=_SALT, n=2**14, r=8, p=1, dklen=32)
    return MeshKeys(
        key_id=_mac(master, b"key id")[:6].hex(),
        curve_secret=_mac(master, b"curve25519 secret key"),
        ad_key=_mac(master, b"advertisement mac key"),
    )


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _canonical(props: Mapping[str, str]) -> bytes:
    # Every property but the MAC, sorted, one "key=value" per line: keys cannot contain
    # "=" or newlines, so two different property sets never encode alike.
    return "\n".join(f"{k}={props[k]}" for k in sorted(props) if k != "mac").encode()


def sign(ad: Advertisement, keys: MeshKeys, now: float | None = None) -> Advertisement:
    """``ad`` with ``key_id``, ``issued`` and a MAC over all of its properties."""
    issued = int(time.time() if now is None else now)
    unsigned = dataclasses.replace(ad, key_id=keys.key_id, issued=issued, mac="")
    tag = _mac(keys.ad_key, _canonical(unsigned.to_properties()))[:16]
    return dataclasses.replace(unsigned, mac=base64.urlsafe_b64encode(tag).rstrip(b"=").decode())


def verify(ad: Advertisement, keys: MeshKeys, now: float | None = None) -> str | None:
    """``None`` if ``ad`` carries a valid MAC under ``keys``, else why not."""
    if not ad.mac:
        return "not signed"
    if ad.key_id != keys.key_id:
        return FOREIGN
    if ad.issued > (time.time() if now is None else now) + AD_MAX_SKEW:
        return "timestamp in the future"
    try:
        given = base64.urlsafe_b64decode(ad.mac + "=" * (-len(ad.mac) % 4))
    except ValueError:
        return "bad mac encoding"
    props = dataclasses.replace(ad, mac="").to_properties()
    if not hmac.compare_digest(given, _mac(keys.ad_key, _canonical(props))[:16]):
        return "bad mac"
    return None
