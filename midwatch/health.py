"""The health and metrics port of worker and scheduler processes: /healthz, /readyz, /metrics.

Ports, so that ``midwatch api``, ``midwatch scheduler`` and several ``midwatch worker`` processes can share
one host with default settings:

- ``MIDWATCH_HEALTH_PORT`` unset: the scheduler takes 9090; a worker takes the first free port of
  9091-9099 (the second worker on a host gets 9092, ...). The port taken is logged (``health_server_started``),
  printed by ``midwatch status`` from the worker's heartbeat, and listed in ``midwatch status --format json``.
- ``MIDWATCH_HEALTH_PORT=N``: exactly N (Kubernetes sets it per Deployment); in use, the process refuses to
  start with one line naming the setting.
- ``MIDWATCH_HEALTH_PORT=0``: no health server.

The API serves the same paths on its own port (``MIDWATCH_PORT``); :func:`check_port_free` gives it the same
one-line error when that port is taken.
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["DEFAULT_HEALTH_PORTS", "WORKER_PORTS", "HealthServer", "PortUnavailable", "bind_health",
           "check_port_free"]

DEFAULT_HEALTH_PORTS = {"scheduler": 9090, "worker": 9091}
WORKER_PORTS = range(9091, 9100)  # a worker without MIDWATCH_HEALTH_PORT takes the first free one


class PortUnavailable(Exception):
    """A port the process needs cannot be bound; ``str()`` is the one line to print."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no such local address (check MIDWATCH_HOST)"
    return exc.strerror or type(exc).__name__


def check_port_free(host: str, port: int, setting: str, process: str) -> None:
    """Raise :class:`PortUnavailable` (naming ``setting``) if ``host:port`` cannot be listened on now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is not "in use"
        try:
            probe.bind((host, port))
            probe.listen(1)
        except OSError as exc:
            raise PortUnavailable(f"midwatch {process}: cannot listen on {host}:{port}: {_reason(exc)}; set {setting} "
                                  "to a free port") from None


class HealthServer:
    """A bound (not yet serving) health server; :meth:`start` serves it from a daemon thread."""

    def __init__(self, server: ThreadingHTTPServer, process: str) -> None:
        self._server = server
        self.process = process
        self.port = int(server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self, ready: Callable[[], None], metrics: Callable[[], tuple[bytes, str]]) -> None:
        """Serve /healthz (the process answers), /readyz (``ready`` does not raise) and /metrics."""
        self._server.RequestHandlerClass = _handler(ready, metrics)
        self._thread = threading.Thread(target=self._server.serve_forever, name="midwatch-health", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def _bind(host: str, port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), BaseHTTPRequestHandler)


def bind_health(host: str, configured: int | None, process: str) -> HealthServer | None:
    """Bind the health port of ``process`` (worker or scheduler) as the module docstring describes.

    Returns None when disabled (``MIDWATCH_HEALTH_PORT=0``); raises :class:`PortUnavailable` otherwise.
    """
    if configured == 0:
        return None
    if configured is not None or process != "worker":
        port = configured if configured is not None else DEFAULT_HEALTH_PORTS[process]
        try:
            return HealthServer(_bind(host, port), process)
        except OSError as exc:
            origin = "" if configured is not None else f" (the {process} default)"
            raise PortUnavailable(f"midwatch {process}: cannot serve health and metrics on {host}:{port}{origin}: "
                                  f"{_reason(exc)}; set MIDWATCH_HEALTH_PORT to a free port (0 disables the health "
                                  "server)") from None
    last: OSError | None = None
    for port in WORKER_PORTS:
        try:
            return HealthServer(_bind(host, port), process)
        except OSError as exc:
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
    assert last is not None
    raise PortUnavailable(f"midwatch worker: cannot serve health and metrics on {host}:{WORKER_PORTS.start}-"
                          f"{WORKER_PORTS.stop - 1} ({_reason(last)}; one port per worker on a host); set "
                          "MIDWATCH_HEALTH_PORT to a free port (0 disables the health server)")


def _handler(ready: Callable[[], None], metrics: Callable[[], tuple[bytes, str]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, b'{"status":"ok"}', "application/json")
            elif path == "/readyz":
                try:
                    ready()
                    self._send(200, b'{"status":"ok"}', "application/json")
                except Exception as exc:
                    body = f'{{"status":"unavailable","error":"{type(exc).__name__}"}}'.encode()
                    self._send(503, body, "application/json")
            elif path == "/metrics":
                body, ctype = metrics()
                self._send(200, body, ctype)
            else:
                self._send(404, b'{"code":"not_found"}', "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            try:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                # A probe that gave up (its timeout ran out) is not this process's error: without this,
                # socketserver printed a traceback to the log for every impatient health check.
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler
