"""``meshrpc monitor``: the live mesh from the statistics events components publish.

The pure part (:class:`MeshView`) folds ``meshrpc.stats`` events into per-component
rates and the requester -> responder links; the CLI renders it with rich (terminal),
as JSON lines, or serves it to the web page (``meshrpc/_web_monitor.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MeshView"]

# The counter whose rate is "calls/s" and the ones that count as errors, per kind.
_TRAFFIC = {"responder": "received", "requester": "sent", "publisher": "published",
            "subscriber": "received"}  # fmt: skip
_ERRORS = {
    "responder": ("errors", "overloaded", "expired", "malformed"),
    "requester": ("remote_errors", "timeouts", "no_responder", "peer_lost", "overloaded"),
    "publisher": (),
    "subscriber": ("missed", "dropped", "handler_errors"),
}


@dataclass
class _Seen:
    snapshot: dict[str, Any]
    host: str
    pid: int
    at: float
    rate: float = 0.0
    error_rate: float = 0.0


@dataclass
class MeshView:
    """What the monitor knows: the latest snapshot of every component, with rates."""

    expire_after: float = 5.0  # s without news before a component is dropped
    components: dict[str, _Seen] = field(default_factory=dict)

    def update(self, event: Any, now: float | None = None) -> None:
        """Fold one statistics event in (malformed parts are skipped)."""
        now = time.monotonic() if now is None else now
        if not isinstance(event, dict) or not isinstance(event.get("components"), list):
            return
        host, pid = str(event.get("host", "")), event.get("pid", 0)
        for snap in event["components"]:
            if not isinstance(snap, dict) or not isinstance(snap.get("stats"), dict):
                continue
            key = str(snap.get("id", ""))
            old = self.components.get(key)
            seen = _Seen(snap, host, pid if isinstance(pid, int) else 0, now)
            if old is not None and now > old.at:
                seen.rate = _delta(old.snapshot, snap, (_TRAFFIC.get(snap.get("kind", ""), ""),))
                seen.rate /= now - old.at
                seen.error_rate = _delta(old.snapshot, snap, _ERRORS.get(snap.get("kind", ""), ()))
                seen.error_rate /= now - old.at
            self.components[key] = seen

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in [k for k, s in self.components.items() if now - s.at > self.expire_after]:
            del self.components[key]

    def rows(self) -> list[dict[str, Any]]:
        """One row per component: identity and the figures the monitor shows."""
        rows = []
        for seen in self.components.values():
            snap, stats = seen.snapshot, seen.snapshot["stats"]
            latency = snap.get("latency_ms") or {}
            rows.append(
                {
                    "id": snap.get("id", ""),
                    "name": snap.get("name", ""),
                    "kind": snap.get("kind", ""),
                    "namespace": snap.get("namespace", ""),
                    "host": seen.host,
                    "pid": seen.pid,
                    "endpoint": snap.get("endpoint", ""),
                    "calls_per_s": round(seen.rate, 1),
                    "errors_per_s": round(seen.error_rate, 1),
                    "pending": stats.get("in_flight", stats.get("buffered", 0)),
                    "p99_ms": round(latency["p99"], 2) if "p99" in latency else None,
                }
            )
        return sorted(rows, key=lambda r: (r["kind"], r["name"], r["id"]))

    def links(self) -> list[dict[str, Any]]:
        """Requester -> responder links with the calls sent over each."""
        links = []
        for seen in self.components.values():
            for peer in seen.snapshot.get("peers") or []:
                if isinstance(peer, dict):
                    links.append(
                        {
                            "from": seen.snapshot.get("id", ""),
                            "to": peer.get("id", ""),
                            "sent": peer.get("sent", 0),
                            "in_flight": peer.get("in_flight", 0),
                        }
                    )
        return links


def _delta(old: dict[str, Any], new: dict[str, Any], keys: tuple[str, ...]) -> float:
    total = 0.0
    for key in keys:
        a, b = old.get("stats", {}).get(key), new.get("stats", {}).get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b >= a:
            total += b - a
    return total
