"""A stand-in for `tgi-course serve`, started by a control plane as an endpoint's server (tests only).

It speaks just enough HTTP for the control plane (``/health``) and for the tests (``/auth``: what the
request's Authorization header was, compared with the server's API_KEY). What it does on SIGTERM comes
from ``SERVED_MODEL_NAME``, one of the settings a payload may pass: ``exit-after-<seconds>`` finishes
that long after SIGTERM, ``ignore-term`` never does (only SIGKILL ends it).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODE = os.environ.get("SERVED_MODEL_NAME", "")
KEY = os.environ.get("API_KEY")


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.partition("?")[0]
        if path == "/health":
            body = {"status": "ok"}
        elif path == "/auth":
            values = self.headers.get_all("authorization") or []
            body = {"headers": len(values), "is_api_key": bool(KEY) and values == [f"Bearer {KEY}"]}
        else:
            self.send_error(404)
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def on_sigterm(signum: int, frame: object) -> None:
    print("stand-in: SIGTERM received", flush=True)
    if MODE == "ignore-term":
        return
    if MODE.startswith("exit-after-"):
        time.sleep(float(MODE.removeprefix("exit-after-")))
    print("stand-in: exiting", flush=True)
    os._exit(0)


signal.signal(signal.SIGTERM, on_sigterm)
server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
# A careless server that prints its own key: the control plane's /logs route must still not show it.
print(f"stand-in: listening on {os.environ['PORT']}, API_KEY={KEY}", flush=True)
sys.stdout.flush()
server.serve_forever()
