"""The health server of the worker and the scheduler."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from midwatch.health import bind_health
from tests.conftest import free_port


def test_a_probe_that_hangs_up_before_the_answer_leaves_no_traceback(capfd: pytest.CaptureFixture[str]) -> None:
    """A health check that gave up (its timeout ran out) once printed a BrokenPipe traceback into the log."""
    hung_up = threading.Event()
    answered = threading.Event()

    def slow_metrics() -> tuple[bytes, str]:
        hung_up.wait(10)
        time.sleep(0.1)  # the client's FIN/RST has arrived
        answered.set()
        return b"x" * 4_000_000, "text/plain"  # larger than any socket buffer: the write reaches the closed peer

    server = bind_health("127.0.0.1", 0, "scheduler")
    assert server is None  # 0 disables it
    server = bind_health("127.0.0.1", free_port(), "scheduler")
    assert server is not None
    server.start(lambda: None, slow_metrics)
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        hung_up.set()
        assert answered.wait(10)
        time.sleep(0.5)  # the handler thread finishes (or prints its traceback)
        with socket.create_connection(("127.0.0.1", server.port)) as client:  # still serving
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert client.recv(1000).startswith(b"HTTP/1.0 200")
    finally:
        server.stop()
    assert "Traceback" not in capfd.readouterr().err

