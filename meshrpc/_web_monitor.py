"""``meshrpc monitor --web PORT``: the live mesh as a graph in the browser.

A deliberately small HTTP/1.1 server on anyio's TCP listener (asyncio and trio, no web
framework needed): ``GET /`` is one self-contained page (inline SVG + JavaScript),
``GET /events`` a Server-Sent Events stream with the mesh every second, and
``GET /api/mesh`` the same as one JSON document. Requests are bounded (8 KiB of
headers, 64 streams at once).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final

import anyio
from anyio.abc import SocketStream, TaskGroup

from meshrpc._monitor import MeshView

__all__ = ["WebMonitor"]

logger = logging.getLogger("meshrpc.monitor")

_MAX_HEADER: Final = 8192
_MAX_STREAMS: Final = 64


class WebMonitor:
    """Serves ``view`` on ``host:port`` until :meth:`aclose`."""

    def __init__(self, view: MeshView, host: str, port: int) -> None:
        self.view = view
        self.host = host
        self.port = port
        self._listener: Any = None
        self._streams = 0
        self._scope = anyio.CancelScope()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    async def start(self, tg: TaskGroup) -> None:
        self._listener = await anyio.create_tcp_listener(
            local_host=self.host, local_port=self.port, reuse_port=False
        )
        if self.port == 0:
            self.port = self._listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(self._serve)

    async def aclose(self) -> None:
        """Stop serving (the listener closes when its task has ended)."""
        self._scope.cancel()

    async def _serve(self) -> None:
        try:
            with self._scope:
                await self._listener.serve(self._handle)
        finally:
            with anyio.CancelScope(shield=True):
                await self._listener.aclose()

    def _mesh(self) -> dict[str, Any]:
        return {"components": self.view.rows(), "links": self.view.links()}

    async def _handle(self, stream: SocketStream) -> None:
        async with stream:
            try:
                path = await _read_request(stream)
            except (ValueError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            try:
                if path == "/":
                    await _respond(stream, "200 OK", "text/html; charset=utf-8", PAGE.encode())
                elif path == "/api/mesh":
                    body = json.dumps(self._mesh()).encode()
                    await _respond(stream, "200 OK", "application/json", body)
                elif path == "/events":
                    await self._events(stream)
                else:
                    await _respond(stream, "404 Not Found", "text/plain", b"not found\n")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return  # the browser went away

    async def _events(self, stream: SocketStream) -> None:
        if self._streams >= _MAX_STREAMS:
            await _respond(stream, "503 Service Unavailable", "text/plain", b"too many\n")
            return
        self._streams += 1
        try:
            await stream.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
            )
            while True:
                await stream.send(f"data: {json.dumps(self._mesh())}\n\n".encode())
                await anyio.sleep(1.0)
        finally:
            self._streams -= 1


async def _read_request(stream: SocketStream) -> str:
    data = b""
    with anyio.fail_after(10):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive(4096)
            data += chunk
            if len(data) > _MAX_HEADER:
                raise ValueError("request header too large")
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    method, _, rest = line.partition(" ")
    target = rest.split(" ", 1)[0]
    if method != "GET":
        raise ValueError(f"method {method!r}")
    return target.split("?", 1)[0]


async def _respond(stream: SocketStream, status: str, kind: str, body: bytes) -> None:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
    )
    await stream.send(head.encode() + body)


PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshrpc monitor</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } #status { color: #777; }
svg { border: 1px solid #ddd; background: #fcfcfc; width: 100%; height: 420px; }
.node rect { stroke: #555; rx: 6; } .node text { font-size: 12px; }
.requester rect { fill: #dbeafe; } .responder rect { fill: #dcfce7; }
.publisher rect { fill: #fef3c7; } .subscriber rect { fill: #fce7f3; }
.edge { stroke: #888; stroke-width: 1.5; marker-end: url(#arrow); }
.edge-label { font-size: 11px; fill: #555; }
table { border-collapse: collapse; margin-top: 1em; width: 100%; }
td, th { border-bottom: 1px solid #eee; padding: 4px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
</style></head>
<body>
<h1>meshrpc &mdash; live mesh <span id="status">connecting&hellip;</span></h1>
<svg id="graph" viewBox="0 0 1000 420"><defs><marker id="arrow" viewBox="0 0 10 10"
 refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
 <path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/></marker></defs><g id="edges"></g>
 <g id="nodes"></g></svg>
<table><thead><tr><th>component</th><th>kind</th><th>host:pid</th><th>endpoint</th>
<th>calls/s</th><th>errors/s</th><th>pending</th><th>p99 ms</th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const columns = {requester: 120, subscriber: 120, publisher: 880, responder: 880};
function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function render(mesh) {
  const nodes = document.getElementById("nodes"), edges = document.getElementById("edges");
  nodes.replaceChildren(); edges.replaceChildren();
  const count = {}, pos = {};
  for (const c of mesh.components) {
    const side = columns[c.kind] === undefined ? 500 : columns[c.kind];
    count[side] = (count[side] || 0) + 1;
    pos[c.id] = {x: side, y: 30 + count[side] * 60};
  }
  for (const l of mesh.links) {
    const a = pos[l.from], b = pos[l.to];
    if (!a || !b) continue;
    edges.appendChild(el("line", {class: "edge", x1: a.x + 100, y1: a.y, x2: b.x - 100, y2: b.y}));
    edges.appendChild(el("text", {class: "edge-label", x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 4},
      l.sent + " calls" + (l.in_flight ? ", " + l.in_flight + " pending" : "")));
  }
  for (const c of mesh.components) {
    const p = pos[c.id], g = el("g", {class: "node " + c.kind});
    g.appendChild(el("rect", {x: p.x - 100, y: p.y - 22, width: 200, height: 44}));
    g.appendChild(el("text", {x: p.x - 92, y: p.y - 5}, c.name + " (" + c.kind + ")"));
    g.appendChild(el("text", {x: p.x - 92, y: p.y + 13}, c.calls_per_s + " calls/s"));
    nodes.appendChild(g);
  }
  const rows = document.getElementById("rows");
  rows.replaceChildren();
  for (const c of mesh.components) {
    const tr = document.createElement("tr");
    for (const [v, num] of [[c.name], [c.kind], [c.host + ":" + c.pid], [c.endpoint],
        [c.calls_per_s, 1], [c.errors_per_s, 1], [c.pending, 1], [c.p99_ms ?? "", 1]]) {
      const td = document.createElement("td");
      td.textContent = v; if (num) td.className = "num"; tr.appendChild(td);
    }
    rows.appendChild(tr);
  }
  document.getElementById("status").textContent =
    mesh.components.length + " components, updated " + new Date().toLocaleTimeString();
}
const source = new EventSource("/events");
source.onmessage = (e) => render(JSON.parse(e.data));
source.onerror = () => {
  document.getElementById("status").textContent += " (connection lost, retrying)";
};
</script></body></html>
"""
