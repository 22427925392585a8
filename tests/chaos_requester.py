"""A requester process for chaos tests on several hosts: runs recorded load for a fixed
time, samples its statistics, and writes the whole history as JSON.

Output: {"calls": [...Call fields...], "statistics": {...},
         "samples": [[wall time, selectable peers, usable peers], ...]}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import anyio

from meshrpc import Requester
from tests.chaos import History


async def run(args: argparse.Namespace) -> dict[str, Any]:
    history = History(Path(args.out).parent)
    samples: list[tuple[float, int, int]] = []
    async with Requester(name="chaos-requester", namespace=args.namespace) as client:
        await client.wait_for_responders(args.type, args.responders, timeout=30)
        print("READY", flush=True)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: history.load(
                    client,
                    stop,
                    workers=args.workers,
                    type=args.type,
                    sleep=args.sleep,
                    timeout=args.timeout,
                    max_seconds=args.duration + 5,
                )
            )
            ends = time.monotonic() + args.duration
            while time.monotonic() < ends:
                stats = client.statistics()
                samples.append((time.time(), stats["selectable_peers"], stats["usable_peers"]))
                await anyio.sleep(0.05)
            stop.set()
        stats = client.statistics()
    return {
        "calls": [dataclasses.asdict(c) for c in history.calls],
        "samples": samples,
        "statistics": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--responders", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--type", default="iwork")
    parser.add_argument("--sleep", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--backend", default="asyncio")
    args = parser.parse_args()
    result = anyio.run(run, args, backend=args.backend)
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
