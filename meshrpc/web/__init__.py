"""meshrpc.web: expose chosen responders and publishers to web pages over WebSocket.

A :class:`Bridge` is an ASGI app (Starlette) for one namespace: browsers call the
request types it exposes and follow the topics it exposes, with ``meshrpc.js``, the
JavaScript client it serves. Needs the ``web`` extra (``pip install meshrpc[web]``).

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from meshrpc.web import Bridge

    shop = Bridge("shop", requests=["quote.*"], topics=["metrics.#"])
    app = Starlette(routes=[Mount("/mesh/shop", shop)], lifespan=shop.lifespan)

The protocol, the hooks, the limits and the security notes: ``docs/web.md``.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError("meshrpc.web needs Starlette: pip install 'meshrpc[web]'") from exc

from meshrpc.web._bridge import Bridge, Client, Refused, lifespan, script

__all__ = ["Bridge", "Client", "Refused", "lifespan", "script"]
