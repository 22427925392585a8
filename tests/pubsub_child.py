"""A subscriber process for the pub/sub tests: prints READY, then its counts as JSON.

    python tests/pubsub_child.py NAMESPACE PATTERN EXPECTED [--group G] [--backend B]

Exits after receiving EXPECTED events matching PATTERN, or 20 s after READY.
"""

from __future__ import annotations

import argparse
import json
import sys

import anyio

import meshrpc


async def main(args: argparse.Namespace) -> None:
    done = anyio.Event()
    topics: dict[str, int] = {}
    sub = meshrpc.Subscriber(name="child", namespace=args.namespace, group=args.group)

    @sub.on(args.pattern)
    async def count(payload: object) -> None:
        topic = meshrpc.current_call().type
        topics[topic] = topics.get(topic, 0) + 1
        if sum(topics.values()) >= args.expected:
            done.set()

    async with sub:
        await sub.wait_for_publishers(1, timeout=20)
        print("READY", flush=True)
        with anyio.move_on_after(20):
            await done.wait()
        print(json.dumps({"topics": topics, "stats": sub.statistics()}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("namespace")
    parser.add_argument("pattern")
    parser.add_argument("expected", type=int)
    parser.add_argument("--group", default=None)
    parser.add_argument("--backend", default="asyncio")
    arguments = parser.parse_args()
    anyio.run(main, arguments, backend=arguments.backend)
    sys.exit(0)
