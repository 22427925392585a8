"""Raw pyzmq baselines: a blocking ROUTER server and two DEALER clients.

Run as a child process by ``roundtrip.py``::

    python bench/_zmq_side.py server                      # prints "READY tcp://127.0.0.1:PORT"
    python bench/_zmq_side.py blocking ENDPOINT [params]  # prints "RESULT {...}"
    python bench/_zmq_side.py asyncio ENDPOINT [params]   # prints "RESULT {...}"

``ENDPOINT`` may be several, comma-separated (``scaling.py``): the DEALER connects to
every one and ZeroMQ spreads the calls round-robin over the servers.

Wire format (both directions): DEALER sends ``[call_id, msgpack(payload)]``; the
ROUTER sees ``[identity, call_id, msgpack(payload)]`` and answers
``[identity, call_id, msgpack(result)]``. ``call_id`` is an 8-byte counter, used by the
clients to match replies to calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import zmq
import zmq.asyncio
from _common import (
    EXPECTED,
    BenchError,
    ClientParams,
    RunResult,
    add_client_params,
    async_sequential,
    client_params,
    emit_error,
    emit_result,
    make_payload,
    sequential_result,
)

RECV_TIMEOUT_MS = 5000  # a client gives up on a reply after this long
SERVER_POLL_MS = 500  # how often an idle server checks its lifetime and its parent


def _call_id(n: int) -> bytes:
    return n.to_bytes(8, "little")


# --------------------------------------------------------------------------- server


def serve(max_seconds: float) -> None:
    """Blocking ROUTER loop; stops after ``max_seconds`` or when its parent goes away."""
    parent = os.getppid()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, SERVER_POLL_MS)
    try:
        sock.bind("tcp://127.0.0.1:*")
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        sys.stdout.write(f"READY {endpoint}\n")
        sys.stdout.flush()
        unpackb, packb = msgpack.unpackb, msgpack.packb
        recv, send = sock.recv_multipart, sock.send_multipart
        deadline = time.monotonic() + max_seconds
        while True:
            try:
                ident, cid, body = recv()
            except zmq.Again:
                if time.monotonic() > deadline or os.getppid() != parent:
                    return
                continue
            p = unpackb(body)
            send([ident, cid, packb(p["a"] + p["b"])])
    finally:
        sock.close(linger=0)
        ctx.term()


def _connect(sock: zmq.Socket[bytes] | zmq.asyncio.Socket, endpoints: str) -> None:
    for endpoint in endpoints.split(","):
        sock.connect(endpoint)


# -------------------------------------------------------------------- blocking client


def _blocking_sequential(
    sock: zmq.Socket[bytes], payload: dict[str, Any], n: int, limit: float
) -> tuple[list[int], float]:
    latencies: list[int] = []
    packb, unpackb = msgpack.packb, msgpack.unpackb
    now_ns = time.perf_counter_ns
    start = time.perf_counter()
    deadline = start + limit
    for i in range(n):
        cid = _call_id(i)
        t0 = now_ns()
        sock.send_multipart([cid, packb(payload)])
        rid, body = sock.recv_multipart()
        result = unpackb(body)
        latencies.append(now_ns() - t0)
        if rid != cid or result != EXPECTED:
            raise BenchError(f"bad reply {rid!r}={result!r} to call {i}")
        if time.perf_counter() > deadline:
            raise BenchError(f"sequential phase exceeded {limit:.0f} s")
    return latencies, time.perf_counter() - start


def _blocking_pipelined(
    sock: zmq.Socket[bytes], payload: dict[str, Any], n: int, window: int, limit: float
) -> float:
    packb, unpackb = msgpack.packb, msgpack.unpackb
    send, recv = sock.send_multipart, sock.recv_multipart
    outstanding: set[bytes] = set()
    sent = done = 0
    start = time.perf_counter()
    deadline = start + limit
    while sent < min(window, n):
        cid = _call_id(sent)
        outstanding.add(cid)
        send([cid, packb(payload)])
        sent += 1
    while done < n:
        rid, body = recv()
        try:
            outstanding.remove(rid)
        except KeyError:
            raise BenchError(f"reply to unknown call {rid!r}") from None
        if unpackb(body) != EXPECTED:
            raise BenchError("wrong result")
        done += 1
        if sent < n:
            cid = _call_id(sent)
            outstanding.add(cid)
            send([cid, packb(payload)])
            sent += 1
        if time.perf_counter() > deadline:
            raise BenchError(f"in-flight phase exceeded {limit:.0f} s")
    return time.perf_counter() - start


def run_blocking_client(endpoint: str, params: ClientParams) -> RunResult:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    try:
        _connect(sock, endpoint)
        limit = params.phase_time_limit
        payload = make_payload(params.payload_kib)
        _blocking_sequential(sock, payload, params.warmup, limit)
        _blocking_pipelined(sock, payload, params.warmup * 4, params.window, limit)
        latencies, seq_s = _blocking_sequential(sock, payload, params.seq_calls, limit)
        inflight_s = _blocking_pipelined(sock, payload, params.inflight_calls, params.window, limit)
    except zmq.Again:
        raise BenchError(f"no reply within {RECV_TIMEOUT_MS} ms") from None
    finally:
        sock.close(linger=0)
        ctx.term()
    return sequential_result(latencies, seq_s, params.inflight_calls, inflight_s)


# --------------------------------------------------------------------- asyncio client


class AsyncioClient:
    """Hand-written zmq.asyncio client: one reader task resolving futures by call id."""

    def __init__(self, sock: zmq.asyncio.Socket, payload: dict[str, Any]) -> None:
        self._sock = sock
        self._payload = payload
        self._pending: dict[bytes, asyncio.Future[int]] = {}
        self._next = 0

    async def read_replies(self) -> None:
        recv, unpackb, pending = self._sock.recv_multipart, msgpack.unpackb, self._pending
        while True:
            rid, body = await recv()
            fut = pending.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(unpackb(body))

    async def call(self) -> int:
        cid = _call_id(self._next)
        self._next += 1
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[cid] = fut
        try:
            await self._sock.send_multipart([cid, msgpack.packb(self._payload)])
            return await fut
        finally:
            self._pending.pop(cid, None)


async def _asyncio_inflight(call: Callable[[], Awaitable[object]], n: int, window: int) -> float:
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < n:
            issued += 1
            if await call() != EXPECTED:
                raise BenchError("wrong result")

    start = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(window):
            tg.create_task(worker())
    return time.perf_counter() - start


async def _asyncio_main(endpoint: str, params: ClientParams) -> RunResult:
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    client = AsyncioClient(sock, make_payload(params.payload_kib))
    limit = params.phase_time_limit
    try:
        _connect(sock, endpoint)
        reader = asyncio.create_task(client.read_replies())
        try:
            async with asyncio.timeout(limit):
                await async_sequential(client.call, params.warmup)
                await _asyncio_inflight(client.call, params.warmup * 4, params.window)
            async with asyncio.timeout(limit):
                latencies, seq_s = await async_sequential(client.call, params.seq_calls)
            async with asyncio.timeout(limit):
                inflight_s = await _asyncio_inflight(
                    client.call, params.inflight_calls, params.window
                )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    except TimeoutError:
        raise BenchError(f"a phase exceeded {limit:.0f} s") from None
    finally:
        sock.close(linger=0)
        ctx.term()
    return sequential_result(latencies, seq_s, params.inflight_calls, inflight_s)


def run_asyncio_client(endpoint: str, params: ClientParams) -> RunResult:
    return asyncio.run(_asyncio_main(endpoint, params))


# ----------------------------------------------------------------------------- entry


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_zmq_side.py")
    sub = parser.add_subparsers(dest="role", required=True)
    server = sub.add_parser("server")
    server.add_argument("--max-seconds", type=float, default=900.0)
    for role in ("blocking", "asyncio"):
        client = sub.add_parser(role)
        client.add_argument("endpoint")
        add_client_params(client)
    args = parser.parse_args(argv)

    if args.role == "server":
        serve(args.max_seconds)
        return 0
    if not all(e.startswith("tcp://127.") for e in args.endpoint.split(",")):
        emit_error(f"refusing non-loopback endpoint {args.endpoint}")
        return 1
    run = run_blocking_client if args.role == "blocking" else run_asyncio_client
    try:
        result = run(args.endpoint, client_params(args))
    except BenchError as exc:
        emit_error(str(exc))
        return 1
    emit_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
