"""Security figures: CurveZMQ handshake time, and what 500 idle connections cost.

    python bench/security.py [--connections 500] [--json PATH]

On 127.0.0.1 only. The responder is a separate process (tests/chaos_responder.py)
whose descriptors and RSS are read from /proc. Throughput and latency with the secret
on and off are in bench/roundtrip.py --secret.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meshrpc.security import Secret, derive  # noqa: E402
from tests.chaos import Child  # noqa: E402

SECRET = "benchmark-only mesh secret, not for use"


def proc_figures(pid: int) -> tuple[int, int]:
    """(open descriptors, RSS in KiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return fds, rss


def handshake_ms(endpoint: str, curve: dict[str, bytes], samples: int = 50) -> list[float]:
    ctx = zmq.Context.instance()
    times = []
    for _ in range(samples):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        for name, value in curve.items():
            sock.setsockopt(getattr(zmq, name), value)
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        started = time.perf_counter()
        sock.connect(endpoint)
        if monitor.poll(5000):
            recv_monitor_message(monitor)
            times.append((time.perf_counter() - started) * 1000)
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
    return times


def run(connections: int) -> dict[str, Any]:
    keys = derive(Secret(SECRET))
    secret_z85 = z85.encode(keys.curve_secret)
    public = zmq.curve_public(secret_z85)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("plain", "secret"):
            os.environ.pop("MESHRPC_SECRET", None)
            if mode == "secret":
                os.environ["MESHRPC_SECRET"] = SECRET
            os.environ["MESHRPC_HANDSHAKE_TIMEOUT"] = "2"
            child = Child("sec", f"bench-{uuid.uuid4().hex[:8]}", Path(tmp))
            try:
                endpoint = child.wait_ready()
                curve: dict[str, bytes] = {}
                if mode == "secret":
                    curve = {"CURVE_SERVERKEY": public, "CURVE_PUBLICKEY": public}
                    curve["CURVE_SECRETKEY"] = secret_z85
                times = handshake_ms(endpoint, curve)
                host, port = endpoint[len("tcp://") :].rsplit(":", 1)
                time.sleep(0.5)
                base = proc_figures(child.proc.pid)
                idle = [socket.create_connection((host, int(port))) for _ in range(connections)]
                held = base
                ends = time.monotonic() + 3.0  # past the 2 s handshake timeout
                while time.monotonic() < ends:
                    now = proc_figures(child.proc.pid)
                    held = (max(held[0], now[0]), max(held[1], now[1]))
                    time.sleep(0.05)
                after = proc_figures(child.proc.pid)
                for s in idle:
                    s.close()
            finally:
                child.close()
                os.environ.pop("MESHRPC_SECRET", None)
            results[mode] = {
                "handshake_ms_p50": statistics.median(times),
                "handshake_ms_p99": sorted(times)[int(0.99 * (len(times) - 1))],
                "fds": {"before": base[0], "held": held[0], "after_timeout": after[0]},
                "rss_kib": {"before": base[1], "held": held[1], "after_timeout": after[1]},
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--json", default="")
    parser.add_argument("--write-docs", action="store_true", help="update docs/security.md")
    args = parser.parse_args()
    os.environ["MESHRPC_INTERFACES"] = "127.0.0.1"
    results = run(args.connections)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC with "
        f"`python bench/security.py --connections {args.connections}` (responder in its own "
        "process, handshake timeout 2 s):",
        "",
        f"| mode | handshake p50 / p99 | responder fds: before / peak with {args.connections} "
        "idle connections / after the timeout | responder RSS MiB, same three |",
        "|---|---|---|---|",
    ]
    for mode, r in results.items():
        fds, rss = r["fds"], r["rss_kib"]
        lines.append(
            f"| {mode} | {r['handshake_ms_p50']:.2f} / {r['handshake_ms_p99']:.2f} ms | "
            f"{fds['before']} / {fds['held']} / {fds['after_timeout']} | "
            f"{rss['before'] / 1024:.1f} / {rss['held'] / 1024:.1f} / "
            f"{rss['after_timeout'] / 1024:.1f} |"
        )
    section = "\n".join(lines)
    print(section)
    if args.write_docs:
        docs = ROOT / "docs" / "security.md"
        text = docs.read_text()
        head, rest = text.split("<!-- security:start -->", 1)
        _, tail = rest.split("<!-- security:end -->", 1)
        docs.write_text(f"{head}<!-- security:start -->\n{section}\n<!-- security:end -->{tail}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
