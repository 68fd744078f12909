"""The ``midwatch`` command. ``midwatch --help`` lists every subcommand; each has its own ``--help``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _settings(**overrides: Any) -> Any:
    """Apply CLI flags as MIDWATCH_ env overrides, then read the one settings object."""
    from pydantic import ValidationError

    from tenants.kit.settings import get_settings, reset_settings

    for key, value in overrides.items():
        if value is not None:
            os.environ[f"MIDWATCH_{key.upper()}"] = str(value)
    reset_settings()
    try:
        return get_settings()
    except ValidationError as exc:
        lines = [f"  MIDWATCH_{'_'.join(str(p) for p in e['loc']).upper() or '?'}: {e['msg']}" for e in exc.errors()]
        sys.exit("invalid settings:\n" + "\n".join(lines))


def api_workers(settings: Any) -> int:
    """How many API processes: ``MIDWATCH_API_WORKERS``, or one per CPU this process may use."""
    return int(settings.api_workers) or len(os.sched_getaffinity(0))


def _check_api_port(settings: Any, process: str) -> None:
    """Fail with one line naming MIDWATCH_PORT if the API port is taken (before anything else starts)."""
    from midwatch.health import check_port_free

    check_port_free(settings.host, settings.port, "MIDWATCH_PORT (--port)", process)


def _serve_api(settings: Any, workers: int = 1) -> None:
    import uvicorn

    if workers > 1:  # each worker process imports the factory and sets itself up
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # metrics summed across the processes
            from tenants.observability.exposition import prepare_multiprocess_dir

            prepare_multiprocess_dir(settings.data_dir / "prometheus")
        from midwatch.api_processes import serve_processes

        if serve_processes(settings.host, settings.port, workers):
            sys.exit("midwatch api: an API process stopped on its own; stopped the others")
        return
    from platform_api.app import create_app
    from runner.broker import broker_ready

    app = create_app(settings, readiness={"broker": broker_ready})
    # log_config=None: uvicorn's own lines go through Midwatch's logging (JSON in production) too.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False, log_config=None)


def _serve_health(settings: Any, process: str) -> Any:
    """Bind this process's health/metrics port (before start-up work, so a taken port fails fast)."""
    from midwatch.health import bind_health

    return bind_health(settings.host, settings.health_port, process)


