"""The web example's app: the page, and a bridge exposing part of the mesh to it.

    uvicorn examples.web.app:app   (or python examples/web/run.py)

The bridge (meshrpc.web.Bridge) is mounted at /mesh/<namespace>/: pages may call
``shop.info`` and ``quote.*`` and follow ``metrics.#``, nothing else (``admin.reset``
is refused with Forbidden before it reaches the mesh). Its hook stamps each order
with the channel it came from and refuses large ones at the edge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from meshrpc.web import Bridge, Client, Refused

NAMESPACE = os.environ.get("WEB_NAMESPACE", "shop")
MOUNT = f"/mesh/{NAMESPACE}"
PAGE = (Path(__file__).resolve().parent / "index.html").read_text(encoding="utf-8")


def authorize(client: Client, type: str, payload: Any) -> Any:
    """Runs before every call reaches the mesh: refuse, or return the payload to send."""
    if type == "quote.get":
        if not isinstance(payload, dict):
            raise Refused("a quote needs {item, qty}", kind="BadRequest")
        if isinstance(payload.get("qty"), int) and payload["qty"] > 100:
            raise Refused("orders over 100 need a sales representative")
        return {**payload, "channel": "web"}  # the bridge says where it came from
    return payload


bridge = Bridge(
    NAMESPACE,
    requests=["shop.info", "quote.*"],
    topics=["metrics.#"],
    authorize=authorize,
    timeout=5.0,
)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE.replace("__MESH__", MOUNT))


app = Starlette(
    routes=[Route("/", page), Mount(MOUNT, bridge)],
    lifespan=bridge.lifespan,
)
