"""One process holding many meshrpc components: its memory, then its CPU while idle.

Run as a child process by ``footprint.py``::

    python bench/_footprint_side.py --responders R --requesters Q --publishers P
        --subscribers S --settle SECONDS --idle SECONDS [--backend asyncio|trio|uvloop]

prints one ``RESULT {...}`` line. Steps: VmRSS of the bare interpreter, then after
importing meshrpc; enter every component (all in this process's ``MESHRPC_NAMESPACE``,
on loopback) and wait until every requester has every responder in rotation and every
subscriber every publisher; VmRSS again; ``--settle`` seconds of quiet; then the
process's CPU time (every thread: ``time.process_time()``, plus a per-thread split from
/proc/self/task) over ``--idle`` seconds in which nothing is called or published.

``--raw``: the same sockets without meshrpc, the baseline. R ROUTERs and P XPUBs bound
on 127.0.0.1, Q x R DEALERs and S x P SUBs connected to them, each connecting socket
with a monitor, every socket with the heartbeat options of meshrpc's transport.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def _status(field: str) -> int:
    """A numeric field of /proc/self/status (VmRSS in kB, Threads)."""
    match = re.search(rf"^{field}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M)
    return int(match.group(1)) if match else -1


# Before anything heavier is imported: the bare interpreter.
RSS_BARE_KB = _status("VmRSS")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
from _common import RESULT_PREFIX, backend_kwargs, emit_error, loopback_guard  # noqa: E402

WAIT_S = 60.0  # every requester / subscriber complete
CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far per thread name (threads of one name summed), from /proc."""
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            # utime and stime are fields 14 and 15 of stat; 12 and 13 after "(comm) ".
            key = re.sub(r"\d+", "N", name)
            out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.max_sockets:
        import zmq

        # meshrpc's transport opens its sockets on this shared context; the limit can
        # only be set before the first socket.
        zmq.Context.instance().set(zmq.MAX_SOCKETS, args.max_sockets)
    import meshrpc

    rss_imported = _status("VmRSS")
    ns = os.environ["MESHRPC_NAMESPACE"]
    responders = [meshrpc.Responder(name=f"fp-r{i}", namespace=ns) for i in range(args.responders)]
    for r in responders:

        @r.on("work")
        async def work(p: Any) -> Any:
            return p

    requesters = [meshrpc.Requester(name=f"fp-q{i}", namespace=ns) for i in range(args.requesters)]
    publishers = [meshrpc.Publisher(name=f"fp-p{i}", namespace=ns) for i in range(args.publishers)]
    subscribers = [
        meshrpc.Subscriber(name=f"fp-s{i}", namespace=ns) for i in range(args.subscribers)
    ]
    for s in subscribers:

        @s.on("tick.*")
        async def tick(_p: Any) -> None:
            return None

    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        for component in [*responders, *publishers, *requesters, *subscribers]:
            await stack.enter_async_context(component)
        with anyio.fail_after(WAIT_S):
            for q in requesters:
                if responders:
                    await q.wait_for_responders("work", len(responders), timeout=WAIT_S)
            for s in subscribers:
                if publishers:
                    await s.wait_for_publishers(len(publishers), timeout=WAIT_S)
        ready_s = time.monotonic() - started
        rss_ready = _status("VmRSS")
        await anyio.sleep(args.settle)

        pings0 = sum(r.statistics()["pings"] for r in responders)
        threads0, cpu0, wall0 = thread_cpu(), time.process_time(), time.monotonic()
        await anyio.sleep(args.idle)
        cpu1, wall1, threads1 = time.process_time(), time.monotonic(), thread_cpu()
        pings1 = sum(r.statistics()["pings"] for r in responders)
        rss_idle = _status("VmRSS")
        threads = _status("Threads")
        fds = len(os.listdir("/proc/self/fd"))
        stopping = time.monotonic()
    stop_s = time.monotonic() - stopping
    return _report(
        args,
        (rss_imported, rss_ready, rss_idle),
        (ready_s, stop_s),
        (wall0, wall1, cpu0, cpu1),
        (threads0, threads1),
        (pings1 - pings0) / (wall1 - wall0),
        (threads, fds),
    )


def _heartbeat_ms() -> tuple[int, int]:
    """meshrpc's transport heartbeat interval and timeout, in ms (its defaults)."""
    import inspect

    try:
        from meshrpc.transport.zmq import ZmqTransport

        params = inspect.signature(ZmqTransport.__init__).parameters
        interval = float(params["heartbeat_interval"].default)
        timeout = float(params["heartbeat_timeout"].default)
    except (ImportError, KeyError, TypeError, ValueError):
        interval, timeout = 0.5, 1.5  # its values when this was written
    return int(interval * 1000), int(timeout * 1000)


