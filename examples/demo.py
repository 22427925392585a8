"""`make demo`: three responder processes and one requester process on loopback.

Starts the responders, lets the requester discover them over mDNS (on 127.0.0.1
only) and spread 300 calls over them, prints the spread, then stops everything with
SIGTERM (responders drain) and exits. Bounded in time: it gives up after 60 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEADLINE_S = 60


def main() -> int:
    namespace = f"demo-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "MESHRPC_INTERFACES": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    print(f"namespace {namespace}: starting 3 responders on 127.0.0.1")
    responders = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "responder.py"),
                "--label",
                label,
                "--namespace",
                namespace,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for label in ("alpha", "beta", "gamma")
    ]
    try:
        started = time.monotonic()
        requester = subprocess.run(
            [
                sys.executable,
                str(HERE / "requester.py"),
                "--calls",
                "300",
                "--expect",
                "3",
                "--namespace",
                namespace,
            ],
            env=env,
            timeout=DEADLINE_S,
            capture_output=True,
            text=True,
            check=False,
        )
        print(requester.stdout, end="")
        if requester.returncode != 0:
            print(requester.stderr, file=sys.stderr)
            return requester.returncode
        print(f"requester finished in {time.monotonic() - started:.2f} s")
        return 0
    finally:
        for proc in responders:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in responders:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        codes = [proc.returncode for proc in responders]
        print(f"responders stopped (exit codes {codes})")


if __name__ == "__main__":
    sys.exit(main())
