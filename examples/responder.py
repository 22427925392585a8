"""A calculator responder. Run several to see calls spread across them.

MESHRPC_INTERFACES=127.0.0.1 python examples/responder.py --label a
"""

from __future__ import annotations

import argparse
import logging
import time

import anyio

import meshrpc


def build(label: str, namespace: str | None = None) -> meshrpc.Responder:
    calc = meshrpc.Responder(name="calc", namespace=namespace)

    @calc.on("add")
    async def add(payload: dict[str, float]) -> dict[str, object]:
        return {"sum": payload["a"] + payload["b"], "by": label}

    @calc.on("divide")
    def divide(payload: dict[str, float]) -> float:
        # A plain def runs in a worker thread; ZeroDivisionError reaches the caller
        # as meshrpc.RemoteError.
        return payload["a"] / payload["b"]

    @calc.on("slow", idempotent=True)
    async def slow(payload: dict[str, float]) -> str:
        await anyio.sleep(payload.get("seconds", 1.0))
        return "done"

    @calc.on("deadline")
    async def deadline(payload: object) -> float:
        # The caller's deadline travels with the call.
        return round(meshrpc.current_call().remaining(), 3)

    @calc.on("sleep")
    def sleep(payload: dict[str, float]) -> str:
        time.sleep(payload.get("seconds", 0.1))
        return label

    return calc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default="calc", help="name shown in replies")
    parser.add_argument("--namespace", default=None, help="mesh namespace")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    build(args.label, args.namespace).run(backend=args.backend)


if __name__ == "__main__":
    main()
