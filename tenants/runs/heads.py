"""Keeping every chain head sealed across the installation's life (tenants.audit.seals): re-sealing after a
master key rotation, and sealing, once, the heads written before seals existed. Never commits; the CLI owns
the transactions (one per batch).

Both walk every chain head (the audit chains and every run's decision log), so they run from the shell with
the workers stopped, like the master key rotation itself. Neither can turn a broken chain into a valid one:
a head is re-sealed only if its seal holds under the old key, and an unsealed head is sealed only if its
chain verifies up to it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from tenants.accounts.repository import AccountsPlatformRepository
from tenants.audit.models import PLATFORM_CHAIN
from tenants.audit.repository import GENESIS, AuditRepository, PlatformAuditRepository
from tenants.audit.seals import run_chain, seal, seal_problem
from tenants.audit.service import open_chain, verify_events
from tenants.kit.master_key import MasterKey
from tenants.runs.events import HASHED_FIELDS, verify_chain
from tenants.runs.repository import PlatformRunRepository, RunRepository

__all__ = ["HeadReport", "reseal_heads", "seal_unsealed_heads"]

_PAGE = 500


@dataclass
class HeadReport:
    """What a pass over the heads did: heads (re)sealed, heads left as they were and why (chain, reason)."""

    sealed: int = 0
    opened: int = 0  # empty chains given a sealed genesis head (tenants onboarded before seals)
    left: list[tuple[str, str]] = field(default_factory=list)


def _chain_repo(session: Session, chain_key: str) -> AuditRepository | PlatformAuditRepository:
    return PlatformAuditRepository(session) if chain_key == PLATFORM_CHAIN else AuditRepository(session, chain_key)


def _run_heads(session: Session) -> Iterator[tuple[str, str, int, str | None, str | None]]:
    repo = PlatformRunRepository(session)
    after: str | None = None
    while True:
        page = repo.heads(after=after, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1][1]


def reseal_heads(session: Session, old: MasterKey, new: MasterKey) -> HeadReport:
    """After a master key rotation: every head whose seal holds under ``old`` is sealed under ``new``."""
    report = HeadReport()
    audit = PlatformAuditRepository(session)
    for key in audit.chain_keys():
        repo = _chain_repo(session, key)
        head = repo.head()
        if head is None:
            continue
        seq, digest, stored = head
        problem = seal_problem("audit", key, seq, digest, stored, master=old)
        if problem is None and repo.reseal(seq=seq, seal=stored, new_seal=seal("audit", key, seq, digest, master=new)):
            report.sealed += 1
        elif problem is not None and seal_problem("audit", key, seq, digest, stored, master=new) is not None:
            report.left.append((f"audit chain {key}", problem))
    runs = PlatformRunRepository(session)
    for tenant_id, run_id, run_seq, run_digest, run_seal in list(_run_heads(session)):
        chain, run_head = run_chain(tenant_id, run_id), run_digest or GENESIS
        problem = seal_problem("run", chain, run_seq, run_head, run_seal, master=old)
        if problem is None and runs.reseal(run_id, seq=run_seq, seal=run_seal,
                                           new_seal=seal("run", chain, run_seq, run_head, master=new)):
            report.sealed += 1
        elif problem is not None and seal_problem("run", chain, run_seq, run_head, run_seal, master=new) is not None:
            report.left.append((f"decision log of run {run_id}", problem))
    return report


def seal_unsealed_heads(session: Session) -> HeadReport:
    """Once, after upgrading to sealed heads: seal every head that has no seal yet, if its chain verifies up to
    it (trust on first use: run it before anyone could have tampered since the upgrade), and give tenants
    onboarded before seals their sealed genesis head. Heads carrying a seal (valid or not) are left alone."""
    report = HeadReport()
    for tenant in AccountsPlatformRepository(session).list_tenants(after=None, limit=1_000_000):
        if AuditRepository(session, tenant.id).head() is None and not list(
                AuditRepository(session, tenant.id).page(after=None, limit=1)):
            report.opened += int(open_chain(session, tenant.id))
    for key in PlatformAuditRepository(session).chain_keys():
        repo = _chain_repo(session, key)
        head = repo.head()
        if head is None or head[2] is not None:
            continue
        candidate = seal("audit", key, head[0], head[1])
        verdict = verify_events(repo.all_events(), (head[0], head[1], candidate), key)
        if verdict.ok and repo.reseal(seq=head[0], seal=None, new_seal=candidate):
            report.sealed += 1
        elif not verdict.ok:
            report.left.append((f"audit chain {key}", verdict.reason))
    runs = PlatformRunRepository(session)
    for tenant_id, run_id, seq, digest, stored in list(_run_heads(session)):
        if stored is not None:
            continue
        chain, head_hash = run_chain(tenant_id, run_id), digest or GENESIS
        candidate = seal("run", chain, seq, head_hash)
        events = ({**{f: getattr(e, f) for f in HASHED_FIELDS}, "prev_hash": e.prev_hash, "hash": e.hash}
                  for e in RunRepository(session, tenant_id).events(run_id, after=None, limit=1_000_000))
        logged = verify_chain(events, (seq, head_hash, candidate), chain)
        if logged.ok and logged.events == seq and runs.reseal(run_id, seq=seq, seal=None, new_seal=candidate):
            report.sealed += 1
        elif not logged.ok or logged.events != seq:
            report.left.append((f"decision log of run {run_id}", logged.reason or f"events beyond the head ({seq})"))
    return report
