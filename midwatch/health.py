"""A tiny HTTP server for worker and scheduler processes: /healthz, /readyz, /metrics."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["serve_health"]


def serve_health(host: str, port: int, ready: Callable[[], None]) -> ThreadingHTTPServer:
    """Start serving in a daemon thread; ``ready`` raises when the process is not ready."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, b'{"status":"ok"}', "application/json")
            elif self.path == "/readyz":
                try:
                    ready()
                    self._send(200, b'{"status":"ok"}', "application/json")
                except Exception as exc:
                    body = f'{{"status":"unavailable","error":"{type(exc).__name__}"}}'.encode()
                    self._send(503, body, "application/json")
            elif self.path == "/metrics":
                self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b'{"code":"not_found"}', "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="midwatch-health", daemon=True).start()
    return server
