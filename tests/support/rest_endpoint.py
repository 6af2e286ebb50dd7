"""A REST endpoint on loopback that the telemetry forwarder posts to: it fails on demand and records."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Endpoint:
    """A local HTTP endpoint: answers 500 until `fail_until`, then 200; records every request."""

    def __init__(self):
        self.fail_until = 0.0
        self.requests: list[tuple[float, int, list[dict]]] = []  # (time, status, readings)
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 500 if time.monotonic() < endpoint.fail_until else 200
                with endpoint.lock:
                    endpoint.requests.append((time.monotonic(), status, body["readings"]))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/telemetry"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered_ids(self) -> list[int]:
        with self.lock:
            return [r["id"] for _, status, readings in self.requests if status == 200 for r in readings]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
