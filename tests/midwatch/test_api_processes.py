"""`midwatch api --workers N`: every process takes a share of the connections (each has its own socket on the
port, SO_REUSEPORT), all of them answer, and SIGTERM stops them all cleanly."""

from __future__ import annotations

import http.client
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.conftest import wait_http
from tests.conftest import Harness, free_port


def _children(pid: int) -> list[int]:
    """The API processes under ``pid`` (not multiprocessing's resource tracker)."""
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"resource_tracker" not in cmdline:
            out.append(int(child))
    return out


def _established_on(port: int) -> set[int]:
    """Socket inodes of established TCP connections whose local port is ``port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(int(fields[9]))
    return inodes


def _sockets_of(pid: int, inodes: set[int]) -> int:
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            count += 1
    return count


def test_every_api_process_serves_a_share_of_the_connections_and_sigterm_stops_them_all(
        make_harness: Callable[..., Harness], tmp_path: Path) -> None:
    h = make_harness(worker=None)  # the embedded database, migrated by the harness
    port = free_port()
    api = h.spawn("api", "--workers", "2", "--port", str(port), log=tmp_path / "api.log")
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
    processes = _children(api.pid)
    deadline = time.monotonic() + 30
    while len(processes) != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        processes = _children(api.pid)
    assert len(processes) == 2, f"expected two API processes under {api.pid}, found {processes}"

    clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
    try:
        for client in clients:  # keep-alive: each connection stays with the process that accepted it
            client.request("GET", "/healthz")
            response = client.getresponse()
            assert response.status == 200
            response.read()
        established = _established_on(port)
        shares = {pid: _sockets_of(pid, established) for pid in processes}
        assert sum(shares.values()) == 16, shares
        assert all(n > 0 for n in shares.values()), f"a process took no connection: {shares}"
    finally:
        for client in clients:
            client.close()

    api.send_signal(signal.SIGTERM)
    assert api.wait(timeout=60) == 0, (tmp_path / "api.log").read_text()
    for pid in processes:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    log = (tmp_path / "api.log").read_text()
    assert "Traceback" not in log, log
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_the_api_processes_stop_when_their_supervisor_is_killed(make_harness: Callable[..., Harness],
                                                               tmp_path: Path) -> None:
    """kill -9 of `midwatch api` must not leave its processes listening: with SO_REUSEPORT a restarted API
    would share the port with them, and they would go on serving."""
    h = make_harness(worker=None)
    port = free_port()
    api = h.spawn("api", "--workers", "2", "--port", str(port), log=tmp_path / "api.log")
    wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
    deadline = time.monotonic() + 30
    while len(processes := _children(api.pid)) != 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(processes) == 2, processes
    api.kill()
    api.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in processes if Path(f"/proc/{pid}").exists()]
    assert not left, f"API processes {left} outlived their supervisor"
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "something still listens on the API port"
