"""The current call, as seen from inside a handler (a context variable)."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallContext", "current_call"]


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler may know about the call it is running.

    ``deadline`` is on the :func:`time.monotonic` clock of this process; the caller's
    remaining time was carried on the wire, so clocks of different hosts need not agree.
    """

    type: str
    call_id: int
    deadline: float
    caller: str
    attempt: int = 1
    meta: dict[str, Any] = field(default_factory=dict)
    responder: str = ""

    def remaining(self) -> float:
        """Seconds left until the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())


_current: ContextVar[CallContext | None] = ContextVar("meshrpc_call", default=None)


def current_call() -> CallContext:
    """The call the running handler serves.

    Raises:
        LookupError: called outside a meshrpc handler.
    """
    ctx = _current.get()
    if ctx is None:
        raise LookupError("meshrpc.current_call() used outside a handler")
    return ctx


def _get() -> CallContext | None:
    return _current.get()


def _set(ctx: CallContext) -> None:
    _current.set(ctx)
