"""``midwatch rehearse``: the 3 a.m. rehearsal from the shell, and a deploy gate (``--gate``).

Exit codes: 0 the rehearsal ran (and, with ``--gate``, passed); 1 ``--gate`` and the verdict is fail;
2 the rehearsal could not be carried out (an unknown agent, an invalid file, a worker that would not
start, a timeout); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.rehearsal import Source
    from tenants.kit.settings import Settings

__all__ = ["add_parser", "rehearse_command"]

DEMO_TENANT = "demo"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``rehearse`` subcommand's arguments."""
    p: argparse.ArgumentParser = sub.add_parser(
        "rehearse", help="the 3 a.m. rehearsal: run an agent through a seeded bad night and report whether it "
                         "survives (--gate: exit 1 when it does not)")
    p.add_argument("target", metavar="FILE_OR_AGENT",
                   help="an agent's name (its stored version), or a spec file or bundle (spec + tools + models)")
    p.add_argument("--tenant", help="the agent's tenant (default on the embedded install: demo)")
    p.add_argument("--version", type=int, help="the agent's version to rehearse (default: its latest)")
    p.add_argument("--profile", default="realistic",
                   help="gentle | realistic | hostile | a PROFILE.yaml (default realistic)")
    p.add_argument("--items", type=int, default=20, help="items per repetition (default 20)")
    p.add_argument("--repeat", type=int, help="repetitions of the same items, for pass^k (default 3, or the "
                                              "spec's objective.slo.pass_k.k if larger)")
    p.add_argument("--seed", type=int, default=1, help="the fault schedule's seed (default 1): same seed, same figures")
    p.add_argument("--gate", action="store_true", help="exit 1 when the verdict is fail (a deploy gate)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format (default table)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    p.add_argument("--restart-database", metavar="COMMAND",
                   help="also restart the database mid-batch with COMMAND (PostgreSQL only; needs --disposable)")
    p.add_argument("--disposable", metavar="DATABASE",
                   help="the name of the database --restart-database may restart: it must be this installation's "
                        "(MIDWATCH_DATABASE_URL), which you declare disposable by naming it")
    return p


def _fail(message: str) -> int:
    print(f"midwatch rehearse: {message}", file=sys.stderr, flush=True)
    return 2


def _database_present(settings: Settings) -> bool:
    if not settings.is_sqlite:
        return True
    return (settings.data_dir / "midwatch.db").exists() or bool(settings.database_url)


def _restart_command(settings: Settings, args: argparse.Namespace) -> list[str] | None:
    """The database restart command, only against a PostgreSQL database the operator named as disposable."""
    from runner.errors import RehearsalError

    if not args.restart_database:
        if args.disposable:
            raise RehearsalError("--disposable only goes with --restart-database")
        return None
    if settings.is_sqlite:
        raise RehearsalError("--restart-database: the embedded SQLite database has no server to restart")
    from sqlalchemy import make_url

    name = make_url(settings.sqlalchemy_url).database
    if not args.disposable or args.disposable != name:
        raise RehearsalError(f"--restart-database restarts the installation's database server ({name!r}), which "
                             f"every tenant shares: confirm it is disposable with --disposable {name}")
    return shlex.split(args.restart_database)


def _source(settings: Settings, args: argparse.Namespace) -> Source:
    from runner.errors import RehearsalError
    from runner.rehearsal import complete_from_tenant, load_file, source_from_agent

    path = Path(args.target)
    tenant = args.tenant
    if tenant is None and settings.is_sqlite and _database_present(settings):
        tenant = DEMO_TENANT
    if path.is_file():
        source = load_file(path)
        bundle = source.sample_items is not None or bool(source.tools) or bool(source.models)
        # A bundle brings its own definitions: the tenant (its catalog and secrets) only when named explicitly.
        wanted = args.tenant if bundle else tenant
        return complete_from_tenant(source, wanted if wanted is not None and _database_present(settings) else None)
    if path.suffix in (".yaml", ".yml", ".json") or "/" in args.target:
        raise RehearsalError(f"{args.target}: no such file")
    if not _database_present(settings):
        raise RehearsalError(f"no Midwatch database in {settings.data_dir}: run `midwatch up --demo` first, or "
                             "rehearse a bundle file")
    if tenant is None:
        raise RehearsalError("--tenant is required outside the embedded install")
    return source_from_agent(tenant, args.target, args.version)


