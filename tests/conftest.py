"""Shared fixtures: real PostgreSQL/Redis/RabbitMQ (fail loudly under CI=true), and a harness that
configures a whole Midwatch process (settings, database, broker, worker) and drives it through the API.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("pika").setLevel(logging.WARNING)
# Many tests start `midwatch` processes. Where PYTHONDONTWRITEBYTECODE is set (as on CI machines), each of
# them would compile every module it imports again (4 s instead of 2); without it, the first one writes the
# bytecode and the others read it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

CI = os.environ.get("CI") == "true"
PG_URL = os.environ.get("MIDWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("MIDWATCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("MIDWATCH_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("succeeded", "failed", "cancelled", "escalated", "budget_exhausted")
MIDWATCH_ENV_KEYS = [k for k in os.environ if k.startswith("MIDWATCH_") and not k.startswith("MIDWATCH_TEST_")]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_missing(name: str, error: BaseException) -> None:
    """Under CI=true a missing service fails the test; locally it is reported as skipped."""
    message = f"{name} is not reachable: {type(error).__name__}: {error}"
    if CI:
        pytest.fail(f"{message} (CI=true requires it)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_schema_url() -> Iterator[str]:
    """A fresh PostgreSQL schema for this test session, installed as a first start leaves it, dropped at the
    end."""
    with fresh_pg_schema("mwt") as url:
        _first_start(url)
        yield url


def _first_start(url: str) -> None:
    """What an installation's first start does (``midwatch.services.bootstrap``): migrate, and open the platform
    audit chain with a head sealed under the installation's master key (the session's). Without it, whichever
    test touched the schema first decided: a fixture that only migrates and then onboards a tenant creates the
    platform head unsealed, and every later platform append carries the broken marker (an order-dependent
    failure of the audit tests under pytest-xdist)."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from tenants.audit.service import open_chain
    from tenants.kit.master_key import parse_master_key
    from tenants.kit.settings import Settings
    from tenants.migrations import upgrade

    # on its own engine and with the key passed in: the fixture may be first requested while a test's
    # harness is configured, and must not touch this process's settings or engine
    driver_url = Settings(database_url=url).sqlalchemy_url
    upgrade(url=driver_url)
    engine = create_engine(driver_url)
    try:
        with Session(engine) as session, session.begin():
            open_chain(session, None, master=parse_master_key(PG_MASTER_KEY, "the test session's master key"))
    finally:
        engine.dispose()


