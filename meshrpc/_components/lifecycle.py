"""Running components from a script: serve until SIGINT/SIGTERM, then stop gracefully."""

from __future__ import annotations

import logging
import signal
from contextlib import AsyncExitStack
from typing import Any

import anyio

from meshrpc._loops import run_options

__all__ = ["run", "serve"]

logger = logging.getLogger("meshrpc")


async def serve(*components: Any) -> None:
    """Enter every component, serve until SIGINT or SIGTERM, then leave them in reverse.

    Leaving a responder drains it, so a SIGTERM from a deployment loses no calls.
    """
    async with AsyncExitStack() as stack:
        for component in components:
            await stack.enter_async_context(component)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                logger.info("received %s; stopping", signal.Signals(signum).name)
                break


def run(*components: Any, backend: str = "asyncio") -> None:
    """Serve ``components`` in this process until SIGINT/SIGTERM (blocks).

    ``backend`` is ``"asyncio"`` (on uvloop when installed, see ``MESHRPC_UVLOOP``) or
    ``"trio"``.
    """
    if not components:
        raise ValueError("meshrpc.run() needs at least one component")
    anyio.run(serve, *components, **run_options(backend))
