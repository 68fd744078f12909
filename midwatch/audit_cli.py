"""``midwatch audit verify [--tenant NAME] [--run RUN_ID]`` (wired by midwatch.cli): recompute every hash chain.

Two kinds of chain are checked: the audit trail (one chain per tenant, plus the platform chain of operator
actions) and the decision log of each run. A break is reported with the chain, the first bad seq and why.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from tenants.accounts.models import Tenant
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.audit import service as audit
from tenants.kit.db import Session, unit_of_work
from tenants.kit.repository import keyset_pages
from tenants.runs.events import HASHED_FIELDS, ChainVerdict, verify_chain
from tenants.runs.repository import RunRepository

__all__ = ["audit_verify_command"]

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
    repo = RunRepository(session, tenant_id)

    def events() -> Iterator[dict[str, object]]:
        after: int | None = None
        while True:
            page = repo.events(run_id, after=after, limit=_PAGE)
            for e in page:
                yield {**{f: getattr(e, f) for f in HASHED_FIELDS}, "prev_hash": e.prev_hash, "hash": e.hash}
            if len(page) < _PAGE:
                return
            after = page[-1].seq

    return verify_chain(events())


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
