"""The ``meshrpc`` command (also ``python -m meshrpc``): look at and poke a live mesh.

    meshrpc ls [--json] [--watch]            components on the mesh now
    meshrpc call TYPE [JSON] [--timeout S]   one request; the result as JSON
    meshrpc publish TOPIC [JSON]             one event
    meshrpc listen PATTERN [--count N]       events as JSON lines
    meshrpc monitor [--json] [--web PORT]    live components and traffic

Global options choose the mesh (``--namespace``, ``--key``, ``--environment``); every
other setting comes from the ``MESHRPC_*`` variables as for any component. Errors are one
line on stderr with the error kind, and the exit status says which kind (``EXIT_CODES``).
Ctrl-C ends a long-running command cleanly (status 0).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final, TextIO

import anyio

from meshrpc._backends import default_discovery
from meshrpc._components.publisher import Publisher
from meshrpc._components.requester import Requester
from meshrpc._components.stats import PUBLISHER_NAME as STATS_PUBLISHER
from meshrpc._components.subscriber import Subscriber
from meshrpc._loops import run_options
from meshrpc._protocol.advertisement import Advertisement
from meshrpc.config import load_settings
from meshrpc.errors import (
    ConfigError,
    DeadlineExceeded,
    MeshError,
    NoResponder,
    Overloaded,
    PeerLost,
    ProtocolError,
    RemoteError,
)
from meshrpc.security import derive

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES: Final[dict[type[BaseException], int]] = {
    ConfigError: 2,
    NoResponder: 3,
    DeadlineExceeded: 4,
    RemoteError: 5,
    PeerLost: 6,
    Overloaded: 7,
    ProtocolError: 8,
}
"""Exit status per error kind (1 for any other meshrpc error, 2 for bad usage)."""


class UsageError(Exception):
    """Bad command-line input (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshrpc", description="Look at and poke a meshrpc mesh from the shell."
    )
    parser.add_argument("--namespace", help="mesh namespace (default: MESHRPC_NAMESPACE)")
    parser.add_argument("--key", help="partition key (default: MESHRPC_KEY)")
    parser.add_argument("--environment", help="environment (default: MESHRPC_ENVIRONMENT)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ls = sub.add_parser("ls", help="list the components on the mesh")
    ls.add_argument("--json", action="store_true", help="one JSON object per component")
    ls.add_argument("--watch", action="store_true", help="then follow joins and leaves")
    ls.add_argument(
        "--wait",
        type=float,
        default=3.0,
        help="seconds to collect advertisements (3; mDNS answers can take over a second)",
    )
    ls.add_argument(
        "--all",
        action="store_true",
        help="every namespace, key and environment, and the built-in statistics publishers",
    )

    call = sub.add_parser("call", help="send one request and print the result as JSON")
    call.add_argument("type")
    call.add_argument("payload", nargs="?", default="null", help="JSON payload (null)")
    call.add_argument("--timeout", type=float, default=None, help="deadline in seconds")
    call.add_argument("--meta", default=None, help="JSON object of call metadata")

    publish = sub.add_parser("publish", help="publish one event")
    publish.add_argument("topic")
    publish.add_argument("payload", nargs="?", default="null", help="JSON payload (null)")
    publish.add_argument(
        "--subscribers",
        type=int,
        default=0,
        help="wait for this many subscribers before publishing (events are at-most-once)",
    )
    publish.add_argument("--timeout", type=float, default=10.0)

    monitor = sub.add_parser("monitor", help="live view of the mesh's components and traffic")
    monitor.add_argument("--json", action="store_true", help="a JSON line per refresh")
    monitor.add_argument("--duration", type=float, default=0, help="stop after S seconds")
    monitor.add_argument(
        "--web", type=int, default=None, metavar="PORT", help="also serve the mesh graph"
    )
    monitor.add_argument("--web-host", default="127.0.0.1", help="address for --web")

    listen = sub.add_parser("listen", help="print events matching PATTERN as JSON lines")
    listen.add_argument("pattern", help="topic or pattern (* one segment, # any depth)")
    listen.add_argument("--count", type=int, default=0, help="exit after N events")
    listen.add_argument("--group", default=None, help="join a balanced group")
    return parser


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


def _jsonable(value: Any) -> Any:
    # msgpack carries bytes and non-string keys, JSON does not.
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False)


