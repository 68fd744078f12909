"""Shared benchmark plumbing: a throwaway PostgreSQL schema, Midwatch child processes, the DBOS peer, results."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PG_URL = os.environ.get("MIDWATCH_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MIDWATCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PEER_VENV = Path(os.environ.get("MIDWATCH_BENCH_DBOS_VENV", "/tmp/dbos"))
PEERS = ROOT.parent / "shared" / "peers"


def write_result(name: str, figures: dict[str, Any]) -> None:
    """Print one summary line per figure and store the JSON under benchmarks/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))


@contextmanager
def bench_environment(extra: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL schema + Redis namespace, configured as this process's Midwatch settings."""
    import psycopg

    tag = secrets.token_hex(4)
    schema = f"mwbench_{tag}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_URL else "?"
    env = {
        "MIDWATCH_DATABASE_URL": f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}",
        "MIDWATCH_BROKER_URL": REDIS_URL,
        "MIDWATCH_REDIS_NAMESPACE": f"mwbench-{tag}",
        "MIDWATCH_QUEUE_NAME": f"mwbench-{tag}",
        "MIDWATCH_OPERATOR_KEY": f"mw_op_bench_{secrets.token_urlsafe(24)}",
        "MIDWATCH_LOG_LEVEL": "warning",
        "MIDWATCH_HEALTH_PORT": "0",
        "MIDWATCH_DATA_DIR": f"/tmp/mwbench-{tag}",
        "MIDWATCH_MASTER_KEY": "",
        **(extra or {}),
    }
    if not env["MIDWATCH_MASTER_KEY"]:
        import base64

        env["MIDWATCH_MASTER_KEY"] = base64.b64encode(os.urandom(32)).decode()
    try:
        with midwatch_env(env):
            yield env
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def midwatch_env(env: dict[str, str]) -> Iterator[None]:
    """This process configured by ``env`` (MIDWATCH_* variables), migrated, then restored as it was."""
    from midwatch.services import bootstrap
    from runner.broker import reset_broker
    from tenants.kit.db import reset_engine
    from tenants.kit.settings import get_settings, reset_settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_broker()
    reset_engine()
    reset_settings()
    bootstrap(get_settings(), migrate=True)
    try:
        yield
    finally:
        reset_broker()
        reset_engine()
        reset_settings()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def spawn(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    """Start ``midwatch <args>`` with the benchmark's settings (logs to MIDWATCH_BENCH_LOG_DIR if set)."""
    log_dir = os.environ.get("MIDWATCH_BENCH_LOG_DIR")
    out: Any = subprocess.DEVNULL
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        out = open(Path(log_dir) / f"{args[0]}-{secrets.token_hex(3)}.log", "wb")  # noqa: SIM115 - child owns it
    return subprocess.Popen([sys.executable, "-m", "midwatch.cli", *args], env={**os.environ, **env}, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)


def make_agent(steps: int, *, items: bool = False, name: str = "bench") -> tuple[str, Any]:
    """A tenant with an agent of ``steps`` no-op ``sandbox.echo`` steps; returns (tenant_id, version)."""
    from runner.spec import load_spec
    from tenants.accounts.service import onboard_tenant
    from tenants.agents.service import store_version
    from tenants.kit.db import unit_of_work

    text = (f"apiVersion: midwatch/v1\nname: {name}\nscope: {{tools: [sandbox.echo]}}\n"
            f"autonomy: {{max_steps: {max(20, steps)}}}\n"
            + ("input: {items: true}\n" if items else "") + "steps:\n"
            + "".join(f"  - id: s{i}\n    tool: sandbox.echo\n    args: {{i: {i}}}\n" for i in range(steps)))
    spec = load_spec(text)
    with unit_of_work() as session:
        tenant, _ = onboard_tenant(session, f"bench-{secrets.token_hex(3)}")
        stored = store_version(session, tenant.id, name, spec.model_dump(mode="json", by_alias=True), [])
        session.expunge(stored.version)
        return tenant.id, stored.version


def ensure_dbos() -> Path | None:
    """The DBOS peer's Python (installed into its own venv on first use), or None if it cannot be had."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True, timeout=120)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "dbos"], check=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            print(f"  (DBOS peer unavailable: {exc})")
            return None
    return python


def dbos_url() -> str:
    """A fresh database for the DBOS peer on the same PostgreSQL server."""
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS dbos_peer WITH (FORCE)")
        conn.execute("CREATE DATABASE dbos_peer")
    return PG_URL.rsplit("/", 1)[0] + "/dbos_peer"


def run_peer(script: str, *args: str) -> str | None:
    """Run a peer script from shared/peers with the DBOS venv; its stdout, or None."""
    python = ensure_dbos()
    if python is None or not (PEERS / script).exists():
        return None
    out = subprocess.run([str(python), str(PEERS / script), *args, dbos_url()], capture_output=True, text=True,
                         timeout=900, check=False)
    if out.returncode != 0:
        print(f"  (peer {script} failed: {out.stderr.strip()[-300:]})")
        return None
    return out.stdout.strip()


def median(values: list[float]) -> float:
    return statistics.median(values)
