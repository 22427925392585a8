"""Call the calculator responders (start examples/responder.py first).

MESHRPC_INTERFACES=127.0.0.1 python examples/requester.py --calls 30
"""

from __future__ import annotations

import argparse
import collections
import json

import anyio

import meshrpc


async def main(
    calls: int, namespace: str | None, timeout: float, expect: int = 1
) -> dict[str, int]:
    async with meshrpc.Requester(name="calc-client", namespace=namespace) as client:
        # Calls would wait for a responder anyway; waiting for `expect` of them first
        # makes the spread below meaningful.
        await client.wait_for_responders("add", expect, timeout=timeout)
        spread: collections.Counter[str] = collections.Counter()
        for i in range(calls):
            reply = await client.send("add", {"a": i, "b": 1}, timeout=timeout)
            assert reply["sum"] == i + 1
            spread[reply["by"]] += 1
        try:
            await client.send("divide", {"a": 1, "b": 0})
        except meshrpc.RemoteError as exc:
            print(f"divide by zero -> RemoteError({exc.remote_type}: {exc.remote_message})")
        try:
            await client.send("slow", {"seconds": 5}, timeout=0.2)
        except meshrpc.DeadlineExceeded:
            print("slow call with a 0.2 s timeout -> DeadlineExceeded")
        return dict(spread)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--namespace", default=None)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--expect", type=int, default=1, help="responders to wait for")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    result = anyio.run(
        main, args.calls, args.namespace, args.timeout, args.expect, backend=args.backend
    )
    print("spread:", json.dumps(result, sort_keys=True))
