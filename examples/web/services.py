"""The services behind the web example: a quote responder and a metrics publisher.

    MESHRPC_INTERFACES=127.0.0.1 python examples/web/services.py --namespace shop

``quote.get`` prices an order; ``shop.info`` says who answers; ``admin.reset`` is a
type the bridge does not expose, so no page can reach it. The publisher sends
``metrics.load`` (this machine's load average), ``metrics.quotes`` (orders priced)
and ``metrics.clock`` twice a second.
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from typing import Any

import anyio

import meshrpc

PRICES = {"cable": 9.5, "router": 49.0, "switch": 120.0}


class Invalid(Exception):
    """The order is not one we can price."""


def quotes(namespace: str, counters: dict[str, int]) -> meshrpc.Responder:
    service = meshrpc.Responder(name="quotes", namespace=namespace)

    @service.on("shop.info", idempotent=True)
    async def info(payload: Any) -> dict[str, Any]:
        return {"service": service.name, "pid": os.getpid(), "items": sorted(PRICES)}

    @service.on("quote.get", idempotent=True)
    async def quote(payload: dict[str, Any]) -> dict[str, Any]:
        item, qty = payload.get("item"), payload.get("qty")
        if item not in PRICES:
            raise Invalid(f"we do not sell {item!r}")
        if not isinstance(qty, int) or qty < 1:
            raise Invalid("qty must be a whole number of at least 1")
        counters["quotes"] += 1
        total = PRICES[item] * qty
        return {"item": item, "qty": qty, "unit": PRICES[item], "total": total,
                "channel": payload.get("channel")}  # fmt: skip

    @service.on("admin.reset")
    async def reset(payload: Any) -> str:
        counters["quotes"] = 0
        return "reset"

    return service


async def publish_metrics(publisher: meshrpc.Publisher, counters: dict[str, int]) -> None:
    while True:
        publisher.publish_nowait("metrics.load", {"load1": round(os.getloadavg()[0], 2)})
        publisher.publish_nowait("metrics.quotes", {"served": counters["quotes"]})
        publisher.publish_nowait("metrics.clock", {"time": time.time()})
        await anyio.sleep(0.5)


async def main(namespace: str) -> None:
    counters = {"quotes": 0}
    publisher = meshrpc.Publisher(name="metrics", namespace=namespace, topics=["metrics.#"])
    async with quotes(namespace, counters), publisher, anyio.create_task_group() as tg:
        tg.start_soon(publish_metrics, publisher, counters)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="shop")
    anyio.run(main, parser.parse_args().namespace)
