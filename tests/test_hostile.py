"""A raw ZeroMQ peer sends a live responder everything a meshrpc requester would not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import anyio
import msgpack
import pytest
import zmq

from meshrpc import Requester, Responder
from meshrpc._protocol import codec
from meshrpc._protocol.envelope import PROTOCOL_VERSION, REQUEST, ErrorReply, Pong, Reply

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


@pytest.fixture
def raw_dealer() -> Iterator[zmq.Socket[bytes]]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 3000)
    yield sock
    sock.close(linger=0)


async def recv(sock: zmq.Socket[bytes]) -> object:
    # A blocking recv with RCVTIMEO, off the event loop so the responder keeps running.
    frames = await anyio.to_thread.run_sync(sock.recv_multipart)
    assert len(frames) == 1  # one request at a time: nothing to batch a reply with
    return codec.decode(frames[0])


@asynccontextmanager
async def serving(namespace: str, sock: zmq.Socket[bytes]) -> AsyncIterator[Responder]:
    """A live echo responder, with ``sock`` connected to it."""
    target = responder(namespace)
    async with target:
        assert target.endpoint is not None
        sock.connect(target.endpoint)
        yield target


def responder(namespace: str) -> Responder:
    r = Responder(name="target", namespace=namespace, max_message=64 * 1024)

    @r.on("echo")
    async def echo(payload: object) -> object:
        return payload

    return r


async def test_garbage_is_answered_or_dropped_and_serving_goes_on(
    namespace: str, raw_dealer: zmq.Socket[bytes]
) -> None:
    async with serving(namespace, raw_dealer) as target:
        # Undecodable bytes: counted and dropped (no call id to answer).
        raw_dealer.send(b"\xc1\xc1\xc1")
        raw_dealer.send(b"")
        # Several frames in one message are several messages: each of these is garbage.
        raw_dealer.send_multipart([b"a", b"b", b"c"])
        # Unknown version: an explicit error naming the problem (mixed deployments).
        raw_dealer.send(msgpack.packb([99, REQUEST, 1, "echo", 1000, 1, {}, None]))
        reply = await recv(raw_dealer)
        assert isinstance(reply, ErrorReply)
        assert (reply.call_id, reply.code) == (1, "bad_request")
        assert "unsupported protocol version 99" in reply.message
        # Unknown kind: dropped.
        raw_dealer.send(msgpack.packb([PROTOCOL_VERSION, 77]))
        # A request with a bad field but a readable call id: an error reply.
        raw_dealer.send(msgpack.packb([PROTOCOL_VERSION, REQUEST, 5, 12345, 1000, 1, {}, None]))
        reply = await recv(raw_dealer)
        assert isinstance(reply, ErrorReply)
        assert (reply.call_id, reply.code) == (5, "bad_request")
        # A type the responder does not have: an explicit error, never silence.
        raw_dealer.send(codec.encode_request(6, "no-such-type", 1000, None))
        reply = await recv(raw_dealer)
        assert isinstance(reply, ErrorReply)
        assert (reply.call_id, reply.code) == (6, "unknown_type")
        assert "echo" in reply.message
        # Already expired: refused, not run.
        raw_dealer.send(codec.encode_request(7, "echo", 0, "late"))
        reply = await recv(raw_dealer)
        assert isinstance(reply, ErrorReply)
        assert (reply.call_id, reply.code) == (7, "expired")
        # Deeply nested payload: msgpack's depth limit makes it undecodable.
        raw_dealer.send(
            msgpack.packb([PROTOCOL_VERSION, REQUEST, 8, "echo", 1000, 1, {}, None])[:-1]
            + b"\x91" * 5000
            + b"\xc0"
        )
        # Application-level ping.
        raw_dealer.send(msgpack.packb([PROTOCOL_VERSION, 5, 99]))
        assert await recv(raw_dealer) == Pong(99)
        # Over MAXMSGSIZE: the socket drops the connection; nothing reaches the handler.
        raw_dealer.send(b"\x00" * (200 * 1024))
        stats = target.statistics()
        assert stats["malformed"] >= 7
        assert stats["ok"] == 0
        # And a well-behaved client is served as usual.
        async with Requester(name="good", namespace=namespace) as client:
            assert await client.send("echo", "still fine", timeout=5) == "still fine"


async def test_raw_protocol_request_gets_a_reply(
    namespace: str, raw_dealer: zmq.Socket[bytes]
) -> None:
    # What docs/protocol.md promises another implementation: one frame in, one out.
    async with serving(namespace, raw_dealer):
        raw_dealer.send(msgpack.packb([1, 1, 42, "echo", 5000, 1, {"from": "raw"}, {"x": [1, 2]}]))
        assert await recv(raw_dealer) == Reply(42, {"x": [1, 2]})


async def test_a_multipart_message_of_requests_gets_every_reply(
    namespace: str, raw_dealer: zmq.Socket[bytes]
) -> None:
    # docs/protocol.md: one ZeroMQ message may carry several frames, each a message; the
    # replies may come back batched the same way.
    async with serving(namespace, raw_dealer):
        raw_dealer.send_multipart([codec.encode_request(n, "echo", 5000, n) for n in range(40)])
        replies: list[object] = []
        while len(replies) < 40:
            frames = await anyio.to_thread.run_sync(raw_dealer.recv_multipart)
            replies += [codec.decode(frame) for frame in frames]
        assert sorted(replies, key=lambda r: r.call_id) == [  # type: ignore[attr-defined]
            Reply(n, n) for n in range(40)
        ]


async def test_a_requester_that_never_batches_gets_one_reply_per_message(
    namespace: str, raw_dealer: zmq.Socket[bytes]
) -> None:
    # A peer built from the one-frame-per-message rule (or an older meshrpc) never
    # sent a batch, so it never receives one, however many replies leave in a turn.
    async with serving(namespace, raw_dealer):
        for n in range(40):
            raw_dealer.send(codec.encode_request(n, "echo", 5000, n))
        seen = [await recv(raw_dealer) for _ in range(40)]  # recv asserts one frame each
        assert sorted(r.call_id for r in seen) == list(range(40))  # type: ignore[attr-defined]
