"""The same requester on trio: meshrpc runs on any anyio backend.

MESHRPC_INTERFACES=127.0.0.1 python examples/trio_requester.py
"""

from __future__ import annotations

import argparse

import trio

import meshrpc


async def main(namespace: str | None) -> None:
    async with (
        meshrpc.Requester(name="trio-client", namespace=namespace) as client,
        trio.open_nursery() as nursery,
    ):
        # Ten calls at once, balanced over every responder that answers "add".
        for i in range(10):
            nursery.start_soon(call, client, i)


async def call(client: meshrpc.Requester, i: int) -> None:
    reply = await client.send("add", {"a": i, "b": i}, timeout=10)
    print(f"{i} + {i} = {reply['sum']} (by {reply['by']})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", default=None)
    trio.run(main, parser.parse_args().namespace)
