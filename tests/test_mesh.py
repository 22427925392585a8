"""The mesh on real parts: zeroconf on 127.0.0.1 and ZeroMQ on loopback, in one process.

Multi-process tests are in test_multiprocess.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

import meshrpc
from meshrpc import (
    ConfigError,
    DeadlineExceeded,
    MessageTooLarge,
    NoResponder,
    ProtocolError,
    RemoteError,
    Requester,
    Responder,
)
from tests.waiting import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def calc(namespace: str, label: str = "calc", **kwargs: Any) -> Responder:
    responder = Responder(name=label, namespace=namespace, **kwargs)

    @responder.on("add")
    async def add(payload: dict[str, int]) -> int:
        return payload["a"] + payload["b"]

    @responder.on("who")
    async def who(payload: object) -> str:
        return label

    return responder


async def test_call_round_trip(namespace: str) -> None:
    async with calc(namespace), Requester(name="client", namespace=namespace) as client:
        assert await client.send("add", {"a": 1, "b": 2}, timeout=5) == 3


async def test_routes_by_type_and_isolates_namespaces(namespace: str) -> None:
    adder = calc(namespace, "adder")
    multiplier = Responder(name="multiplier", namespace=namespace)

    @multiplier.on("mul")
    async def mul(payload: dict[str, int]) -> int:
        return payload["a"] * payload["b"]

    # Same names and types in other partitions: must never receive a call.
    others = [
        calc(f"{namespace}-other", "other-namespace"),
        calc(namespace, "other-key", key="k2"),
        calc(namespace, "other-environment", environment="staging"),
    ]
    async with AsyncExitStack() as stack:
        for component in (adder, multiplier, *others):
            await stack.enter_async_context(component)
        client = await stack.enter_async_context(Requester(name="c", namespace=namespace))
        await client.wait_for_responders("add", 1, timeout=5)
        await client.wait_for_responders("mul", 1, timeout=5)
        whos = {await client.send("who", timeout=5) for _ in range(30)}
        assert await client.send("mul", {"a": 6, "b": 7}, timeout=5) == 42
        assert whos == {"adder"}
        assert len(client.responders()) == 2
        for other in others:
            assert other.statistics()["received"] == 0


async def test_balances_fairly_over_three_responders(namespace: str) -> None:
    async with AsyncExitStack() as stack:
        for label in ("a", "b", "c"):
            await stack.enter_async_context(calc(namespace, label))
        client = await stack.enter_async_context(Requester(name="c", namespace=namespace))
        assert await client.wait_for_responders("who", 3, timeout=5) == 3
        sequential = Counter([await client.send("who", timeout=5) for _ in range(300)])
        concurrent: Counter[str] = Counter()

        async def worker() -> None:
            for _ in range(30):
                concurrent[await client.send("who", timeout=5)] += 1

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(worker)
    for spread in (sequential, concurrent):
        assert set(spread) == {"a", "b", "c"}
        assert min(spread.values()) >= 70, spread  # fair share is 100 of 300


@pytest.mark.parametrize("strategy", ["round-robin", "random"])
async def test_other_strategies_spread_too(namespace: str, strategy: str) -> None:
    async with AsyncExitStack() as stack:
        for label in ("a", "b", "c"):
            await stack.enter_async_context(calc(namespace, label))
        client = await stack.enter_async_context(
            Requester(name="c", namespace=namespace, balance=strategy)
        )
        await client.wait_for_responders("who", 3, timeout=5)
        spread = Counter([await client.send("who", timeout=5) for _ in range(150)])
    assert min(spread.values()) >= 25, spread


async def test_handler_exception_is_a_remote_error_and_serving_goes_on(namespace: str) -> None:
    responder = calc(namespace)

    @responder.on("fail")
    async def fail(payload: object) -> None:
        raise KeyError("missing thing")

    @responder.on("fail-sync")
    def fail_sync(payload: object) -> None:
        raise ZeroDivisionError("division by zero")

    async with responder, Requester(name="c", namespace=namespace) as client:
        with pytest.raises(RemoteError) as info:
            await client.send("fail", timeout=5)
        assert info.value.remote_type == "KeyError"
        assert "missing thing" in info.value.remote_message
        assert info.value.remote_traceback is not None
        assert "raise KeyError" in info.value.remote_traceback
        assert info.value.type == "fail"
        with pytest.raises(RemoteError, match="ZeroDivisionError"):
            await client.send("fail-sync", timeout=5)
        assert await client.send("add", {"a": 2, "b": 2}, timeout=5) == 4
        assert responder.statistics()["errors"] == 2


async def test_tracebacks_can_be_withheld(namespace: str) -> None:
    responder = Responder(name="quiet", namespace=namespace, send_tracebacks=False)

    @responder.on("fail")
    async def fail(payload: object) -> None:
        raise ValueError("nope")

    async with responder, Requester(name="c", namespace=namespace) as client:
        with pytest.raises(RemoteError) as info:
            await client.send("fail", timeout=5)
    assert info.value.remote_traceback is None
    assert info.value.remote_message == "nope"


async def test_deadline_exceeded_on_time_and_handler_cancelled(namespace: str) -> None:
    responder = calc(namespace)
    cancelled = anyio.Event()

    @responder.on("slow")
    async def slow(payload: object) -> None:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            cancelled.set()
            raise

    async with responder, Requester(name="c", namespace=namespace) as client:
        await client.wait_for_responders("slow", timeout=5)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded) as info:
            await client.send("slow", timeout=0.3)
        elapsed = time.monotonic() - started
        assert isinstance(info.value, TimeoutError)
        assert 0.29 <= elapsed < 0.8, elapsed
        with anyio.fail_after(2):
            await cancelled.wait()  # nothing keeps running for a caller who gave up
        assert await client.send("add", {"a": 1, "b": 1}, timeout=5) == 2


async def test_no_responder_after_the_deadline(namespace: str) -> None:
    async with Requester(name="c", namespace=namespace) as client:
        started = time.monotonic()
        with pytest.raises(NoResponder, match="no responder for 'add'"):
            await client.send("add", {"a": 1, "b": 2}, timeout=0.5)
        assert time.monotonic() - started >= 0.5
        with pytest.raises(NoResponder):
            await client.wait_for_responders("add", timeout=0.2)
        assert client.statistics()["no_responder"] == 1  # waiting is not a call


async def test_call_waits_for_a_responder_that_starts_later(namespace: str) -> None:
    async with Requester(name="c", namespace=namespace) as client:
        result: list[int] = []
        done = anyio.Event()

        async def call() -> None:
            result.append(await client.send("add", {"a": 20, "b": 22}, timeout=10))
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await eventually(lambda: client.statistics()["waiting_for_responder"] == 1)
            async with calc(namespace):
                with anyio.fail_after(5):
                    await done.wait()
    assert result == [42]


async def test_context_gives_type_caller_meta_and_deadline(namespace: str) -> None:
    responder = Responder(name="ctx", namespace=namespace)
    seen: list[meshrpc.CallContext] = []

    @responder.on("inspect")
    async def inspect_call(payload: object) -> float:
        ctx = meshrpc.current_call()
        seen.append(ctx)
        return ctx.remaining()

    @responder.on("inspect-sync")
    def inspect_sync(payload: object) -> str:
        return meshrpc.current_call().type  # context reaches worker threads too

    async with responder, Requester(name="the-caller", namespace=namespace) as client:
        remaining = await client.send("inspect", timeout=2.0, meta={"trace": "t-1"})
        assert await client.send("inspect-sync", timeout=2.0) == "inspect-sync"
    assert 1.0 < remaining <= 2.0
    (ctx,) = seen
    assert (ctx.type, ctx.caller, ctx.meta, ctx.responder) == (
        "inspect",
        "the-caller",
        {"trace": "t-1"},
        "ctx",
    )
    with pytest.raises(LookupError):
        meshrpc.current_call()


async def test_nested_send_inherits_the_remaining_deadline(namespace: str) -> None:
    backend = Responder(name="backend", namespace=namespace)
    frontend = Responder(name="frontend", namespace=namespace)

    @backend.on("remaining")
    async def remaining(payload: object) -> float:
        return meshrpc.current_call().remaining()

    async with backend, Requester(name="fe-client", namespace=namespace) as inner:

        @frontend.on("relay")
        async def relay(payload: object) -> float:
            await anyio.sleep(0.3)
            # No timeout given: the nested call gets what is left of ours (~0.7 s),
            # not the 10 s default.
            return float(await inner.send("remaining"))

        async with frontend, Requester(name="c", namespace=namespace) as client:
            await inner.wait_for_responders("remaining", timeout=5)
            nested_remaining = await client.send("relay", timeout=1.0)
    assert 0.3 < nested_remaining < 0.75, nested_remaining


async def test_sync_handlers_do_not_block_the_loop(namespace: str) -> None:
    responder = calc(namespace)
    blocking = threading.Event()

    @responder.on("block")
    def block(payload: float) -> str:
        blocking.set()
        time.sleep(payload)
        return "slept"

    async with responder, Requester(name="c", namespace=namespace) as client:
        await client.wait_for_responders("block", timeout=5)
        fast: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send, "block", 0.5)
            assert await anyio.to_thread.run_sync(blocking.wait, 5)
            for _ in range(5):
                started = time.monotonic()
                await client.send("add", {"a": 1, "b": 1}, timeout=5)
                fast.append(time.monotonic() - started)
            assert blocking.is_set()
    assert max(fast) < 0.3, fast


async def test_bad_payloads_fail_at_the_sender(namespace: str) -> None:
    responder = Responder(name="r", namespace=namespace, max_message=10_000)

    @responder.on("echo")
    async def echo(payload: object) -> object:
        return payload

    @responder.on("bad-result")
    async def bad_result(payload: object) -> object:
        return {1, 2, 3}  # a set is not msgpack-serialisable

    @responder.on("huge-result")
    async def huge_result(payload: object) -> bytes:
        return b"x" * 50_000

    async with responder, Requester(name="c", namespace=namespace, max_message=10_000) as client:
        await client.wait_for_responders("echo", timeout=5)
        with pytest.raises(ProtocolError, match="not msgpack-serialisable"):
            await client.send("echo", object(), timeout=5)
        with pytest.raises(MessageTooLarge):
            await client.send("echo", b"x" * 20_000, timeout=5)
        with pytest.raises(RemoteError, match="cannot be sent"):
            await client.send("bad-result", timeout=5)
        with pytest.raises(RemoteError, match="MessageTooLarge"):
            await client.send("huge-result", timeout=5)
        assert await client.send("echo", [1, "two", b"3", {"4": 4.0}], timeout=5) == [
            1,
            "two",
            b"3",
            {"4": 4.0},
        ]


async def test_withdrawn_responder_stops_being_used(namespace: str) -> None:
    async with calc(namespace, "stays"), Requester(name="c", namespace=namespace) as client:
        leaving = calc(namespace, "leaves")
        async with leaving:
            await client.wait_for_responders("who", 2, timeout=5)
        await eventually(lambda: client.statistics()["usable_peers"] == 1)
        assert {await client.send("who", timeout=5) for _ in range(20)} == {"stays"}


async def test_misuse_is_reported_clearly(namespace: str) -> None:
    responder = Responder(name="r", namespace=namespace)
    with pytest.raises(ConfigError, match="no handlers"):
        async with responder:
            pass
    responder = Responder(name="r", namespace=namespace)
    responder.on("x", lambda payload: payload)
    with pytest.raises(ConfigError, match="already has a handler"):
        responder.on("x", lambda payload: payload)
    with pytest.raises(ConfigError):
        responder.on("", lambda payload: payload)
    with pytest.raises(ConfigError):
        Responder(name="")
    client = Requester(name="c", namespace=namespace)
    with pytest.raises(RuntimeError, match="enter the requester first"):
        await client.send("x")
    async with client:
        with pytest.raises(ConfigError, match="timeout"):
            await client.send("x", timeout=-1)


async def test_cancelled_call_leaves_nothing_pending(namespace: str) -> None:
    # The hung handler is still running when the responder leaves: a short drain.
    responder = calc(namespace, drain_timeout=0.2)

    @responder.on("hang")
    async def hang(payload: object) -> None:
        await anyio.sleep(30)

    async with responder, Requester(name="c", namespace=namespace) as client:
        await client.wait_for_responders("hang", timeout=5)
        with anyio.move_on_after(0.2):
            await client.send("hang", timeout=10)
        assert client.statistics()["in_flight"] == 0


async def test_unencodable_exception_text_still_reaches_the_caller(namespace: str) -> None:
    responder = Responder(name="r", namespace=namespace)

    @responder.on("bad-name")
    async def bad_name(payload: object) -> None:
        raise FileNotFoundError(b"caf\xe9.txt".decode("utf-8", "surrogateescape"))

    async with responder, Requester(name="c", namespace=namespace) as client:
        with pytest.raises(RemoteError) as info:
            await client.send("bad-name", timeout=5)
    assert info.value.remote_type == "FileNotFoundError"
    assert "caf" in info.value.remote_message
