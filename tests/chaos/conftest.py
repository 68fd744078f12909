"""Helpers for kill-and-resume tests: real processes, real services."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx

from tests.conftest import Harness, Tenant


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up in {timeout}s")


def wait_progress(h: Harness, tenant: Tenant, run_id: str, at_least: int, timeout: float = 120) -> dict[str, Any]:
    """Poll until the run has finished ``at_least`` items; return the run."""
    deadline = time.monotonic() + timeout
    while True:
        run = h.run(tenant, run_id)
        if run["items_done"] >= at_least:
            return run
        if run["state"] not in ("queued", "running"):
            raise AssertionError(f"run ended early: {run}")
        if time.monotonic() > deadline:
            raise AssertionError(f"run stuck at {run['items_done']} items: {run}")
        time.sleep(0.02)


def all_records(h: Harness, tenant: Tenant) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        url = "/v1/sandbox/records?limit=500" + (f"&cursor={cursor}" if cursor else "")
        page = h.client.get(url, headers=tenant.headers).json()
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
