"""``midwatch audit verify [--tenant NAME] [--run RUN_ID]`` (wired by midwatch.cli): recompute every hash chain.

Two kinds of chain are checked: the audit trail (one chain per tenant, plus the platform chain of operator
actions) and the decision log of each run, each against its sealed head (tenants.audit.seals), so deleted
newest events and a rolled-back head are breaks too. A break is reported with the chain, the first bad seq
and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tenants.accounts.models import Tenant
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.audit import service as audit
from tenants.kit.db import Session, unit_of_work
from tenants.kit.repository import keyset_pages
from tenants.runs.events import ChainVerdict
from tenants.runs.heads import HeadReport, seal_unsealed_heads
from tenants.runs.repository import RunRepository
from tenants.runs.service import verify_run_log

__all__ = ["audit_verify_command", "print_head_report", "seal_heads_command"]

_PAGE = 1000


@dataclass
class _Report:
    chains: int = 0
    events: int = 0
    breaks: int = 0

    def add(self, label: str, ok: bool, events: int, first_bad_seq: int | None, reason: str) -> None:
        self.chains += 1
        self.events += events
        if not ok:
            self.breaks += 1
            print(f"BROKEN {label}: first bad seq {first_bad_seq}: {reason}")


def _tenants(session: Session) -> Iterator[Tenant]:
    repo = AccountsPlatformRepository(session)
    return keyset_pages(lambda after, limit: repo.list_tenants(after=after, limit=limit), lambda t: t.id, _PAGE)


def _run_ids(session: Session, tenant_id: str) -> Iterator[str]:
    repo = RunRepository(session, tenant_id)
    runs = keyset_pages(lambda before, limit: repo.list(before=before, limit=limit), lambda r: r.id, _PAGE)
    return (r.id for r in runs)


def _verify_run(session: Session, tenant_id: str, run_id: str) -> ChainVerdict:
    return verify_run_log(session, tenant_id, run_id, page=_PAGE)


def _check_tenant(session: Session, tenant: Tenant, report: _Report, run_id: str | None) -> None:
    v = audit.verify(session, tenant.id)
    report.add(f"audit chain of tenant {tenant.name}", v.ok, v.events, v.first_bad_seq, v.reason)
    if run_id is not None and RunRepository(session, tenant.id).get(run_id) is None:
        return
    for rid in [run_id] if run_id else _run_ids(session, tenant.id):
        d = _verify_run(session, tenant.id, rid)
        report.add(f"decision log of run {rid} (tenant {tenant.name})", d.ok, d.events, d.first_bad_seq, d.reason)


def audit_verify_command(tenant: str | None, run_id: str | None) -> int:
    """Verify the audit chain(s) and run decision chains. Exit codes: 0 all intact, 1 a break, 2 unknown tenant/run.

    Audit chains: ``tenant``'s, or (without it) every tenant's and the platform chain. Decision logs: of
    ``run_id`` only (found in any tenant checked), or of every run of the tenants checked.
    """
    report = _Report()
    with unit_of_work() as session:
        if tenant is not None:
            found = AccountsPlatformRepository(session).tenant_by_name(tenant)
            if found is None:
                print(f"error: tenant {tenant!r} not found")
                return 2
            targets = [found]
        else:
            targets = list(_tenants(session))
            v = audit.verify(session, None)
            report.add("platform audit chain", v.ok, v.events, v.first_bad_seq, v.reason)
        if run_id is not None and not any(RunRepository(session, t.id).get(run_id) is not None for t in targets):
            print(f"error: run {run_id!r} not found" + (f" in tenant {tenant!r}" if tenant else ""))
            return 2
        for t in targets:
            _check_tenant(session, t, report, run_id)
    status = "FAILED" if report.breaks else "ok"
    print(f"audit verify {status}: {report.chains} chain(s), {report.events} event(s), {report.breaks} broken")
    return 1 if report.breaks else 0


def print_head_report(report: HeadReport, what: str) -> None:
    """Print what a pass over the chain heads did, and each head it left alone with why."""
    print(f"{what}: {report.sealed} head(s) sealed" + (f", {report.opened} empty chain(s) opened"
                                                        if report.opened else ""))
    for chain, why in report.left[:50]:
        print(f"  left unsealed: {chain}: {why}")
    if len(report.left) > 50:
        print(f"  ... and {len(report.left) - 50} more")


def seal_heads_command() -> int:
    """``midwatch audit seal-heads``: seal, once, the heads written before chain heads were sealed (trust on first
    use: only heads whose chain verifies up to them). Exit codes: 0 every head sealed, 1 some left (broken)."""
    with unit_of_work() as session:
        report = seal_unsealed_heads(session)
    print_head_report(report, "seal-heads")
    return 1 if report.left else 0
