"""Start the whole web example on loopback with one command.

    python examples/web/run.py [--port 8000]

Starts the quote and metrics services (a separate process) and the web app (uvicorn)
on 127.0.0.1, then serves until Ctrl-C. Open http://127.0.0.1:8000/ for a live
dashboard fed by a publisher and a form that calls a responder, through the browser
bridge (meshrpc.web).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--namespace", default="shop")
    args = parser.parse_args()
    env = {**os.environ, "MESHRPC_INTERFACES": os.environ.get("MESHRPC_INTERFACES", "127.0.0.1")}
    env["WEB_NAMESPACE"] = args.namespace
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    services = subprocess.Popen(
        [sys.executable, str(HERE / "services.py"), "--namespace", args.namespace], env=env
    )
    web = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
         "--port", str(args.port), "--log-level", "warning"],
        env=env,
        cwd=HERE,
    )  # fmt: skip
    print(f"open http://127.0.0.1:{args.port}/ (Ctrl-C to stop)", flush=True)
    # SIGTERM (from a supervisor or a test) stops both children like Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        web.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in (web, services):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (web, services):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
