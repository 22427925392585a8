"""A responder process for the chaos tests: logs every execution to a JSON-lines file.

Handlers:
  work   (not idempotent) sleeps ``payload["sleep"]`` seconds, returns who ran it
  iwork  (idempotent) the same
The fail flag file, while it exists, makes both raise; the hang flag makes them wait
far beyond any deadline (an event loop that is free, a handler that is stuck); the
block flag makes them block the whole event loop until it is removed.
Prints ``READY <endpoint>`` once serving; SIGTERM/SIGINT drain and exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from typing import Any

import anyio

from meshrpc import Responder, current_call


def flagged(path: str) -> bool:
    """Whether a behaviour flag file exists (one stat: cheap enough inside a handler)."""
    return bool(path) and os.path.exists(path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--version", default="1.0")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-concurrency", type=int, default=None)
    parser.add_argument("--drain-timeout", type=float, default=None)
    parser.add_argument("--fail-flag", default="")
    parser.add_argument("--hang-flag", default="")
    parser.add_argument("--block-flag", default="")
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    log = open(args.log, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    responder = Responder(
        name=args.name,
        namespace=args.namespace,
        version=args.version,
        port=args.port,
        max_concurrency=args.max_concurrency,
        drain_timeout=args.drain_timeout,
    )
    running = 0
    peak = 0

    async def handle(payload: Any) -> Any:
        nonlocal running, peak
        call = current_call()
        assert call is not None
        running += 1
        peak = max(peak, running)
        try:
            record = {
                "n": payload["n"],
                "type": call.type,
                "by": args.name,
                "pid": os.getpid(),
                "attempt": call.attempt,
                "at": time.time(),
                "left": call.deadline - time.monotonic(),
                "running": running,
            }
            log.write(json.dumps(record) + "\n")
            if flagged(args.hang_flag):
                await anyio.sleep(3600)
            while flagged(args.block_flag):
                time.sleep(0.05)  # noqa: ASYNC251 - on purpose: blocks the event loop
            await anyio.sleep(payload.get("sleep", 0))
            if flagged(args.fail_flag):
                raise RuntimeError(f"{args.name} is failing on purpose")
            return {"by": args.name, "n": payload["n"], "peak": peak}
        finally:
            running -= 1

    responder.on("work", handle)
    responder.on("iwork", handle, idempotent=True)

    async def serve() -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with responder:
                print("READY", responder.endpoint, flush=True)
                async for _ in signals:
                    break

    anyio.run(serve, backend=args.backend)
    log.close()


if __name__ == "__main__":
    main()
