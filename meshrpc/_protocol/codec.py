"""Bytes to messages and back. Decoding raises nothing but :class:`ProtocolError`.

Limits: every decode is capped at ``max_size`` bytes and msgpack's own container
and string limits follow from the frame's length, so a hostile frame costs at most a
small multiple of its size in memory.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from meshrpc._protocol.envelope import (
    DRAINING,
    ERROR,
    EVENT,
    INFO,
    INFO_REQUEST,
    PING,
    PONG,
    PROTOCOL_VERSION,
    REPLY,
    REQUEST,
    WELCOME,
    Draining,
    ErrorReply,
    Event,
    Gossip,
    Info,
    InfoRequest,
    Message,
    Ping,
    Pong,
    Reply,
    Request,
    Welcome,
)
from meshrpc.errors import MessageTooLarge, ProtocolError

__all__ = [
    "DEFAULT_MAX_SIZE",
    "decode",
    "decode_event",
    "encode",
    "encode_error",
    "encode_event",
    "encode_reply",
    "encode_request",
    "pack_payload",
]

DEFAULT_MAX_SIZE: Final = 16 * 1024 * 1024
_INT64_MAX: Final = 2**63 - 1
_MAX_TOPIC: Final = 200  # as topics.check_topic: bounds every per-topic cache
_MAX_GOSSIP: Final = 10_000  # advertisements in one INFO (the discovery cap)

_DRAINING_FRAME: Final = msgpack.packb([PROTOCOL_VERSION, DRAINING])
_WELCOME_FRAME: Final = msgpack.packb([PROTOCOL_VERSION, WELCOME])
_EMPTY_META: Final[dict[str, Any]] = {}


def pack_payload(value: Any) -> bytes:
    """Encode one value as msgpack.

    Raises:
        ProtocolError: the value (or something inside it) is not msgpack-serialisable.
    """
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(f"payload is not msgpack-serialisable: {exc}") from None


def encode_request(
    call_id: int,
    type: str,
    deadline_ms: int,
    payload: Any,
    *,
    attempt: int = 1,
    meta: dict[str, Any] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """Encode a REQUEST.

    Raises:
        ProtocolError: the payload or meta is not serialisable.
        MessageTooLarge: the frame would exceed ``max_size``.
    """
    frame = pack_payload(
        [PROTOCOL_VERSION, REQUEST, call_id, type, deadline_ms, attempt, meta or {}, payload]
    )
    _check_size(frame, max_size)
    return frame


def encode_reply(call_id: int, payload: Any, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Encode a REPLY.

    Raises:
        ProtocolError: the payload is not serialisable.
        MessageTooLarge: the frame would exceed ``max_size``.
    """
    frame = pack_payload([PROTOCOL_VERSION, REPLY, call_id, payload])
    _check_size(frame, max_size)
    return frame


def encode_event(
    seq: int,
    topic: str,
    payload: Any,
    *,
    meta: dict[str, Any] | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> bytes:
    """Encode an EVENT.

    Raises:
        ProtocolError: the payload or meta is not serialisable.
        MessageTooLarge: the frame would exceed ``max_size``.
    """
    frame = pack_payload([PROTOCOL_VERSION, EVENT, seq, topic, meta or _EMPTY_META, payload])
    _check_size(frame, max_size)
    return frame


def encode_error(
    call_id: int, code: str, error_type: str, message: str, traceback: str | None = None
) -> bytes:
    """Encode an ERROR; the texts are made valid UTF-8 so this cannot fail."""
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            PROTOCOL_VERSION,
            ERROR,
            call_id,
            _utf8(code),
            _utf8(error_type),
            _utf8(message),
            None if traceback is None else _utf8(traceback),
        ],
        use_bin_type=True,
    )