def _options(settings: Settings, args: argparse.Namespace, source: Source) -> Any:
    from runner.errors import RehearsalError
    from runner.rehearsal import RehearsalOptions, load_profile

    profile = load_profile(args.profile)
    target = source.spec.objective.slo.pass_k
    repeat = args.repeat if args.repeat is not None else max(3, target.k if target else 0)
    if not 1 <= args.items <= 10_000 or not 1 <= repeat <= 20:
        raise RehearsalError("--items must be 1..10000 and --repeat 1..20")
    return RehearsalOptions(profile=profile, items=args.items, repeat=repeat, seed=args.seed, timeout_s=args.timeout,
                            restart_database=_restart_command(settings, args))


def rehearse_command(args: argparse.Namespace, settings: Settings) -> int:
    """Rehearse, print the report, store it (when the agent belongs to a tenant), and exit by the verdict."""
    from runner.errors import RehearsalError, SpecInvalid
    from runner.rehearsal import headline, profile_label, rehearse, render_table
    from tenants.kit.db import unit_of_work
    from tenants.kit.errors import MidwatchError
    from tenants.rehearsals.service import begin_rehearsal, fail_rehearsal, finish_rehearsal, touch_rehearsal

    if settings.is_sqlite and _database_present(settings):
        from tenants.migrations import upgrade

        upgrade()  # the embedded install keeps its schema current, like `midwatch up`
    try:
        source = _source(settings, args)
        options = _options(settings, args, source)
    except SpecInvalid as exc:
        for issue in exc.issues:
            print(f"error   {issue.path or '(root)'}: {issue.message} [{issue.code}]", file=sys.stderr)
        return 2
    except (RehearsalError, MidwatchError) as exc:
        return _fail(str(exc) if isinstance(exc, RehearsalError) else exc.detail)

    tenant_id, stored = source.tenant_id, None
    label = profile_label(options.profile)
    if tenant_id is not None:
        with unit_of_work() as session:
            stored = begin_rehearsal(
                session, tenant_id, agent_name=source.agent_name, version=_version(source), source=source.origin,
                spec_hash=source.spec_hash, profile=label, seed=options.seed, items=options.items,
                options=options.profile.model_dump(mode="json") if label.startswith("custom:") else None,
                repeat=options.repeat, requested_by="cli").id

    def beat() -> None:
        if stored is not None and tenant_id is not None:
            with unit_of_work() as session:
                touch_rehearsal(session, tenant_id, stored)

    def say(message: str) -> None:
        print(f"· {message}", file=sys.stderr, flush=True)

    try:
        report = rehearse(settings, source, options, rehearsal_id=stored, progress=say, heartbeat=beat)
    except (RehearsalError, MidwatchError, KeyboardInterrupt) as exc:
        if stored is not None and tenant_id is not None:
            with unit_of_work() as session:
                fail_rehearsal(session, tenant_id, stored,
                               "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc))
        if isinstance(exc, KeyboardInterrupt):
            raise
        return _fail(str(exc) if isinstance(exc, RehearsalError) else exc.detail)
    if stored is not None and tenant_id is not None:
        with unit_of_work() as session:
            finish_rehearsal(session, tenant_id, stored, report, headline(report))
    if args.format == "json":
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(render_table(report))
        if stored is not None:
            print(f"report stored as {stored} (GET /v1/rehearsals/{stored}; dashboard: Rehearsals)")
    return 1 if args.gate and report["verdict"]["result"] != "pass" else 0


def _version(source: Source) -> Any:
    if source.version_id is None or source.tenant_id is None:
        return None
    from tenants.agents.repository import AgentRepository
    from tenants.kit.db import unit_of_work

    with unit_of_work() as session:
        found = AgentRepository(session, source.tenant_id).version_by_id(source.version_id)
        if found is not None:
            session.expunge(found)
        return found
