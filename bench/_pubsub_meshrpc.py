"""meshrpc side of the pub/sub benchmark: a Publisher and a Subscriber.

Run as a child process by ``pubsub.py``; ``meshrpc`` is imported only inside the
functions, so this module loads (and ``probe`` reports cleanly) without it::

    python bench/_pubsub_meshrpc.py probe                               # "RESULT {...}"
    python bench/_pubsub_meshrpc.py pub --backend B --mode nowait|await \\
        --events N --subscribers K                                      # "READY"
    python bench/_pubsub_meshrpc.py sub --backend B                     # "READY", "RESULT"

The workload, the stdin control (``GO``/``STOP``), the end marker and the way a
subscriber decides it is done are those of ``_pubsub_zmq.py``. The publisher waits for
``K`` subscribers with ``wait_for_subscribers`` (instead of probing), a subscriber
prints ``READY`` once ``wait_for_publishers(1)`` returned, and ``GO`` comes only after
every subscriber did.

Every process needs ``MESHRPC_INTERFACES=127.0.0.1`` and a ``MESHRPC_NAMESPACE``
unique to the benchmark run in its environment; both sides refuse to start without.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from _common import RESULT_PREFIX, BenchError, emit_error, loopback_guard
from _pubsub_zmq import (
    END_MARKER_INTERVAL_S,
    END_TOPIC,
    FINAL_PREFIX,
    GO_TIMEOUT_S,
    POLL_S,
    QUIET_S,
    STOP_TIMEOUT_S,
    SUB_TIME_LIMIT_S,
    TOPIC,
    Control,
    Tally,
    emit,
    emit_ready,
    publish_result,
)

WAIT_FOR_PEERS_S = 20.0
PATTERN = "price.*"

# What the benchmark uses; ``probe`` reports the first missing one.
REQUIRED = (
    "Publisher",
    "Publisher.wait_for_subscribers",
    "Publisher.publish_nowait",
    "Publisher.publish",
    "Publisher.statistics",
    "Subscriber",
    "Subscriber.on",
    "Subscriber.wait_for_publishers",
    "Subscriber.statistics",
)


def _namespace() -> str:
    ns = os.environ.get("MESHRPC_NAMESPACE", "")
    if not ns.startswith("bench-"):
        raise BenchError("MESHRPC_NAMESPACE must be set to a unique bench-... namespace")
    return ns


def probe() -> dict[str, Any]:
    """Whether meshrpc is importable and has what the benchmark uses."""
    try:
        import meshrpc
    except Exception as exc:
        return {"ok": False, "error": f"cannot import meshrpc: {type(exc).__name__}: {exc}"}
    missing = []
    for name in REQUIRED:
        obj: Any = meshrpc
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            missing.append(name)
    if missing:
        return {"ok": False, "error": f"meshrpc lacks {', '.join(missing)}"}
    return {
        "ok": True,
        "version": str(getattr(meshrpc, "__version__", "?")),
        "defaults": _defaults(meshrpc),
    }


def _defaults(meshrpc: Any) -> dict[str, Any]:
    """The queue sizes meshrpc uses unless told otherwise, for the report (best effort)."""

    def default(obj: Any, name: str) -> Any:
        try:
            value = inspect.signature(obj).parameters[name].default
        except (TypeError, ValueError, KeyError):
            return None
        return None if value is inspect.Parameter.empty else value

    try:
        from meshrpc.transport.zmq import ZmqTransport
    except Exception:
        hwm = None
    else:
        hwm = default(ZmqTransport, "high_water_mark")
    return {"hwm": hwm, "subscriber_max_buffered": default(meshrpc.Subscriber, "max_buffered")}


def _plain(stats: Any) -> Any:
    """``statistics()`` made JSON-safe (it is documented as a dict; keep whatever it holds)."""
    return json.loads(json.dumps(stats, default=repr))


# ------------------------------------------------------------------------ publisher


async def _wait_go(control: Control) -> None:
    # A worker thread waits on the threading.Event the stdin reader sets; bounded.
    go = await anyio.to_thread.run_sync(control.go.wait, GO_TIMEOUT_S)
    if control.stop.is_set():
        raise BenchError("stopped before GO")
    if not go:
        raise BenchError(f"no GO on stdin within {GO_TIMEOUT_S:.0f} s")


async def _publisher(events: int, subscribers: int, mode: str) -> None:
    import meshrpc

    control = Control()
    pub = meshrpc.Publisher(name="bench-pub", namespace=_namespace())
    async with pub:
        emit_ready()
        await pub.wait_for_subscribers(subscribers, timeout=WAIT_FOR_PEERS_S)
        await _wait_go(control)

        start = time.monotonic()
        if mode == "nowait":
            publish_nowait = pub.publish_nowait
            for i in range(events):
                publish_nowait(TOPIC, {"sym": "X", "px": 1.5, "i": i})
        else:
            publish = pub.publish
            for i in range(events):
                await publish(TOPIC, {"sym": "X", "px": 1.5, "i": i})
        end = time.monotonic()
        emit(RESULT_PREFIX, publish_result(events, start, end, stats=_plain(pub.statistics())))

        # End markers until STOP; never more than one in flight from here on.
        with anyio.move_on_after(STOP_TIMEOUT_S):
            while not control.stop.is_set():
                await pub.publish(END_TOPIC, {"end": events})
                await anyio.sleep(END_MARKER_INTERVAL_S)
        emit(FINAL_PREFIX, {"stats": _plain(pub.statistics())})


# ----------------------------------------------------------------------- subscriber


async def _subscriber() -> dict[str, Any]:
    import meshrpc

    parent = os.getppid()
    tally = Tally()
    ended = anyio.Event()
    now = time.monotonic
    sub = meshrpc.Subscriber(name="bench-sub", namespace=_namespace())

    @sub.on(PATTERN)
    async def on_price(payload: dict[str, Any]) -> None:
        i = payload.get("i")
        if i is not None:
            tally.add(i, now())
        elif "end" in payload:
            ended.set()

    result: dict[str, Any] | None = None
    try:
        async with sub:
            await sub.wait_for_publishers(1, timeout=WAIT_FOR_PEERS_S)
            emit_ready()
            deadline = now() + SUB_TIME_LIMIT_S
            ended_by = "limit"
            while True:
                with anyio.move_on_after(POLL_S):
                    await ended.wait()
                if ended.is_set():
                    ended_by = "marker"
                    break
                t_now = now()
                if tally.received and t_now - tally.last_t > QUIET_S:
                    ended_by = "quiet"
                    break
                if t_now > deadline or os.getppid() != parent:
                    break
            result = {**tally.to_dict(ended_by), "stats": _plain(sub.statistics())}
    except Exception as exc:
        if result is None:
            raise
        # Measured in full, then the subscriber failed while closing: keep the figures,
        # and say so (pubsub.py lists it in the notes).
        result["shutdown_error"] = _one_line(exc)
    assert result is not None
    return result


def _one_line(exc: BaseException) -> str:
    """The innermost error of a chain of single-exception groups, with where it was raised."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        where = (
            f" in {tb.tb_frame.f_code.co_qualname} ({Path(tb.tb_frame.f_code.co_filename).name})"
        )
        tb = tb.tb_next
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text + where


# ----------------------------------------------------------------------------- entry


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_pubsub_meshrpc.py")
    roles = parser.add_subparsers(dest="role", required=True)
    roles.add_parser("probe")
    pub = roles.add_parser("pub")
    pub.add_argument("--backend", choices=("asyncio", "trio"), required=True)
    pub.add_argument("--mode", choices=("nowait", "await"), required=True)
    pub.add_argument("--events", type=int, required=True)
    pub.add_argument("--subscribers", type=int, required=True)
    sub = roles.add_parser("sub")
    sub.add_argument("--backend", choices=("asyncio", "trio"), required=True)
    args = parser.parse_args(argv)

    if args.role == "probe":
        sys.stdout.write(RESULT_PREFIX + json.dumps(probe()) + "\n")
        return 0
    loopback_guard()
    try:
        if args.role == "pub":
            anyio.run(_publisher, args.events, args.subscribers, args.mode, backend=args.backend)
        else:
            emit(RESULT_PREFIX, anyio.run(_subscriber, backend=args.backend))
    except Exception as exc:
        # The orchestrator shows this one line; the traceback goes to this child's
        # stderr, which it keeps in a log file.
        inner: BaseException = exc
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        emit_error(f"{type(inner).__name__}: {inner}")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
