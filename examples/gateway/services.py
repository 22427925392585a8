"""The responders behind the gateway: users and products, kept in memory.

Handlers signal HTTP-worthy failures by raising NotFound or Invalid (the gateway maps
the remote exception's class name to a status); anything else becomes a 500.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import anyio

import meshrpc


class NotFound(Exception):
    """The requested record does not exist (HTTP 404 at the gateway)."""


class Invalid(Exception):
    """The request's payload is unacceptable (HTTP 400 at the gateway)."""


def users(namespace: str | None = None) -> meshrpc.Responder:
    service = meshrpc.Responder(name="users", namespace=namespace)
    records: dict[int, dict[str, Any]] = {1: {"id": 1, "name": "Ada"}, 2: {"id": 2, "name": "Alan"}}
    ids = itertools.count(3)

    @service.on("users.list", idempotent=True)
    async def list_users(payload: Any) -> list[dict[str, Any]]:
        return list(records.values())

    @service.on("users.get", idempotent=True)
    async def get_user(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["id"] == 0:
            raise RuntimeError("user 0 does not exist by design; asking is a bug")  # -> 500
        user = records.get(payload["id"])
        if user is None:
            raise NotFound(f"no user {payload['id']}")
        return user

    @service.on("users.slow")
    async def slow(payload: dict[str, Any]) -> str:
        await anyio.sleep(payload["seconds"])
        return "done"

    @service.on("users.create")
    async def create_user(payload: dict[str, Any]) -> dict[str, Any]:
        name = payload.get("name") if isinstance(payload, dict) else None
        if not isinstance(name, str) or not name.strip():
            raise Invalid("a user needs a non-empty 'name'")
        user = {"id": next(ids), "name": name.strip()}
        records[user["id"]] = user
        return user

    return service


def products(namespace: str | None = None) -> meshrpc.Responder:
    service = meshrpc.Responder(name="products", namespace=namespace)
    catalogue = {
        "p1": {"id": "p1", "title": "Mesh cable", "price": 9.5},
        "p2": {"id": "p2", "title": "Zero-config router", "price": 49.0},
    }

    @service.on("products.list", idempotent=True)
    async def list_products(payload: Any) -> list[dict[str, Any]]:
        return list(catalogue.values())

    @service.on("products.get", idempotent=True)
    async def get_product(payload: dict[str, Any]) -> dict[str, Any]:
        product = catalogue.get(payload["id"])
        if product is None:
            raise NotFound(f"no product {payload['id']!r}")
        return product

    return service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="shop")
    args = parser.parse_args()
    meshrpc.run(users(args.namespace), products(args.namespace))


if __name__ == "__main__":
    main()