def _start_health(server: Any, settings: Any, process: str) -> None:
    from midwatch.services import process_ready
    from tenants.kit.logging import get_logger
    from tenants.observability.exposition import db_gauges_enabled, render_metrics

    database = db_gauges_enabled(settings, process)
    server.start(process_ready, lambda: render_metrics(settings, database=database))
    get_logger("midwatch").info("health_server_started", process=process, host=settings.host, port=server.port)
    if settings.effective_log_format == "console":  # for a person at a terminal; JSON logs carry the line above
        print(f"midwatch {process}: health and metrics on http://{settings.host}:{server.port} "
              "(/healthz, /readyz, /metrics)", flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    """Embedded default: API + worker threads + sweeper (+ dashboard) in one process on SQLite."""
    settings = _settings(env="embedded", data_dir=args.data_dir, port=args.port, host=args.host,
                         dashboard_port=args.dashboard_port, allow_loopback_egress=True if args.demo else None)
    _check_api_port(settings, "up")
    from midwatch.services import Services, bootstrap

    generated = bootstrap(settings, migrate=True)
    creds: dict[str, Any] = {}
    if args.demo:
        from midwatch.demo import ensure_demo

        creds = ensure_demo(settings.data_dir, generated)
    services = Services(settings)
    services.start_worker()
    services.start_sweeper()
    dashboard = None if args.no_dashboard else _start_dashboard(settings, creds.get("operator_key"))
    _print_banner(settings, generated, creds, dashboard is not None)
    try:
        _serve_api(settings)
    finally:
        services.stop()
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(timeout=10)
    return 0


def _start_dashboard(settings: Any, operator_key: str | None) -> subprocess.Popen[bytes] | None:
    app = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    if not app.exists():
        return None
    env = {**os.environ, "MIDWATCH_DATA_DIR": str(settings.data_dir)}
    if operator_key:
        env["MIDWATCH_DASHBOARD_DEMO_KEY"] = operator_key
    return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", settings.host,
         "--server.port", str(settings.dashboard_port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _print_banner(settings: Any, generated: str | None, creds: dict[str, Any], dashboard: bool) -> None:
    base = f"http://{settings.host}:{settings.port}"
    out = [f"Midwatch (embedded) — API {base}  (OpenAPI: {base}/schema)",
           f"  data dir: {settings.data_dir.resolve()}"]
    if dashboard:
        dash_url = f"http://{settings.host}:{settings.dashboard_port}"
        if creds.get("operator_key"):
            from dashboard.login import demo_login_url

            dash_url = demo_login_url(dash_url, creds["operator_key"])
        out.append(f"  dashboard: {dash_url}")
    if generated and not creds:
        out.append(f"  operator key (shown once, store it now): {generated}")
    if creds:
        out.append(f"  operator key:   {creds.get('operator_key', '(set earlier; see MIDWATCH_OPERATOR_KEY)')}")
        out.append(f"  demo admin key: {creds['admin_key']}")
        out.append("  submit a demo run:")
        body = json.dumps({"items": [{"invoice_id": "INV-1", "email": "ann@example.com", "amount": 120},
                                     {"invoice_id": "INV-2", "email": "bob@example.com", "amount": 80}]})
        out.append(f"    curl -s -X POST {base}/v1/agents/invoice-followup/runs -H 'Authorization: Bearer "
                   f"{creds['admin_key']}' -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' "
                   f"-d '{body}'")
    out.append("  Ctrl-C stops it; restarting on the same data dir keeps everything.")
    print("\n".join(out), flush=True)


def cmd_api(args: argparse.Namespace) -> int:
    """Production API: ``--workers`` processes (default: one per CPU) serving one port."""
    settings = _settings(port=args.port, host=args.host, api_workers=args.workers)
    _check_api_port(settings, "api")
    from midwatch.services import bootstrap

    generated = bootstrap(settings, migrate=False, process="api")
    if generated:
        print(f"operator key (shown once, store it now): {generated}", flush=True)
    _serve_api(settings, api_workers(settings))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Production worker process: consumes run wake-ups; SIGTERM hands runs back after the current step."""
    return _serve_process(_settings(worker_threads=args.threads), "worker")


def cmd_scheduler(_args: argparse.Namespace) -> int:
    """Production scheduler process: the sweeper (exactly one replica)."""
    return _serve_process(_settings(), "scheduler")


def _serve_process(settings: Any, role: str) -> int:
    """Start the worker or the scheduler (and its health port), then run until SIGTERM / SIGINT."""
    health = _serve_health(settings, role)  # bound first, so a taken port fails before start-up work
    from midwatch.services import Services, bootstrap

    bootstrap(settings, migrate=False, process=role)
    services = Services(settings)
    port = health.port if health else None
    if role == "worker":
        services.start_worker(health_port=port)
    else:
        services.start_sweeper(health_port=port)
    if health is not None:
        _start_health(health, settings, role)
    _wait_for_signal()
    services.stop()
    return 0


def cmd_dashboard(_args: argparse.Namespace) -> int:
    """Production dashboard process (Streamlit)."""
    settings = _settings()
    proc = _start_dashboard(settings, None)
    if proc is None:
        sys.exit("the dashboard is not installed in this build")
    return proc.wait()


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Apply database migrations (safe to re-run)."""
    settings = _settings()
    from tenants.kit.logging import configure_logging
    from tenants.migrations import upgrade

    configure_logging(settings.log_level, settings.effective_log_format)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(args.revision)
    print(f"database at {args.revision}", flush=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Summarise the platform's health from the database; exit 0 healthy, 1 degraded, 2 failing, 3 unknown."""
    settings = _settings()
    from midwatch.status_cli import status_command
    from tenants.kit.logging import configure_logging

    configure_logging("error", settings.effective_log_format)  # the report is the output; logs only for errors
    return status_command(args.format)


def cmd_config(_args: argparse.Namespace) -> int:
    """Print the effective settings, secrets masked."""
    print(json.dumps(_settings().masked(), indent=2, default=str))
    return 0


def cmd_routes(_args: argparse.Namespace) -> int:
    """Print every route with the roles it admits: the README's "Routes and roles" table (markdown)."""
    from platform_api.app import create_app
    from platform_api.routes import route_table_markdown

    print(route_table_markdown(create_app(_settings())), end="")
    return 0


def cmd_agent_lint(args: argparse.Namespace) -> int:
    """Validate and lint an agent spec file; exit 1 if it has errors."""
    from runner.spec import parse_spec

    result = parse_spec(Path(args.file).read_bytes())
    for err in result.errors:
        print(f"error   {err.path or '(root)'}: {err.message} [{err.code}]")
    for warn in result.warnings:
        print(f"warning {warn.path or '(spec)'}: {warn.message} [{warn.code}]")
    if not result.errors:
        print("ok")
    return 1 if result.errors else 0


def cmd_tenant_create(args: argparse.Namespace) -> int:
    """Onboard a tenant from the command line; prints its first admin key once."""
    settings = _settings()
    from tenants.accounts.service import onboard_tenant
    from tenants.audit.service import record
    from tenants.kit.db import unit_of_work
    from tenants.kit.logging import configure_logging

    configure_logging(settings.log_level, settings.effective_log_format)
    with unit_of_work() as session:
        tenant, issued = onboard_tenant(session, args.name, args.display_name or "")
        record(session, None, actor="cli", role="operator", action="tenant.onboarded", target=tenant.id,
               details={"name": tenant.name, "admin_key_id": issued.key.id, "via": "midwatch tenant create",
                        "before": None, "after": {"status": tenant.status, "display_name": tenant.display_name}})
    print(json.dumps({"tenant_id": tenant.id, "name": tenant.name, "admin_key": issued.plaintext}))
    return 0


def cmd_sandbox_upstream(args: argparse.Namespace) -> int:
    """A fault-injecting upstream (429, 503, HTML-with-200, slow, resets, truncated JSON, 401-until-refresh)."""
    from runner.sandbox_upstream import main as upstream_main

    return upstream_main(["--host", args.host, "--port", str(args.port)])


def cmd_rehearse(args: argparse.Namespace) -> int:
    """The 3 a.m. rehearsal of an agent (see ``midwatch.rehearse_cli``)."""
    settings = _settings()
    from midwatch.rehearse_cli import rehearse_command
    from tenants.kit.logging import configure_logging

    configure_logging("warning", settings.effective_log_format)  # the report is the output
    return rehearse_command(args, settings)


def cmd_rotate_master_key(args: argparse.Namespace) -> int:
    """Re-encrypt every secret's data key under a new master key (stop workers first)."""
    settings = _settings()
    from midwatch.secrets_cli import rotate_master_key_command
    from tenants.kit.logging import configure_logging

    configure_logging(settings.log_level, settings.effective_log_format)
    return rotate_master_key_command(args.new_key)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run benchmarks (from a source checkout): figures beside their peers, JSON in benchmarks/results/."""
    checkout = Path(__file__).resolve().parent.parent  # the repository, when running from a source checkout
    if not (checkout / "benchmarks" / "__main__.py").is_file():
        sys.exit("midwatch bench runs the benchmarks of a source checkout; this installation (from the wheel) has "
                 "none. Clone the repository, then run `uv run midwatch bench [NAME ...]` inside it "
                 "(docs/BENCHMARKS.md).")
    return subprocess.call([sys.executable, "-m", "benchmarks", *args.names], cwd=checkout)  # noqa: S603 - our own module


def cmd_demo_seed(args: argparse.Namespace) -> int:
    """Fill the database with realistic history (tenants, agents, runs, rollups) for demos and benchmarks."""
    _settings()
    from dashboard.seed import seed_command

    return seed_command(args.runs, args.tenants)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify the audit trail's hash chains and every run's decision-log chain; exit 1 on any break."""
    settings = _settings()
    from midwatch.audit_cli import audit_verify_command
    from tenants.kit.logging import configure_logging

    configure_logging(settings.log_level, settings.effective_log_format)
    return audit_verify_command(args.tenant, args.run)


def cmd_audit_seal_heads(args: argparse.Namespace) -> int:
    """Once after upgrading to sealed chain heads: seal every unsealed head whose chain verifies."""
    settings = _settings()
    from midwatch.audit_cli import seal_heads_command
    from tenants.kit.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return seal_heads_command()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midwatch", description="Run AI agents unattended: durable, bounded, loud.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start everything in one process on SQLite (embedded default)")
    up.add_argument("--demo", action="store_true", help="create a demo tenant and agent and print their keys")
    up.add_argument("--data-dir", help="where the SQLite database lives (MIDWATCH_DATA_DIR, default .midwatch)")
    up.add_argument("--port", type=int, help="API port (MIDWATCH_PORT, default 8080)")
    up.add_argument("--host", help="bind address (MIDWATCH_HOST, default 127.0.0.1)")
    up.add_argument("--dashboard-port", type=int, help="dashboard port (MIDWATCH_DASHBOARD_PORT, default 8501)")
    up.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    up.set_defaults(func=cmd_up)

    api = sub.add_parser("api", help="run the API (production)")
    api.add_argument("--port", type=int)
    api.add_argument("--host")
    api.add_argument("--workers", type=int, help="API processes (MIDWATCH_API_WORKERS; default: one per CPU)")
    api.set_defaults(func=cmd_api)

    worker = sub.add_parser("worker", help="run a worker (production; Redis or RabbitMQ broker)")
    worker.add_argument("--threads", type=int, help="worker threads (MIDWATCH_WORKER_THREADS)")
    worker.set_defaults(func=cmd_worker)

    sub.add_parser("scheduler", help="run the sweeper (production; exactly one)").set_defaults(func=cmd_scheduler)
    sub.add_parser("dashboard", help="run the operator dashboard (production)").set_defaults(func=cmd_dashboard)
    sub.add_parser("config", help="print the effective settings (secrets masked)").set_defaults(func=cmd_config)
    sub.add_parser("routes", help="print every API route and the roles it admits (markdown: the README's table)"
                   ).set_defaults(func=cmd_routes)
    status = sub.add_parser("status", help="platform health from the database: healthy / degraded / failing "
                                           "(exit 0 / 1 / 2; 3 if the database cannot be read)")
    status.add_argument("--format", choices=["text", "json"], default="text", help="output format (default text)")
    status.set_defaults(func=cmd_status)

    _add_admin_commands(sub)
    return parser


def _add_admin_commands(sub: Any) -> None:
    """Operator and developer commands: database, specs, tenants, secrets, audit, demo data, benchmarks."""
    db = sub.add_parser("db", help="database commands").add_subparsers(dest="db_command", required=True)
    upg = db.add_parser("upgrade", help="apply migrations")
    upg.add_argument("revision", nargs="?", default="head")
    upg.set_defaults(func=cmd_db_upgrade)

    agent = sub.add_parser("agent", help="agent spec commands").add_subparsers(dest="agent_command", required=True)
    lint = agent.add_parser("lint", help="validate and lint a spec file (YAML or JSON)")
    lint.add_argument("file")
    lint.set_defaults(func=cmd_agent_lint)

    tenant = sub.add_parser("tenant", help="tenant commands").add_subparsers(dest="tenant_command", required=True)
    create = tenant.add_parser("create", help="onboard a tenant; prints its first admin key once")
    create.add_argument("name")
    create.add_argument("--display-name")
    create.set_defaults(func=cmd_tenant_create)
    secrets_cmd = sub.add_parser("secrets", help="secret store commands").add_subparsers(dest="secrets_command",
                                                                                        required=True)
    rotate = secrets_cmd.add_parser("rotate-master-key",
                                    help="re-encrypt all secrets under a new master key (MIDWATCH_NEW_MASTER_KEY)")
    rotate.add_argument("new_key", nargs="?", help="base64 32-byte key; prefer MIDWATCH_NEW_MASTER_KEY (not in ps)")
    rotate.set_defaults(func=cmd_rotate_master_key)

    audit = sub.add_parser("audit", help="audit commands").add_subparsers(dest="audit_command", required=True)
    verify = audit.add_parser("verify", help="verify audit and decision-log hash chains (exit 1 on tampering)")
    verify.add_argument("--tenant", help="one tenant by name (default: every tenant and the platform chain)")
    verify.add_argument("--run", help="one run's decision log (default: every run)")
    verify.set_defaults(func=cmd_audit_verify)
    audit.add_parser("seal-heads", help="once after upgrading: seal the chain heads written before seals existed "
                                        "(only intact chains; stop workers first)").set_defaults(
        func=cmd_audit_seal_heads)

    demo = sub.add_parser("demo", help="demo data commands").add_subparsers(dest="demo_command", required=True)
    seed = demo.add_parser("seed", help="fill the database with realistic history")
    seed.add_argument("--runs", type=int, default=10_000)
    seed.add_argument("--tenants", type=int, default=10)
    seed.set_defaults(func=cmd_demo_seed)

    bench = sub.add_parser("bench", help="run benchmarks (step_latency, throughput, overhead, recovery, ...)")
    bench.add_argument("names", nargs="*", help="benchmark names (default: the engine set)")
    bench.set_defaults(func=cmd_bench)

    from midwatch.rehearse_cli import add_parser as add_rehearse

    add_rehearse(sub).set_defaults(func=cmd_rehearse)

    upstream = sub.add_parser("sandbox-upstream", help="serve a fault-injecting upstream for demos and tests")
    upstream.add_argument("--host", default="127.0.0.1")
    upstream.add_argument("--port", type=int, default=8900)
    upstream.set_defaults(func=cmd_sandbox_upstream)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``midwatch`` console script."""
    os.environ.setdefault("LITESTAR_WARN_IMPLICIT_SYNC_TO_THREAD", "0")
    args = build_parser().parse_args(argv)
    from midwatch.health import PortUnavailable

    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except PortUnavailable as exc:  # one line naming the setting, never a traceback
        print(exc.message, file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
