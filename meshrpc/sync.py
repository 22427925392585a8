"""Blocking facade for plain sync code (scripts, Flask, Django): the same API, no ``await``.

Each component runs its async twin on an event loop in a background thread (an anyio
blocking portal); this module holds no mesh logic of its own::

    from meshrpc.sync import Requester

    with Requester(name="client", namespace="math") as client:
        client.send("add", {"a": 1, "b": 2})
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from functools import partial
from typing import Any, Self, TypeVar, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal

from meshrpc._components.publisher import Publisher as _AsyncPublisher
from meshrpc._components.requester import Requester as _AsyncRequester
from meshrpc._components.responder import Handler
from meshrpc._components.responder import Responder as _AsyncResponder
from meshrpc._components.subscriber import EventHandler
from meshrpc._components.subscriber import Subscriber as _AsyncSubscriber
from meshrpc._loops import run_options
from meshrpc._protocol.advertisement import Advertisement

__all__ = ["Publisher", "Requester", "Responder", "Subscriber"]

H = TypeVar("H", bound=Handler)
E = TypeVar("E", bound=EventHandler)


class _Blocking:
    """Runs one async component inside a portal for the duration of ``with``."""

    def __init__(self, component: Any, backend: str) -> None:
        self._component = component
        self._backend = backend
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def __enter__(self) -> Self:
        if self._stack is not None:
            raise RuntimeError(f"{self!r} is already open")
        stack = ExitStack()
        try:
            portal = stack.enter_context(start_blocking_portal(**run_options(self._backend)))
            cm: AbstractContextManager[Any] = portal.wrap_async_context_manager(self._component)
            stack.enter_context(cm)
        except BaseException:
            stack.close()
            raise
        self._stack, self._portal = stack, portal
        return self

    def __exit__(self, *exc_info: object) -> None:
        stack, self._stack, self._portal = self._stack, None, None
        if stack is not None:
            stack.close()

    def close(self) -> None:
        """Leave the component (the same as exiting ``with``)."""
        self.__exit__(None, None, None)

    def statistics(self) -> dict[str, Any]:
        """The component's counters (read on the component's own loop thread)."""
        if self._portal is None:
            return dict(self._component.statistics())
        return dict(self._call(self._component.statistics))

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM in the calling (main) thread, then stop gracefully."""
        self._component.run(backend=self._backend)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._portal is None:
            raise RuntimeError(f"open it first: `with {self!r}:`")
        return self._portal.call(fn, *args)

    def __repr__(self) -> str:
        return f"sync.{self._component!r}"


class Requester(_Blocking):
    """Blocking twin of :class:`meshrpc.Requester`; same arguments."""

    def __init__(self, name: str, *args: Any, backend: str = "asyncio", **kwargs: Any) -> None:
        super().__init__(_AsyncRequester(name, *args, **kwargs), backend)

    def send(
        self,
        type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
        attempt_timeout: float | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Any:
        """Call ``type`` and return the result; raises what the async ``send`` raises."""
        return self._call(
            partial(
                self._component.send,
                type,
                payload,
                timeout=timeout,
                attempt_timeout=attempt_timeout,
                meta=meta,
            )
        )

    def wait_for_responders(self, type: str, n: int = 1, *, timeout: float | None = None) -> int:
        """Block until ``n`` responders answer ``type``; raises ``NoResponder`` otherwise."""
        return int(
            self._call(partial(self._component.wait_for_responders, type, n, timeout=timeout))
        )

    def responders(self) -> list[Advertisement]:
        """Advertisements of the responders currently known."""
        return list(self._call(self._component.responders))


class Responder(_Blocking):
    """Blocking twin of :class:`meshrpc.Responder`; same arguments.

    ``with responder:`` serves in a background thread while the block runs;
    ``responder.run()`` serves in the foreground until SIGINT/SIGTERM.
    """

    def __init__(self, name: str, *args: Any, backend: str = "asyncio", **kwargs: Any) -> None:
        super().__init__(_AsyncResponder(name, *args, **kwargs), backend)

    @overload
    def on(self, type: str, fn: None = None, *, idempotent: bool = False) -> Callable[[H], H]: ...

    @overload
    def on(self, type: str, fn: H, *, idempotent: bool = False) -> H: ...

    def on(
        self, type: str, fn: H | None = None, *, idempotent: bool = False
    ) -> H | Callable[[H], H]:
        """Register a handler, as :meth:`meshrpc.Responder.on`."""
        return self._component.on(type, fn, idempotent=idempotent)  # type: ignore[no-any-return]

    @property
    def endpoint(self) -> str | None:
        """The advertised endpoint once started."""
        return self._component.endpoint  # type: ignore[no-any-return]


class Publisher(_Blocking):
    """Blocking twin of :class:`meshrpc.Publisher`; same arguments."""

    def __init__(self, name: str, *args: Any, backend: str = "asyncio", **kwargs: Any) -> None:
        super().__init__(_AsyncPublisher(name, *args, **kwargs), backend)

    def publish(self, topic: str, payload: Any = None) -> None:
        """Publish an event (never waits for subscribers); raises what ``publish`` raises."""
        self._call(partial(self._component.publish_nowait, topic, payload))

    def wait_for_subscribers(self, n: int = 1, *, timeout: float | None = None) -> int:
        """Block until ``n`` subscribers are live here; raises ``NoResponder`` otherwise."""
        return int(self._call(partial(self._component.wait_for_subscribers, n, timeout=timeout)))


class Subscriber(_Blocking):
    """Blocking twin of :class:`meshrpc.Subscriber`; same arguments.

    Handlers run on the background loop while the ``with`` block runs, or in the
    foreground with :meth:`run`.
    """

    def __init__(self, name: str, *args: Any, backend: str = "asyncio", **kwargs: Any) -> None:
        super().__init__(_AsyncSubscriber(name, *args, **kwargs), backend)

    @overload
    def on(self, pattern: str, fn: None = None) -> Callable[[E], E]: ...

    @overload
    def on(self, pattern: str, fn: E) -> E: ...

    def on(self, pattern: str, fn: E | None = None) -> E | Callable[[E], E]:
        """Register a handler, as :meth:`meshrpc.Subscriber.on`."""
        return self._component.on(pattern, fn)  # type: ignore[no-any-return]

    def wait_for_publishers(self, n: int = 1, *, timeout: float | None = None) -> int:
        """Block until ``n`` publishers confirmed our subscriptions."""
        return int(self._call(partial(self._component.wait_for_publishers, n, timeout=timeout)))

    def events(self, pattern: str, *, max_buffered: int = 1000) -> Iterator[tuple[str, Any]]:
        """Subscribe to ``pattern`` now; iterate ``(topic, payload)`` as events arrive
        (blocking). Closing the iterator (or the subscriber) unsubscribes."""
        stream = self._call(partial(self._component.events, pattern, max_buffered=max_buffered))
        return self._iterate(stream)

    def _iterate(self, stream: Any) -> Iterator[tuple[str, Any]]:
        try:
            while True:
                try:
                    yield self._call(stream.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            if self._portal is not None:
                self._call(stream.aclose)
