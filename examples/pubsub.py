"""Publisher and subscribers in one process: wildcards, a balanced group, counters.

MESHRPC_INTERFACES=127.0.0.1 python examples/pubsub.py
"""

from __future__ import annotations

import uuid
from collections import Counter

import anyio

import meshrpc


async def main() -> None:
    namespace = f"pubsub-demo-{uuid.uuid4().hex[:6]}"
    watcher = meshrpc.Subscriber(name="watcher", namespace=namespace)
    workers = [
        meshrpc.Subscriber(name=f"worker-{i}", namespace=namespace, group="workers")
        for i in range(2)
    ]
    prices: list[str] = []
    jobs: Counter[str] = Counter()
    all_jobs_done = anyio.Event()
    price_seen = anyio.Event()

    @watcher.on("price.*")
    async def on_price(payload: dict[str, float]) -> None:
        prices.append(f"{meshrpc.current_call().type}={payload['px']}")
        price_seen.set()

    for worker in workers:

        @worker.on("job.#")
        async def on_job(payload: int, name: str = worker.name) -> None:
            jobs[name] += 1
            if sum(jobs.values()) == 10:
                all_jobs_done.set()

    async with (
        meshrpc.Publisher(name="ticker", namespace=namespace) as pub,
        watcher,
        workers[0],
        workers[1],
    ):
        await pub.wait_for_subscribers(3, timeout=10)
        await pub.publish("price.eur", {"px": 1.08})
        await pub.publish("price.eur.usd", {"px": 1.0})  # price.* wants one segment
        for i in range(10):
            await pub.publish("job.created", i)
        with anyio.fail_after(5):
            await all_jobs_done.wait()
            await price_seen.wait()
    print("watcher got:", prices)
    print("group shared the jobs:", dict(sorted(jobs.items())))
    print("events the watcher missed:", watcher.statistics()["missed"])


if __name__ == "__main__":
    anyio.run(main)
