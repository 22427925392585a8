"""Which event loop meshrpc starts where it owns one (``run()``, ``meshrpc.sync``, the CLI).

uvloop makes every loop turn cheaper, and a mesh call is a few loop turns on each side,
so where it is installed (``pip install 'meshrpc[fast]'``) the asyncio backend uses it
unless ``MESHRPC_UVLOOP=off``. Code that runs its own loop chooses for itself, e.g.
``anyio.run(main, backend_options={"use_uvloop": True})``.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from meshrpc.config import load_settings
from meshrpc.errors import ConfigError

__all__ = ["run_options", "uvloop_available"]


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def run_options(backend: str, choice: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``anyio.run`` / ``start_blocking_portal`` on ``backend``.

    ``choice`` is ``auto``, ``on`` or ``off`` (default: ``MESHRPC_UVLOOP``).

    Raises:
        ConfigError: uvloop is required (``on``) but not installed, or the backend is
            neither asyncio nor trio.
    """
    if backend not in ("asyncio", "trio"):
        raise ConfigError(f"backend must be 'asyncio' or 'trio', not {backend!r}")
    if backend == "trio":
        return {"backend": "trio"}
    choice = load_settings().uvloop if choice is None else choice
    if choice != "off" and uvloop_available():
        return {"backend": "asyncio", "backend_options": {"use_uvloop": True}}
    if choice == "on":
        raise ConfigError(
            "MESHRPC_UVLOOP=on but uvloop is not installed: pip install 'meshrpc[fast]'"
        )
    return {"backend": "asyncio"}