async def measure_raw(args: argparse.Namespace) -> dict[str, Any]:
    """The same sockets and connections in raw pyzmq, idle, with the same heartbeats."""
    import zmq

    rss_imported = _status("VmRSS")
    interval_ms, timeout_ms = _heartbeat_ms()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    if args.max_sockets:
        ctx.set(zmq.MAX_SOCKETS, args.max_sockets)
    sockets: list[zmq.Socket[bytes]] = []

    def socket(kind: int) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = ctx.socket(kind)
        sockets.append(sock)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.HEARTBEAT_IVL, interval_ms)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, timeout_ms)
        sock.setsockopt(zmq.HEARTBEAT_TTL, timeout_ms)
        return sock

    def connect(kind: int, endpoint: str) -> None:
        sock = socket(kind)
        sockets.append(sock.get_monitor_socket())
        sock.connect(endpoint)

    started = time.monotonic()
    try:
        # (server kind, how many, client kind, clients of each)
        shape: list[tuple[int, int, int, int]] = [
            (zmq.ROUTER, args.responders, zmq.DEALER, args.requesters),
            (zmq.XPUB, args.publishers, zmq.SUB, args.subscribers),
        ]
        for server_kind, servers, client_kind, clients in shape:
            for _ in range(servers):
                port = socket(server_kind).bind_to_random_port("tcp://127.0.0.1")
                for _ in range(clients):
                    connect(client_kind, f"tcp://127.0.0.1:{port}")
        ready_s = time.monotonic() - started
        rss_ready = _status("VmRSS")
        await anyio.sleep(args.settle)
        threads0, cpu0, wall0 = thread_cpu(), time.process_time(), time.monotonic()
        await anyio.sleep(args.idle)
        cpu1, wall1, threads1 = time.process_time(), time.monotonic(), thread_cpu()
        rss_idle = _status("VmRSS")
        threads = _status("Threads")
        fds = len(os.listdir("/proc/self/fd"))
    finally:
        stopping = time.monotonic()
        for sock in sockets:
            sock.close(linger=0)
    stop_s = time.monotonic() - stopping
    return _report(
        args,
        (rss_imported, rss_ready, rss_idle),
        (ready_s, stop_s),
        (wall0, wall1, cpu0, cpu1),
        (threads0, threads1),
        0.0,
        (threads, fds),
    ) | {"heartbeat_ms": [interval_ms, timeout_ms]}


def _report(
    args: argparse.Namespace,
    rss: tuple[int, int, int],
    times: tuple[float, float],
    clock: tuple[float, float, float, float],
    per_thread: tuple[dict[str, float], dict[str, float]],
    pings_per_s: float,
    counts: tuple[int, int],
) -> dict[str, Any]:
    wall0, wall1, cpu0, cpu1 = clock
    wall = wall1 - wall0
    before, after = per_thread
    by_thread = {
        name: round(100 * (after[name] - before.get(name, 0.0)) / wall, 3) for name in after
    }
    return {
        "components": args.responders + args.requesters + args.publishers + args.subscribers,
        "rss_bare_kb": RSS_BARE_KB,
        "rss_imported_kb": rss[0],
        "rss_ready_kb": rss[1],
        "rss_idle_kb": rss[2],
        "ready_s": times[0],
        "stop_s": times[1],
        "idle_s": wall,
        "idle_cpu_s": cpu1 - cpu0,
        "idle_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "idle_cpu_pct_by_thread": dict(sorted(by_thread.items(), key=lambda kv: -kv[1])),
        "pings_per_s": pings_per_s,
        "threads": counts[0],
        "fds": counts[1],
        "stats_interval": os.environ.get("MESHRPC_STATS_INTERVAL", "default (1)"),
        "zmq_max_sockets": _max_sockets(),
    }


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc`` that are not groups, with those they were raised while
    handling (a failed start shows up as the context of a chain of failed cleanups)."""
    out: list[BaseException] = []
    seen: set[int] = set()
    todo = [exc]
    while todo and len(seen) < 10_000:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, BaseExceptionGroup):
            todo += e.exceptions
        else:
            out.append(e)
        context = e.__cause__ or e.__context__
        if context is not None:
            todo.append(context)
    return out


def _one_line(exc: BaseException) -> str:
    """The distinct leaf errors of ``exc`` on one line, a ZeroMQ error first."""
    leaves = sorted(_leaves(exc), key=lambda e: type(e).__name__ != "ZMQError")
    texts = list(dict.fromkeys(f"{type(e).__name__}: {e}" for e in leaves))
    return "; ".join(texts[:3])


def _max_sockets() -> int:
    import zmq

    return int(zmq.Context.instance().get(zmq.MAX_SOCKETS))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_footprint_side.py")
    for kind in ("responders", "requesters", "publishers", "subscribers"):
        parser.add_argument(f"--{kind}", type=int, required=True)
    parser.add_argument("--settle", type=float, required=True)
    parser.add_argument("--idle", type=float, required=True)
    parser.add_argument("--backend", choices=("asyncio", "trio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--max-sockets", type=int, default=0, help="raise libzmq's MAX_SOCKETS (0: its default)"
    )
    parser.add_argument("--raw", action="store_true", help="raw pyzmq sockets, no meshrpc")
    args = parser.parse_args(argv)
    loopback_guard()
    if not os.environ.get("MESHRPC_NAMESPACE", "").startswith("bench-"):
        emit_error("MESHRPC_NAMESPACE must be set to a unique bench-... namespace")
        return 1
    try:
        result = anyio.run(
            measure_raw if args.raw else measure, args, **backend_kwargs(args.backend)
        )
    except Exception as exc:
        emit_error(_one_line(exc))
        raise
    sys.stdout.write(RESULT_PREFIX + json.dumps({"ok": True, "result": result}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