def _utf8(text: str) -> str:
    # Exception messages may hold lone surrogates (surrogateescape'd file names),
    # which msgpack refuses to encode.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def encode(message: Message, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Encode any message.

    Raises:
        ProtocolError: a payload is not serialisable.
        MessageTooLarge: the frame would exceed ``max_size``.
    """
    if isinstance(message, Request):
        return encode_request(
            message.call_id,
            message.type,
            message.deadline_ms,
            message.payload,
            attempt=message.attempt,
            meta=message.meta,
            max_size=max_size,
        )
    if isinstance(message, Reply):
        return encode_reply(message.call_id, message.payload, max_size=max_size)
    if isinstance(message, ErrorReply):
        return encode_error(
            message.call_id, message.code, message.error_type, message.message, message.traceback
        )
    if isinstance(message, Draining):
        return _DRAINING_FRAME  # type: ignore[no-any-return]
    if isinstance(message, Welcome):
        return _WELCOME_FRAME  # type: ignore[no-any-return]
    if isinstance(message, Event):
        return encode_event(
            message.seq, message.topic, message.payload, meta=message.meta, max_size=max_size
        )
    if isinstance(message, Ping):
        return pack_payload([PROTOCOL_VERSION, PING, message.nonce])
    if isinstance(message, Pong):
        return pack_payload([PROTOCOL_VERSION, PONG, message.nonce])
    if isinstance(message, InfoRequest):
        frame = pack_payload(
            [PROTOCOL_VERSION, INFO_REQUEST, message.nonce, _gossip(message.ads),
             list(message.gone)]
        )  # fmt: skip
    elif isinstance(message, Info):
        frame = pack_payload(
            [PROTOCOL_VERSION, INFO, message.nonce, _gossip(message.own), _gossip(message.known),
             [list(g) for g in message.gone]]
        )  # fmt: skip
    else:
        raise ProtocolError(f"not a message: {message!r}")
    _check_size(frame, max_size)
    return frame


def _gossip(items: tuple[Gossip, ...]) -> list[list[Any]]:
    return [[g.props, g.age_ms] for g in items]


def _read_gossip(value: Any, what: str) -> tuple[Gossip, ...]:
    if not isinstance(value, list) or len(value) > _MAX_GOSSIP:
        raise ProtocolError(f"{what} must be a list of at most {_MAX_GOSSIP} entries")
    items = []
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], dict)):
            raise ProtocolError(f"{what} entries must be [properties, age]")
        props, age = entry
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in props.items()):
            raise ProtocolError(f"{what} properties must map strings to strings")
        if not isinstance(age, int) or isinstance(age, bool) or not 0 <= age <= _INT64_MAX:
            raise ProtocolError(f"{what} age must be a non-negative integer")
        items.append(Gossip(props, age))
    return tuple(items)


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Message:
    """Decode one frame into a message.

    Raises:
        ProtocolError: for any input that is not a valid message of this version.
    """
    if len(data) > max_size:
        raise ProtocolError(f"frame of {len(data)} bytes exceeds the limit of {max_size}")
    try:
        # unpackb caps string/bin/array/map lengths at len(data), and len(data) was
        # checked above, so no field can claim more memory than the frame brings.
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises ValueError/TypeError subclasses and more
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, list) or len(obj) < 2:
        raise ProtocolError("frame is not a message array")
    version, kind = obj[0], obj[1]
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(f"unsupported protocol version {version!r}")
    if kind == REQUEST:
        return _request(obj)
    if kind == REPLY:
        _expect_len(obj, 4, "REPLY")
        return Reply(_call_id(obj[2]), obj[3])
    if kind == ERROR:
        _expect_len(obj, 7, "ERROR")
        code, error_type, message, tb = obj[3], obj[4], obj[5], obj[6]
        if not (isinstance(code, str) and isinstance(error_type, str) and isinstance(message, str)):
            raise ProtocolError("ERROR fields must be strings")
        if tb is not None and not isinstance(tb, str):
            raise ProtocolError("ERROR traceback must be a string or nil")
        return ErrorReply(_call_id(obj[2]), code, error_type, message, tb)
    if kind == DRAINING:
        _expect_len(obj, 2, "DRAINING")
        return Draining()
    if kind == EVENT:
        _expect_len(obj, 6, "EVENT")
        seq, topic, meta = obj[2], obj[3], obj[4]
        if not isinstance(topic, str) or not 0 < len(topic) <= _MAX_TOPIC:
            raise ProtocolError(f"EVENT topic must be a string of 1 to {_MAX_TOPIC} characters")
        if not isinstance(meta, dict):
            raise ProtocolError("EVENT meta must be a map")
        return Event(_call_id(seq), topic, obj[5], meta)
    if kind == WELCOME:
        _expect_len(obj, 2, "WELCOME")
        return Welcome()
    if kind in (PING, PONG):
        _expect_len(obj, 3, "PING/PONG")
        nonce = _call_id(obj[2])
        return Ping(nonce) if kind == PING else Pong(nonce)
    if kind == INFO_REQUEST:
        _expect_len(obj, 5, "INFO_REQUEST")
        gone = obj[4]
        if not isinstance(gone, list) or len(gone) > _MAX_GOSSIP:
            raise ProtocolError("INFO_REQUEST gone must be a list")
        if not all(isinstance(g, str) and 0 < len(g) <= 200 for g in gone):
            raise ProtocolError("INFO_REQUEST gone must list instance ids")
        return InfoRequest(_call_id(obj[2]), _read_gossip(obj[3], "INFO_REQUEST ads"), tuple(gone))
    if kind == INFO:
        _expect_len(obj, 6, "INFO")
        gone = obj[5]
        if not isinstance(gone, list) or len(gone) > _MAX_GOSSIP:
            raise ProtocolError("INFO gone must be a list")
        withdrawn = []
        for entry in gone:
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and 0 < len(entry[0]) <= 200
                and isinstance(entry[1], int)
                and not isinstance(entry[1], bool)
                and 0 <= entry[1] <= _INT64_MAX
            ):
                raise ProtocolError("INFO gone entries must be [instance id, age]")
            withdrawn.append((entry[0], entry[1]))
        return Info(
            _call_id(obj[2]),
            _read_gossip(obj[3], "INFO own"),
            _read_gossip(obj[4], "INFO known"),
            tuple(withdrawn),
        )
    raise ProtocolError(f"unknown message kind {kind!r}")


def decode_event(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> list[Any] | None:
    """Fast path for the subscriber: ``[1, 7, seq, topic, meta, payload]`` checked and
    returned as the list itself, ``None`` for WELCOME.

    Raises:
        ProtocolError: anything else, exactly as :func:`decode` would.
    """
    if len(data) <= max_size:
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:  # decode() below reports it properly
            obj = None
        if (
            type(obj) is list
            and len(obj) == 6
            and obj[0] == PROTOCOL_VERSION
            and obj[1] == EVENT
            and type(obj[2]) is int
            and 0 <= obj[2] <= _INT64_MAX
            and type(obj[3]) is str
            and 0 < len(obj[3]) <= _MAX_TOPIC
            and type(obj[4]) is dict
        ):
            return obj
    message = decode(data, max_size=max_size)
    if isinstance(message, Welcome):
        return None
    raise ProtocolError(f"expected an EVENT, got {type(message).__name__}")


def request_call_id(data: bytes) -> int | None:
    """Best-effort call id of an undecodable REQUEST, so the caller can get an error reply."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # the frame was already found undecodable; nothing more to learn
        return None
    if isinstance(obj, list) and len(obj) > 2 and obj[1] == REQUEST:
        try:
            return _call_id(obj[2])
        except ProtocolError:
            return None
    return None


def _request(obj: list[Any]) -> Request:
    _expect_len(obj, 8, "REQUEST")
    call_id, type_, deadline_ms, attempt, meta, payload = obj[2:8]
    if not isinstance(type_, str):
        raise ProtocolError("REQUEST type must be a string")
    if not isinstance(deadline_ms, int) or isinstance(deadline_ms, bool) or deadline_ms < 0:
        raise ProtocolError("REQUEST deadline must be a non-negative integer")
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise ProtocolError("REQUEST attempt must be a positive integer")
    if not isinstance(meta, dict):
        raise ProtocolError("REQUEST meta must be a map")
    return Request(_call_id(call_id), type_, deadline_ms, payload, attempt, meta)


def _call_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _INT64_MAX:
        raise ProtocolError("call id must be a non-negative 64-bit integer")
    return value


def _expect_len(obj: list[Any], n: int, what: str) -> None:
    if len(obj) != n:
        raise ProtocolError(f"{what} must have {n} fields, got {len(obj)}")


def _check_size(frame: bytes, max_size: int) -> None:
    if len(frame) > max_size:
        raise MessageTooLarge(len(frame), max_size)
