"""An Express-like HTTP gateway: REST routes forwarded to responders with send().

    uvicorn examples.gateway.app:app   (or python examples/gateway/run.py)

The requester lives as long as the app (Starlette's lifespan). Mesh outcomes map to
HTTP statuses: NoResponder and Overloaded -> 503, DeadlineExceeded -> 504, PeerLost ->
502, RemoteError -> the status its exception class names (NotFound 404, Invalid 400)
or 500.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import meshrpc

NAMESPACE = os.environ.get("GATEWAY_NAMESPACE", "shop")
TIMEOUT = float(os.environ.get("GATEWAY_TIMEOUT", "5"))
STATUS_BY_REMOTE_TYPE = {"NotFound": 404, "Invalid": 400}


def status_of(exc: meshrpc.MeshError) -> int:
    if isinstance(exc, meshrpc.RemoteError):
        return STATUS_BY_REMOTE_TYPE.get(exc.remote_type, 500)
    if isinstance(exc, (meshrpc.NoResponder, meshrpc.Overloaded)):
        return 503
    if isinstance(exc, meshrpc.DeadlineExceeded):
        return 504
    if isinstance(exc, meshrpc.PeerLost):
        return 502
    return 500


async def forward(
    request: Request, kind: str, payload: Any = None, status: int = 200
) -> JSONResponse:
    requester: meshrpc.Requester = request.app.state.requester
    try:
        result = await requester.send(kind, payload, timeout=TIMEOUT)
    except meshrpc.MeshError as exc:
        message = exc.remote_message if isinstance(exc, meshrpc.RemoteError) else str(exc)
        return JSONResponse(
            {"error": {"kind": type(exc).__name__, "message": message}}, status_code=status_of(exc)
        )
    return JSONResponse(result, status_code=status)


async def list_users(request: Request) -> JSONResponse:
    return await forward(request, "users.list")


async def get_user(request: Request) -> JSONResponse:
    return await forward(request, "users.get", {"id": request.path_params["id"]})


async def create_user(request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse({"error": {"kind": "BadRequest", "message": "not JSON"}}, 400)
    return await forward(request, "users.create", body, status=201)


async def slow(request: Request) -> JSONResponse:
    return await forward(request, "users.slow", {"seconds": request.path_params["seconds"]})


async def list_products(request: Request) -> JSONResponse:
    return await forward(request, "products.list")


async def get_product(request: Request) -> JSONResponse:
    return await forward(request, "products.get", {"id": request.path_params["id"]})


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with meshrpc.Requester(name="gateway", namespace=NAMESPACE) as requester:
        app.state.requester = requester
        yield


app = Starlette(
    routes=[
        Route("/users", list_users, methods=["GET"]),
        Route("/users", create_user, methods=["POST"]),
        Route("/users/{id:int}", get_user, methods=["GET"]),
        Route("/slow/{seconds:float}", slow, methods=["GET"]),
        Route("/products", list_products, methods=["GET"]),
        Route("/products/{id}", get_product, methods=["GET"]),
    ],
    lifespan=lifespan,
)