def _labels(args: argparse.Namespace) -> dict[str, Any]:
    return {"namespace": args.namespace, "key": args.key, "environment": args.environment}


def _cli_name(kind: str) -> str:
    return f"meshrpc-cli-{kind}-{uuid.uuid4().hex[:6]}"


def _ad_row(ad: Advertisement) -> dict[str, Any]:
    return {
        "name": ad.name,
        "kind": ad.kind,
        "namespace": ad.namespace,
        "key": ad.key,
        "environment": ad.environment,
        "version": ad.version,
        "types": list(ad.types),
        "endpoint": ad.endpoint,
        "host": ad.host,
        "pid": ad.pid,
        "id": ad.instance_id,
    }


def _table(rows: list[dict[str, Any]], out: TextIO) -> None:
    columns = ("name", "kind", "namespace", "version", "types", "endpoint", "host", "pid")
    cells = [[", ".join(r[c]) if c == "types" else str(r[c]) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    header = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    print(header.rstrip(), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)


async def _ls(args: argparse.Namespace, out: TextIO) -> int:
    # Watch discovery directly: listing joins the mesh as nothing.
    settings = load_settings(_labels(args))
    keys = derive(settings.secret) if settings.secret is not None else None
    discovery = default_discovery(settings, keys)
    known: dict[str, Advertisement] = {}

    def visible(ad: Advertisement) -> bool:
        if args.all:
            return True
        if ad.kind == "publisher" and ad.name.startswith(STATS_PUBLISHER):
            return False  # the built-in statistics publishers: shown with --all
        return ad.same_mesh(settings.namespace, settings.key, settings.environment)

    await discovery.start()
    try:
        async with discovery.watch() as events:
            with anyio.move_on_after(args.wait):
                async for event in events:
                    if event.kind == "removed":
                        known.pop(event.advertisement.instance_id, None)
                    elif visible(event.advertisement):
                        known[event.advertisement.instance_id] = event.advertisement
            rows = sorted(
                (_ad_row(ad) for ad in known.values()), key=lambda r: (r["kind"], r["name"])
            )
            if args.json:
                for row in rows:
                    print(json.dumps(row), file=out)
            else:
                _table(rows, out)
            out.flush()
            if args.watch:
                async for event in events:
                    ad = event.advertisement
                    if not visible(ad):
                        continue
                    if args.json:
                        print(json.dumps({"event": event.kind, **_ad_row(ad)}), file=out)
                    else:
                        stamp = time.strftime("%H:%M:%S")
                        print(f"{stamp} {event.kind:8} {ad.kind:10} {ad.name} {ad.endpoint}",
                              file=out)  # fmt: skip
                    out.flush()
    finally:
        await discovery.aclose()
    return 0


async def _call(args: argparse.Namespace, out: TextIO) -> int:
    payload = _json_arg(args.payload, "the payload")
    meta = _json_arg(args.meta, "--meta") if args.meta else None
    if meta is not None and not isinstance(meta, dict):
        raise UsageError("--meta must be a JSON object")
    async with Requester(name=_cli_name("call"), timeout=args.timeout, **_labels(args)) as req:
        result = await req.send(args.type, payload, meta=meta)
    print(_dumps(result), file=out)
    return 0


async def _publish(args: argparse.Namespace, out: TextIO) -> int:
    payload = _json_arg(args.payload, "the payload")
    async with Publisher(name=_cli_name("publish"), **_labels(args)) as pub:
        if args.subscribers:
            await pub.wait_for_subscribers(args.subscribers, timeout=args.timeout)
        await pub.publish(args.topic, payload)
        delivered = pub.statistics()
    print(_dumps({"topic": args.topic, "subscribers": delivered.get("subscribers", 0)}), file=out)
    return 0


async def _listen(args: argparse.Namespace, out: TextIO) -> int:
    sub = Subscriber(name=_cli_name("listen"), group=args.group, **_labels(args))
    seen = 0
    async with sub, sub.events(args.pattern) as stream:
        print(_dumps({"listening": args.pattern}), file=sys.stderr, flush=True)
        async for topic, payload in stream:
            print(_dumps({"topic": topic, "payload": payload}), file=out, flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


async def _monitor(args: argparse.Namespace, out: TextIO) -> int:
    from meshrpc._components.stats import TOPIC
    from meshrpc._monitor import MeshView

    render, finish = (None, None) if args.json else _rich_renderer()
    view = MeshView()
    sub = Subscriber(name=_cli_name("monitor"), stats_interval=0, **_labels(args))
    async with sub, sub.events(TOPIC) as stream, anyio.create_task_group() as tg:

        async def consume() -> None:
            async for _topic, event in stream:
                view.update(event)

        tg.start_soon(consume)
        web = None
        if args.web is not None:
            from meshrpc._web_monitor import WebMonitor

            web = WebMonitor(view, args.web_host, args.web)
            await web.start(tg)
            print(_dumps({"web": web.url}), file=sys.stderr, flush=True)
        ends = time.monotonic() + args.duration if args.duration else math.inf
        try:
            while time.monotonic() < ends:
                view.expire()
                if render is None:
                    print(_dumps({"time": time.time(), "components": view.rows(),
                                  "links": view.links()}), file=out, flush=True)  # fmt: skip
                else:
                    render(view)
                await anyio.sleep(min(1.0, max(0.0, ends - time.monotonic())))
        finally:
            if finish is not None:
                finish()  # the last table stays on screen (and reaches a pipe)
            if web is not None:
                await web.aclose()
            tg.cancel_scope.cancel()
    return 0


def _rich_renderer() -> tuple[Any, Any]:
    try:
        from rich.console import Console
        from rich.live import Live
        from rich.table import Table
    except ImportError:
        raise UsageError("the terminal monitor needs rich: pip install 'meshrpc[cli]'") from None
    console = Console()
    live = Live(console=console, auto_refresh=False)
    live.start()

    def render(view: Any) -> None:
        table = Table(title="meshrpc — live mesh (Ctrl-C to quit)", expand=True)
        for column in ("name", "kind", "host:pid", "endpoint", "calls/s", "errors/s",
                       "pending", "p99 ms"):  # fmt: skip
            table.add_column(column, justify="right" if "/" in column or column in (
                "pending", "p99 ms") else "left")  # fmt: skip
        for row in view.rows():
            table.add_row(
                row["name"],
                row["kind"],
                f"{row['host']}:{row['pid']}",
                row["endpoint"],
                f"{row['calls_per_s']:.1f}",
                f"{row['errors_per_s']:.1f}",
                str(row["pending"]),
                "" if row["p99_ms"] is None else f"{row['p99_ms']:.2f}",
            )
        live.update(table, refresh=True)

    return render, live.stop


_COMMANDS = {
    "ls": _ls,
    "call": _call,
    "publish": _publish,
    "listen": _listen,
    "monitor": _monitor,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return anyio.run(_COMMANDS[args.command], args, sys.stdout, **run_options("asyncio"))
    except KeyboardInterrupt:
        return 0  # Ctrl-C ends a long-running command: not an error
    except UsageError as exc:
        print(f"meshrpc: error: {exc}", file=sys.stderr)
        return 2
    except MeshError as exc:
        kind = type(exc).__name__
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
        print(f"meshrpc: {kind}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
