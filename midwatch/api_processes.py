"""``midwatch api --workers N``: N API processes on one port, each with a listening socket of its own.

Each process binds the port with ``SO_REUSEPORT``, so the kernel spreads new connections across the
processes by hash. uvicorn's own ``--workers`` shares one listening socket instead, and whichever process
is idle accepts a burst of new connections: with 16 keep-alive clients one of two processes served 83 % of
the ``api_submit`` benchmark's requests while the other sat idle (one CPU of two used).

The parent only supervises: it forwards SIGTERM/SIGINT (each uvicorn server then finishes its requests)
and, if a process dies on its own, stops the others and exits non-zero, so the orchestrator restarts the
whole API (a half-dead API keeps passing its readiness probe on the surviving process otherwise). Each
process stops itself when the parent is gone, even after a SIGKILL.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
from typing import Any

__all__ = ["serve_processes"]

_STOP_GRACE_S = 30.0


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _follow_parent(parent: int) -> None:
    """Stop this process (gracefully) when the supervisor is gone, even killed with SIGKILL: an orphan would
    keep listening on the port beside a restarted API (SO_REUSEPORT lets both bind) and serve old code."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _api_process(host: str, port: int) -> None:
    """One API process: its own socket on the shared port, the app built by ``midwatch.asgi:create``."""
    import uvicorn

    threading.Thread(target=_follow_parent, args=(os.getppid(),), name="midwatch-api-parent", daemon=True).start()
    sock = _listen(host, port)
    config = uvicorn.Config("midwatch.asgi:create", factory=True, host=host, port=port, log_level="warning",
                            access_log=False, log_config=None)
    uvicorn.Server(config).run(sockets=[sock])


def serve_processes(host: str, port: int, workers: int) -> int:
    """Run ``workers`` API processes until SIGTERM/SIGINT (exit 0) or until one dies on its own (exit 1)."""
    context = multiprocessing.get_context("spawn")  # each process imports and sets itself up afresh
    processes: list[Any] = [context.Process(target=_api_process, args=(host, port), name=f"midwatch-api-{n}")
                            for n in range(workers)]
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for process in processes:
            process.start()
        while not stop.wait(0.5):
            if any(not p.is_alive() for p in processes):
                break
        died = not stop.is_set()
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in processes:
            process.join(timeout=_STOP_GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()
        return 1 if died else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
