"""meshrpc side of the benchmark: a Responder server and a Requester client.

Run as a child process by ``roundtrip.py``; ``meshrpc`` is imported only inside the
functions, so this module loads (and ``probe`` reports cleanly) without it::

    python bench/_meshrpc_side.py probe                       # prints "RESULT {...}"
    python bench/_meshrpc_side.py server --backend B          # prints "READY"
    python bench/_meshrpc_side.py client --backend B [params] # prints "RESULT {...}"
    python bench/_meshrpc_side.py server --backend B --index I
    python bench/_meshrpc_side.py scale-client --backend B --responders N [...]

The last two are ``scaling.py``'s: responder ``I`` also answers ``count.I`` with the
number of ``add`` calls it has handled, so the client can tell how the calls spread.

Every process needs ``MESHRPC_INTERFACES=127.0.0.1`` and a ``MESHRPC_NAMESPACE``
unique to the benchmark run in its environment; both sides refuse to start without.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import signal
import sys
import time
from typing import Any

import anyio
from _common import (
    EXPECTED,
    RESULT_PREFIX,
    BenchError,
    ClientParams,
    RunResult,
    add_client_params,
    async_sequential,
    backend_kwargs,
    client_params,
    emit_error,
    emit_result,
    loopback_guard,
    make_payload,
    sequential_result,
)

WAIT_FOR_RESPONDER_S = 10.0
PARENT_CHECK_S = 0.5


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
    missing = [n for n in ("Responder", "Requester") if not hasattr(meshrpc, n)]
    if not missing and not hasattr(meshrpc.Requester, "wait_for_responders"):
        missing.append("Requester.wait_for_responders")
    if missing:
        return {"ok": False, "error": f"meshrpc lacks {', '.join(missing)}"}
    return {"ok": True, "version": str(getattr(meshrpc, "__version__", "?"))}


# --------------------------------------------------------------------------- server


async def _serve(max_seconds: float, index: int | None = None) -> None:
    import meshrpc

    if index is None:
        responder = meshrpc.Responder(name="bench", namespace=_namespace())

        @responder.on("add")
        async def add(p: dict[str, int]) -> int:
            return p["a"] + p["b"]

    else:
        responder = meshrpc.Responder(name=f"bench-{index}", namespace=_namespace())
        handled = 0

        @responder.on("add")
        async def counted_add(p: dict[str, int]) -> int:
            nonlocal handled
            handled += 1
            return p["a"] + p["b"]

        @responder.on(f"count.{index}")
        async def count(_p: object) -> int:
            return handled

    parent = os.getppid()
    async with responder, anyio.create_task_group() as tg:
        sys.stdout.write("READY\n")
        sys.stdout.flush()

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
            tg.cancel_scope.cancel()

        async def stop_when_orphaned_or_old() -> None:
            for _ in range(math.ceil(max_seconds / PARENT_CHECK_S)):
                await anyio.sleep(PARENT_CHECK_S)
                if os.getppid() != parent:
                    break
            tg.cancel_scope.cancel()

        tg.start_soon(stop_on_signal)
        tg.start_soon(stop_when_orphaned_or_old)


# --------------------------------------------------------------------------- client


async def _inflight(req: Any, payload: dict[str, Any], n: int, window: int) -> float:
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < n:
            issued += 1
            if await req.send("add", payload) != EXPECTED:
                raise BenchError("wrong result")

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(window):
            tg.start_soon(worker)
    return time.perf_counter() - start


async def _client(params: ClientParams) -> RunResult:
    import meshrpc

    limit = params.phase_time_limit

    async with meshrpc.Requester(name="bench-client", namespace=_namespace()) as req:
        await req.wait_for_responders("add", 1, timeout=WAIT_FOR_RESPONDER_S)
        payload = make_payload(params.payload_kib)
        call = functools.partial(req.send, "add", payload)
        try:
            with anyio.fail_after(limit):
                await async_sequential(call, params.warmup)
                await _inflight(req, payload, params.warmup * 4, params.window)
            with anyio.fail_after(limit):
                latencies, seq_s = await async_sequential(call, params.seq_calls)
            with anyio.fail_after(limit):
                inflight_s = await _inflight(req, payload, params.inflight_calls, params.window)
        except TimeoutError:
            raise BenchError(f"a phase exceeded {limit:.0f} s") from None
    return sequential_result(latencies, seq_s, params.inflight_calls, inflight_s)


async def _scale_client(
    responders: int, calls: int, warmup: int, window: int, limit: float
) -> dict[str, Any]:
    """``calls`` calls with ``window`` in flight over ``responders`` responders; calls/s
    and each responder's count of them (asked through its ``count.I`` type)."""
    import meshrpc

    payload = make_payload(0)
    async with meshrpc.Requester(name="bench-client", namespace=_namespace()) as req:
        with anyio.fail_after(WAIT_FOR_RESPONDER_S * 2):
            found = await req.wait_for_responders("add", responders, timeout=WAIT_FOR_RESPONDER_S)
            for i in range(responders):
                await req.wait_for_responders(f"count.{i}", 1, timeout=WAIT_FOR_RESPONDER_S)
        if found != responders:
            raise BenchError(f"{found} responders answer 'add', expected {responders}")

        async def counts() -> list[int]:
            return [int(await req.send(f"count.{i}", None)) for i in range(responders)]

        try:
            with anyio.fail_after(limit):
                await _inflight(req, payload, warmup, window)
                before = await counts()
            with anyio.fail_after(limit):
                elapsed = await _inflight(req, payload, calls, window)
            with anyio.fail_after(limit):
                after = await counts()
        except TimeoutError:
            raise BenchError(f"a phase exceeded {limit:.0f} s") from None
    per_responder = [a - b for a, b in zip(after, before, strict=True)]
    return {"calls_s": calls / elapsed, "per_responder": per_responder}


