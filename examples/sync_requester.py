"""Blocking use from plain sync code (a script, Flask, Django).

MESHRPC_INTERFACES=127.0.0.1 python examples/sync_requester.py
"""

from __future__ import annotations

import argparse

import meshrpc
from meshrpc.sync import Requester


def main(namespace: str | None) -> None:
    with Requester(name="sync-client", namespace=namespace) as client:
        print("2 + 3 =", client.send("add", {"a": 2, "b": 3}, timeout=10)["sum"])
        try:
            client.send("divide", {"a": 1, "b": 0})
        except meshrpc.RemoteError as exc:
            print("1 / 0 ->", exc.remote_type)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", default=None)
    main(parser.parse_args().namespace)
