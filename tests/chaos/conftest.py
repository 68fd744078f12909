"""Helpers for kill-and-resume tests: real processes, real services."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Harness, Tenant, free_port, spec


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


# ---- counting side effects at the upstream that received them ------------------------------------
# A table behind a unique constraint (sandbox_records, checkpoints by primary key) cannot show a duplicate
# call: the second insert is silently absorbed. The upstream sees every request, so the chaos tests send
# their side effect there and count requests per idempotency key.

EFFECT_TOOL = "mail.send"


def put_effect_tool(h: Harness, tenant: Tenant, up: Any, name: str = EFFECT_TOOL, idempotent: bool = True) -> None:
    """An HTTP side effect: ``POST {up}/effects/{{ args.n }}`` carrying the step's Idempotency-Key."""
    r = h.client.put(f"/v1/tools/{name}", headers=tenant.headers, json={
        "method": "POST", "url": f"{up.url}/effects/{{{{ args.n }}}}", "side_effect": True,
        "idempotent": idempotent, "idempotency_header": "Idempotency-Key", "timeout_s": 30,
        "retry": {"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2}})
    assert r.status_code == 201, r.text


def mailer_spec(up: Any, tool: str = EFFECT_TOOL) -> str:
    """The ``mailer`` batch agent: per item, read ``n`` (sandbox.echo), then send it through ``tool``."""
    return f"""\
apiVersion: midwatch/v1
name: mailer
scope: {{tools: [sandbox.echo, {tool}], egress: ["{up.netloc}"]}}
input: {{items: true}}
steps:
  - id: read
    tool: sandbox.echo
    args: {{n: "{{{{ item.n }}}}"}}
  - id: send
    tool: {tool}
    args: {{n: "{{{{ steps.read.output.n }}}}"}}
"""


def effects_by_key(up: Any) -> Counter[str]:
    """Requests the upstream received for ``/effects/...``, per Idempotency-Key."""
    return Counter(r.headers.get("idempotency-key", "") for r in up.requests if r.path.startswith("/effects/"))


def assert_effects_once(up: Any, expected_keys: set[str], *, resent_at_most: int = 0) -> None:
    """Every expected effect reached the upstream, under its own key, and none was called twice, except at
    most ``resent_at_most`` calls cut off by a kill and re-sent with the SAME key (harmless: the upstream acts
    once per key, as an Idempotency-Key API does)."""
    keys = effects_by_key(up)
    assert set(keys) == expected_keys, (f"missing {sorted(expected_keys - set(keys))[:5]}, "
                                        f"unexpected {sorted(set(keys) - expected_keys)[:5]}")
    resent = {k: n for k, n in keys.items() if n > 1}
    assert len(resent) <= resent_at_most and all(n == 2 for n in resent.values()), \
        f"side effects called more than once: {resent}"


def paced_batch(name: str, tool: str, egress: str, pace_s: float, *, schema: bool = False) -> str:
    """A batch spec: echo each item ``{n}``, sleep ``pace_s``, then call ``tool`` (a side effect) with it."""
    steps = [{"id": "read", "tool": "sandbox.echo", "args": {"n": "{{ item.n }}"}},
             {"id": "pace", "tool": "sandbox.sleep", "args": {"seconds": pace_s}},
             {"id": "send", "tool": tool, "args": {"n": "{{ steps.read.output.n }}"}}]
    items: dict[str, Any] = {"items": True}
    if schema:
        items["schema"] = {"type": "object", "required": ["n"]}
    return spec(name, *steps, scope={"tools": ["sandbox.echo", "sandbox.sleep", tool], "egress": [egress]},
                input=items)


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb in a temporary directory, a free port): restarting it
    disturbs nobody else's tests."""

    url: str
    data: Path
    log: Path
    run_as: list[str]
    bindir: Path

    def ctl(self, *args: str, timeout: float = 120) -> None:
        # no pipes: the server pg_ctl starts would inherit them and hold them open
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                        *args], check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def restart(self) -> None:
        self.ctl("restart", "-m", "fast", "-w")


def _postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise AssertionError("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
    return Path(initdb).parent


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a throwaway PostgreSQL (as the ``postgres`` user when the tests run as root, which initdb
    refuses), yield it, stop it and remove its files."""
    bindir = _postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="mw-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "--no-sync", "-E", "UTF8"], check=True, timeout=120, capture_output=True)
    server = PrivatePostgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", data, root / "server.log", run_as,
                             bindir)
    server.ctl("start", "-w", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.ctl("stop", "-m", "immediate", "-w", timeout=60)
        shutil.rmtree(root, ignore_errors=True)