# ----------------------------------------------------------------------------- entry


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_meshrpc_side.py")
    sub = parser.add_subparsers(dest="role", required=True)
    sub.add_parser("probe")
    server = sub.add_parser("server")
    server.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), required=True)
    server.add_argument("--max-seconds", type=float, default=900.0)
    server.add_argument("--index", type=int, default=None)
    scale = sub.add_parser("scale-client")
    scale.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), required=True)
    scale.add_argument("--responders", type=int, required=True)
    scale.add_argument("--calls", type=int, required=True)
    scale.add_argument("--warmup", type=int, required=True)
    scale.add_argument("--window", type=int, required=True)
    scale.add_argument("--phase-time-limit", type=float, required=True)
    client = sub.add_parser("client")
    client.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), required=True)
    add_client_params(client)
    args = parser.parse_args(argv)

    if args.role == "probe":
        sys.stdout.write(RESULT_PREFIX + json.dumps(probe()) + "\n")
        return 0
    loopback_guard()
    if args.role == "server":
        anyio.run(_serve, args.max_seconds, args.index, **backend_kwargs(args.backend))
        return 0
    if args.role == "scale-client":
        try:
            scaled = anyio.run(
                _scale_client,
                args.responders,
                args.calls,
                args.warmup,
                args.window,
                args.phase_time_limit,
                **backend_kwargs(args.backend),
            )
        except Exception as exc:
            emit_error(f"{type(exc).__name__}: {exc}")
            raise
        sys.stdout.write(RESULT_PREFIX + json.dumps({"ok": True, "result": scaled}) + "\n")
        sys.stdout.flush()
        return 0
    try:
        result = anyio.run(_client, client_params(args), **backend_kwargs(args.backend))
    except Exception as exc:
        # The orchestrator shows this one line; the traceback goes to this child's
        # stderr, which it keeps in a log file.
        emit_error(f"{type(exc).__name__}: {exc}")
        raise
    emit_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
