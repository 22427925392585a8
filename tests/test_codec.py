"""Pure protocol tests: no sockets, no event loop."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshrpc._protocol import codec
from meshrpc._protocol.envelope import (
    PROTOCOL_VERSION,
    REQUEST,
    Draining,
    ErrorReply,
    Event,
    Gossip,
    Info,
    InfoRequest,
    Ping,
    Pong,
    Reply,
    Request,
    Welcome,
)
from meshrpc.errors import MessageTooLarge, ProtocolError

payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50)
    | st.binary(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
call_ids = st.integers(min_value=0, max_value=2**63 - 1)
texts = st.text(max_size=40)

gossip = st.builds(
    Gossip,
    props=st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=4),
    age_ms=st.integers(min_value=0, max_value=2**40),
)

messages = st.one_of(
    st.builds(
        Request,
        call_id=call_ids,
        type=st.text(min_size=1, max_size=30),
        deadline_ms=st.integers(min_value=0, max_value=2**32),
        payload=payloads,
        attempt=st.integers(min_value=1, max_value=100),
        meta=st.dictionaries(st.text(max_size=10), payloads, max_size=3),
    ),
    st.builds(Reply, call_id=call_ids, payload=payloads),
    st.builds(
        ErrorReply,
        call_id=call_ids,
        code=texts,
        error_type=texts,
        message=texts,
        traceback=st.none() | texts,
    ),
    st.just(Draining()),
    st.builds(Ping, nonce=call_ids),
    st.builds(Pong, nonce=call_ids),
    st.builds(
        Event,
        seq=call_ids,
        topic=st.text(min_size=1, max_size=30),
        payload=payloads,
        meta=st.dictionaries(st.text(max_size=10), payloads, max_size=3),
    ),
    st.just(Welcome()),
    st.builds(
        InfoRequest,
        nonce=call_ids,
        ads=st.lists(gossip, max_size=3).map(tuple),
        gone=st.lists(st.text(min_size=1, max_size=20), max_size=3).map(tuple),
    ),
    st.builds(
        Info,
        nonce=call_ids,
        own=st.lists(gossip, max_size=2).map(tuple),
        known=st.lists(gossip, max_size=3).map(tuple),
        gone=st.lists(
            st.tuples(st.text(min_size=1, max_size=20), st.integers(0, 2**40)), max_size=3
        ).map(tuple),
    ),
)


@given(messages)
def test_every_message_round_trips(message: object) -> None:
    assert codec.decode(codec.encode(message)) == message  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_message_or_protocol_error(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        codec.decode(data)


@settings(max_examples=300)
@given(st.lists(payloads, min_size=0, max_size=9))
def test_any_msgpack_array_decodes_to_a_message_or_protocol_error(items: list[object]) -> None:
    # Arrays that look like messages get past msgpack and exercise field validation.
    for head in ([], [PROTOCOL_VERSION], [PROTOCOL_VERSION, REQUEST], [PROTOCOL_VERSION, 2]):
        data = msgpack.packb(head + items, use_bin_type=True)
        with contextlib.suppress(ProtocolError):
            codec.decode(data)


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (b"", "undecodable"),
        (b"\xc1", "undecodable"),
        (msgpack.packb({"a": 1}), "not a message array"),
        (msgpack.packb([99, REQUEST]), "unsupported protocol version"),
        (msgpack.packb([True, REQUEST]), "unsupported protocol version"),
        (msgpack.packb([1, 42]), "unknown message kind"),
        (msgpack.packb([1, REQUEST, 1, "t", 100, 1, {}]), "must have 8 fields"),
        (msgpack.packb([1, REQUEST, 1, 5, 100, 1, {}, None]), "type must be a string"),
        (msgpack.packb([1, REQUEST, -1, "t", 100, 1, {}, None]), "call id"),
        (msgpack.packb([1, REQUEST, 1, "t", -5, 1, {}, None]), "deadline"),
        (msgpack.packb([1, REQUEST, 1, "t", 5, 0, {}, None]), "attempt"),
        (msgpack.packb([1, REQUEST, 1, "t", 5, 1, [], None]), "meta"),
        (b"\x91" * 5000 + b"\xc0", "undecodable"),  # nesting deeper than msgpack allows
        (b"\x81\x91\x01\x02", "undecodable"),  # a list used as a map key
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(frame: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        codec.decode(frame)


def test_frames_over_the_limit_are_rejected_before_decoding() -> None:
    frame = codec.encode_reply(1, b"x" * 1000)
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        codec.decode(frame, max_size=100)


def test_sender_refuses_oversized_messages_before_sending() -> None:
    with pytest.raises(MessageTooLarge) as info:
        codec.encode_request(1, "t", 1000, b"x" * 2000, max_size=1000)
    assert info.value.size > 1000
    assert info.value.limit == 1000
    with pytest.raises(MessageTooLarge):
        codec.encode_reply(1, "x" * 2000, max_size=1000)


def test_unserialisable_payload_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not msgpack-serialisable"):
        codec.encode_request(1, "t", 1000, object())
    deep: list[object] = []
    node = deep
    for _ in range(2000):
        child: list[object] = []
        node.append(child)
        node = child
    with pytest.raises(ProtocolError):
        codec.encode_reply(1, deep)


def test_call_id_of_a_bad_request_is_recovered_for_the_error_reply() -> None:
    bad = msgpack.packb([1, REQUEST, 77, 5, 100, 1, {}, None])
    assert codec.request_call_id(bad) == 77
    assert codec.request_call_id(b"\xc1") is None
    assert codec.request_call_id(msgpack.packb([1, 2, 3])) is None


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=200), messages.map(codec.encode)))
def test_event_fast_path_agrees_with_decode(data: bytes) -> None:
    try:
        expected = codec.decode(data)
    except ProtocolError:
        with pytest.raises(ProtocolError):
            codec.decode_event(data)
        return
    if isinstance(expected, Event):
        fast = codec.decode_event(data)
        assert fast is not None
        assert Event(fast[2], fast[3], fast[5], fast[4]) == expected
    elif isinstance(expected, Welcome):
        assert codec.decode_event(data) is None
    else:
        with pytest.raises(ProtocolError, match="expected an EVENT"):
            codec.decode_event(data)
