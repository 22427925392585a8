"""Raw pyzmq PUB/SUB baseline of the pub/sub benchmark, and the workload both sides share.

Run as a child process by ``pubsub.py``::

    python bench/_pubsub_zmq.py pub --events N --hwm H    # "READY tcp://127.0.0.1:PORT"
    python bench/_pubsub_zmq.py sub ENDPOINT --hwm H      # "READY", then "RESULT {...}"

Frames are ``[topic, msgpack(payload)]``; the subscriber subscribes to ``b"price."``.
``--hwm`` sets the PUB's ``SNDHWM`` and the SUB's ``RCVHWM`` (the orchestrator passes
meshrpc's transport default, so both systems queue alike).

Control (the same for the meshrpc side, ``_pubsub_meshrpc.py``): the publisher reads
lines on stdin. ``GO`` starts the measured run; until then the raw publisher sends probe
events (topic ``price.probe``) every 10 ms, and a raw subscriber prints ``READY`` when
the first one arrives, so ``GO`` is only sent once every subscription is live (the slow
joiner problem of PUB/SUB). After publishing its events the publisher prints ``RESULT``
and then sends an end marker (topic ``price.end``) every 50 ms until ``STOP`` (or end
of file) on stdin; then it prints ``FINAL`` and exits. A subscriber counts events until
the first end marker, or until 2 s pass without an event, or until its time limit, and
prints ``RESULT``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq
from _common import RESULT_PREFIX, BenchError, emit_error

# ------------------------------------------------------- the workload (both sides)

TOPIC = "price.X"  # every measured event; payload {"sym": "X", "px": 1.5, "i": i}
TOPIC_PREFIX = "price."  # what subscribers subscribe to (meshrpc: the pattern "price.*")
END_TOPIC = "price.end"  # end marker; payload {"end": events}
PROBE_TOPIC = "price.probe"  # raw only, before GO; payload {"probe": k}

FINAL_PREFIX = "FINAL "
PROBE_INTERVAL_S = 0.01
END_MARKER_INTERVAL_S = 0.05
QUIET_S = 2.0  # a subscriber stops this long after its last event
SUB_TIME_LIMIT_S = 60.0  # ... or this long after it reported READY
GO_TIMEOUT_S = 120.0  # a publisher gives up waiting for GO after this long
STOP_TIMEOUT_S = 180.0  # ... and stops sending end markers after this long
POLL_S = 0.1  # how often an idle subscriber checks its clocks and its parent


def emit(prefix: str, data: dict[str, Any]) -> None:
    """Child side: one ``PREFIX {json}`` line on stdout (``RESULT``, ``FINAL``)."""
    sys.stdout.write(prefix + json.dumps({"ok": True, **data}) + "\n")
    sys.stdout.flush()


def emit_ready(what: str = "") -> None:
    sys.stdout.write(f"READY {what}".rstrip() + "\n")
    sys.stdout.flush()


class Control:
    """The publisher's stdin: ``GO`` starts publishing, ``STOP`` or end of file stops it.

    A daemon thread reads the lines, so both the blocking and the async publishers can
    poll the two events without blocking.
    """

    def __init__(self) -> None:
        self.go = threading.Event()
        self.stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in sys.stdin:
            word = line.strip()
            if word == "GO":
                self.go.set()
            elif word == "STOP":
                break
        self.stop.set()
        self.go.set()  # never leave a waiter hanging; it checks ``stop`` first


@dataclass(slots=True)
class Tally:
    """What one subscriber received of the measured events (sequence numbers ``i``)."""

    received: int = 0
    first_i: int = -1
    last_i: int = -1
    gaps: int = 0  # places where ``i`` was not the previous one + 1
    first_t: float = 0.0  # time.monotonic(), CLOCK_MONOTONIC: comparable across processes
    last_t: float = 0.0

    def add(self, i: int, now: float) -> None:
        if self.received == 0:
            self.first_i, self.first_t = i, now
        elif i != self.last_i + 1:
            self.gaps += 1
        self.last_i, self.last_t = i, now
        self.received += 1

    def to_dict(self, ended_by: str) -> dict[str, Any]:
        elapsed = self.last_t - self.first_t
        return {
            "received": self.received,
            "elapsed_s": elapsed,
            "rate": self.received / elapsed if self.received > 1 and elapsed > 0 else None,
            "first_i": self.first_i,
            "last_i": self.last_i,
            "gaps": self.gaps,
            "first_t": self.first_t,
            "last_t": self.last_t,
            "ended_by": ended_by,
        }


def publish_result(events: int, start: float, end: float, **extra: Any) -> dict[str, Any]:
    elapsed = end - start
    return {
        "published": events,
        "elapsed_s": elapsed,
        "rate": events / elapsed if elapsed > 0 else None,
        "start_t": start,
        "end_t": end,
        **extra,
    }


# ------------------------------------------------------------------------ publisher


def run_publisher(events: int, hwm: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    try:
        sock.bind("tcp://127.0.0.1:*")
        control = Control()
        emit_ready(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        packb, send = msgpack.packb, sock.send_multipart
        topic, probe_topic, end_topic = (t.encode() for t in (TOPIC, PROBE_TOPIC, END_TOPIC))

        deadline = time.monotonic() + GO_TIMEOUT_S
        k = 0
        while not control.go.wait(PROBE_INTERVAL_S):
            send([probe_topic, packb({"probe": k})])
            k += 1
            if time.monotonic() > deadline:
                raise BenchError(f"no GO on stdin within {GO_TIMEOUT_S:.0f} s")
        if control.stop.is_set():
            raise BenchError("stopped before GO")

        start = time.monotonic()
        for i in range(events):
            send([topic, packb({"sym": "X", "px": 1.5, "i": i})])
        end = time.monotonic()
        emit(RESULT_PREFIX, publish_result(events, start, end, probes=k))

        deadline = time.monotonic() + STOP_TIMEOUT_S
        marker = packb({"end": events})
        while not control.stop.wait(END_MARKER_INTERVAL_S) and time.monotonic() < deadline:
            send([end_topic, marker])
        emit(FINAL_PREFIX, {})
    finally:
        sock.close(linger=0)
        ctx.term()


# ----------------------------------------------------------------------- subscriber


def run_subscriber(endpoint: str, hwm: int) -> dict[str, Any]:
    parent = os.getppid()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RCVTIMEO, int(POLL_S * 1000))
    tally = Tally()
    try:
        sock.connect(endpoint)
        sock.setsockopt(zmq.SUBSCRIBE, TOPIC_PREFIX.encode())
        recv, unpackb, now = sock.recv_multipart, msgpack.unpackb, time.monotonic
        topic, end_topic = TOPIC.encode(), END_TOPIC.encode()

        # Ready once the first probe arrives: the subscription is live at the publisher.
        deadline = now() + SUB_TIME_LIMIT_S
        while True:
            try:
                recv()
                break
            except zmq.Again:
                if now() > deadline or os.getppid() != parent:
                    raise BenchError("no probe from the publisher") from None
        emit_ready()

        deadline = now() + SUB_TIME_LIMIT_S
        while True:
            try:
                t, body = recv()
            except zmq.Again:
                t_now = now()
                if tally.received and t_now - tally.last_t > QUIET_S:
                    return tally.to_dict("quiet")
                if t_now > deadline or os.getppid() != parent:
                    return tally.to_dict("limit")
                continue
            if t == topic:
                tally.add(unpackb(body)["i"], now())
                if tally.last_t > deadline:
                    return tally.to_dict("limit")
            elif t == end_topic:
                return tally.to_dict("marker")
    finally:
        sock.close(linger=0)
        ctx.term()


# ----------------------------------------------------------------------------- entry


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_pubsub_zmq.py")
    roles = parser.add_subparsers(dest="role", required=True)
    pub = roles.add_parser("pub")
    pub.add_argument("--events", type=int, required=True)
    pub.add_argument("--hwm", type=int, required=True)
    sub = roles.add_parser("sub")
    sub.add_argument("endpoint")
    sub.add_argument("--hwm", type=int, required=True)
    args = parser.parse_args(argv)

    try:
        if args.role == "pub":
            run_publisher(args.events, args.hwm)
            return 0
        if not args.endpoint.startswith("tcp://127."):
            raise BenchError(f"refusing non-loopback endpoint {args.endpoint}")
        emit(RESULT_PREFIX, run_subscriber(args.endpoint, args.hwm))
    except BenchError as exc:
        emit_error(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