@contextmanager
def fresh_pg_schema(prefix: str) -> Iterator[str]:
    """The URL of a new PostgreSQL schema (``<prefix>_<random>``, reached through ``search_path``), dropped
    on exit; a missing server fails (CI) or skips the test."""
    import psycopg

    schema = f"{prefix}_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except Exception as exc:
        service_missing("PostgreSQL", exc)
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def own_pg_schema() -> Iterator[str]:
    """A PostgreSQL schema for this test alone: for tests of the worker loop, which claims the fairest run of ANY
    tenant (another test's queued run in the shared schema would be claimed instead), or of a fresh table."""
    with fresh_pg_schema("mwown") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:
        service_missing("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(AMQP_URL + "?connection_attempts=1&socket_timeout=3")).close()
    except Exception as exc:
        service_missing("RabbitMQ", exc)
    return AMQP_URL


@dataclass
class Tenant:
    name: str
    id: str
    admin_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


@dataclass
class Harness:
    """One configured Midwatch (settings + database + broker) driven through its real API."""

    env: dict[str, str]
    client: Any
    operator_key: str
    services: Any = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def op_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.operator_key}"}

    def onboard(self, name: str | None = None) -> Tenant:
        name = name or f"t-{secrets.token_hex(4)}"
        r = self.client.post("/v1/admin/tenants", json={"name": name}, headers=self.op_headers)
        assert r.status_code == 201, r.text
        body = r.json()
        return Tenant(name=name, id=body["tenant"]["id"], admin_key=body["admin_key"]["key"])

    def put_agent(self, tenant: Tenant, spec: str, name: str | None = None) -> dict[str, Any]:
        import yaml

        name = name or yaml.safe_load(spec)["name"]
        r = self.client.put(f"/v1/agents/{name}", content=spec.encode(),
                            headers={**tenant.headers, "Content-Type": "application/yaml"})
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def submit(self, tenant: Tenant, agent: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        headers = dict(tenant.headers)
        if key:
            headers["Idempotency-Key"] = key
        r = self.client.post(f"/v1/agents/{agent}/runs", json=body, headers=headers)
        assert r.status_code in (200, 201), r.text
        return dict(r.json())

    def run(self, tenant: Tenant, run_id: str) -> dict[str, Any]:
        r = self.client.get(f"/v1/runs/{run_id}", headers=tenant.headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait_run(self, tenant: Tenant, run_id: str, states: tuple[str, ...] = TERMINAL,
                 timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(tenant, run_id)
            if run["state"] in states:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['state']} after {timeout}s: {run}")
            time.sleep(0.05)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    def events(self, tenant: Tenant, run_id: str) -> list[dict[str, Any]]:
        """Every decision event of the run (all pages)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            url = f"/v1/runs/{run_id}/events?limit=500" + (f"&cursor={cursor}" if cursor else "")
            r = self.client.get(url, headers=tenant.headers)
            assert r.status_code == 200, r.text
            out.extend(r.json()["data"])
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return out

    def spawn(self, *args: str, extra_env: dict[str, str] | None = None, log: Path | None = None
              ) -> subprocess.Popen[bytes]:
        """Start ``midwatch <args>`` as a real child process with this harness's settings."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the OS at exit
        proc = subprocess.Popen([sys.executable, "-m", "midwatch.cli", *args], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc


# The PostgreSQL schema is one installation shared by the whole session, so it has one master key (as in
# production): chain heads sealed by one test (the platform audit chain) verify in the next.
PG_MASTER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()


def _apply_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Configure this process from ``env`` only (every other MIDWATCH_ variable removed); a PostgreSQL
    configuration without its own master key gets the session's (added to ``env`` too, for child processes)."""
    if env.get("MIDWATCH_DATABASE_URL", "").startswith("postgres") and not {
            "MIDWATCH_MASTER_KEY", "MIDWATCH_MASTER_KEY_FILE"} & set(env):
        env["MIDWATCH_MASTER_KEY"] = PG_MASTER_KEY
    for key in {*MIDWATCH_ENV_KEYS, *(k for k in os.environ if k.startswith("MIDWATCH_")
                                      and not k.startswith("MIDWATCH_TEST_"))}:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def _reset_process() -> None:
    from platform_api.auth import reset_limiter
    from runner.broker import reset_broker
    from runner.engine._run import stopping
    from tenants.kit.db import reset_engine
    from tenants.kit.settings import reset_settings
    from tenants.observability.exposition import reset_collector

    reset_limiter()
    reset_broker()
    reset_engine()
    reset_settings()
    reset_collector()
    stopping.clear()  # a previous test's Services.stop() asked this process's executions to hand back


@pytest.fixture
def make_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
                 ) -> Iterator[Callable[..., Harness]]:
    """Build a harness: ``make_harness(db="sqlite"|"postgres", broker="stub"|"redis"|"amqp", worker=...)``.

    ``worker="threads"`` runs worker threads in this process, ``"process"`` starts a real
    ``midwatch worker`` child, ``None`` starts none (the test drives workers itself).
    """
    with harness_builder(tmp_path, monkeypatch, request) as build:
        yield build


@pytest.fixture(scope="module")
def module_harness(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """The embedded default (SQLite + StubBroker + worker threads), built once for a whole module: for
    modules that build one world and probe it many times (the route matrix, the fuzzer). Such a module
    must not use the function-scoped harnesses too (they reconfigure the process)."""
    with pytest.MonkeyPatch.context() as monkeypatch, \
            harness_builder(tmp_path_factory.mktemp("module"), monkeypatch, request) as build:
        yield build()


@contextmanager
def api_harness(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Iterator[Harness]:
    """A migrated installation configured from ``env`` only, with its API in this process and no worker."""
    from litestar.testing import TestClient

    from midwatch.services import bootstrap
    from platform_api.app import create_app
    from tenants.kit.settings import get_settings

    _apply_env(monkeypatch, env)
    _reset_process()
    settings = get_settings()
    bootstrap(settings, migrate=True)
    try:
        with TestClient(create_app(settings)) as client:
            yield Harness(env=env, client=client, operator_key=env["MIDWATCH_OPERATOR_KEY"])
    finally:
        _reset_process()


@contextmanager
def harness_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
                    ) -> Iterator[Callable[..., Harness]]:
    """What :func:`make_harness` yields, for any fixture scope; every harness built is stopped on exit."""
    built: list[Harness] = []

    def build(db: str = "sqlite", broker: str = "stub", worker: str | None = "threads",
              extra: dict[str, str] | None = None) -> Harness:
        from litestar.testing import TestClient

        from midwatch.services import Services, bootstrap
        from platform_api.app import create_app
        from tenants.kit.settings import get_settings

        tag = secrets.token_hex(4)
        env = {
            "MIDWATCH_DATA_DIR": str(tmp_path / "data"),
            "MIDWATCH_OPERATOR_KEY": f"mw_op_test_{secrets.token_urlsafe(24)}",
            "MIDWATCH_QUEUE_NAME": f"mwtest-{tag}",
            "MIDWATCH_REDIS_NAMESPACE": f"mwtest-{tag}",
            "MIDWATCH_LOG_LEVEL": "warning",
            "MIDWATCH_HEALTH_PORT": "0",
            "MIDWATCH_SWEEP_INTERVAL_SECONDS": "0.5",
            "MIDWATCH_ALLOW_LOOPBACK_EGRESS": "true",
            # Tests poll the API at 20 Hz and more with one key; the per-key limit is tested on its own.
            "MIDWATCH_RATE_LIMIT_PER_MINUTE": "1000000",
            "MIDWATCH_AUTH_FAILURES_PER_MINUTE": "1000000",  # probes send many bad keys; the throttle has its own test
        }
        if db == "postgres":
            env["MIDWATCH_DATABASE_URL"] = request.getfixturevalue("pg_schema_url")
        if broker == "redis":
            env["MIDWATCH_BROKER_URL"] = request.getfixturevalue("redis_url")
        elif broker == "amqp":
            env["MIDWATCH_BROKER_URL"] = request.getfixturevalue("amqp_url")
        env.update(extra or {})
        _apply_env(monkeypatch, env)
        _reset_process()
        settings = get_settings()
        bootstrap(settings, migrate=True)
        harness = Harness(env=env, client=None, operator_key=env["MIDWATCH_OPERATOR_KEY"])
        if worker == "threads":
            harness.services = Services(settings)
            harness.services.start_worker()
        elif worker == "process":
            harness.spawn("worker", log=tmp_path / "worker.log")
        client = TestClient(create_app(settings))
        client.__enter__()
        harness.client = client
        built.append(harness)
        return harness

    try:
        yield build
    finally:
        for harness in built:
            for proc in harness.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            if harness.services is not None:
                harness.services.stop()
            harness.client.__exit__(None, None, None)
            if harness.env.get("MIDWATCH_BROKER_URL", "").startswith("amqp"):
                _delete_rabbit_queues(harness.env["MIDWATCH_QUEUE_NAME"])
        _reset_process()


def _delete_rabbit_queues(queue: str) -> None:
    import pika

    try:
        conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        channel = conn.channel()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            channel.queue_delete(queue=name)
        conn.close()
    except Exception:
        pass


@pytest.fixture
def upstream() -> Iterator[Any]:
    """A fault-injecting upstream (runner.sandbox_upstream.FaultyUpstream) on 127.0.0.1, random port."""
    from runner.sandbox_upstream import FaultyUpstream

    with FaultyUpstream() as up:
        yield up


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    """The embedded default: SQLite + StubBroker + in-process worker threads."""
    return make_harness()


SIMPLE_SPEC = """\
apiVersion: midwatch/v1
name: {name}
scope:
  tools: [sandbox.echo, sandbox.record]
steps:
  - id: fetch
    tool: sandbox.echo
    args: {{customer: "{{{{ input.customer }}}}", amount: "{{{{ input.amount }}}}"}}
  - id: draft
    llm: {{model: sandbox, prompt: "Thank {{{{ steps.fetch.output.customer }}}}"}}
  - id: send
    tool: sandbox.record
    args: {{to: "{{{{ steps.fetch.output.customer }}}}", text: "{{{{ steps.draft.output.text }}}}"}}
"""


def simple_spec(name: str = "greeter") -> str:
    """A three-step spec (echo → sandbox model → record side effect) taking ``{customer, amount}``."""
    return SIMPLE_SPEC.format(name=name)


def batch_spec(name: str = "batcher") -> str:
    """A two-step batch spec: echo each item ``{n}``, then record it (side effect)."""
    return spec(name, {"id": "read", "tool": "sandbox.echo", "args": {"n": "{{ item.n }}"}},
                {"id": "send", "tool": "sandbox.record", "args": {"n": "{{ steps.read.output.n }}"}},
                input={"items": True, "schema": {"type": "object", "required": ["n"],
                                                 "properties": {"n": {"type": "integer"}}}})


def spec(name: str, *steps: dict[str, Any], **top: Any) -> str:
    """An agent spec (JSON, which is YAML) whose ``scope.tools`` lists the steps' tools unless ``scope`` says."""
    tools = sorted({str(step["tool"]) for step in steps if "tool" in step})
    return json.dumps({"apiVersion": "midwatch/v1", "name": name, "scope": {"tools": tools}, "steps": list(steps),
                       **top})
