"""Recording and verifying the audit trail. Never commits: an audit event lands in the caller's transaction,
so an action and its record commit (or roll back) together.

Each chain (one per tenant, plus ``"platform"`` for operator actions outside any tenant) is a sequence
``seq = 1, 2, ...`` where every event's ``hash`` is SHA-256 over the previous event's hash and the
event's canonical JSON (tenant_key, seq, at, actor, actor_role, action, target, details) — the approach
of the run decision log (tenants.runs.events). The chain's head row holds the newest (seq, hash) and its
seal (tenants.audit.seals), so editing, deleting (also the newest events, or all of them), inserting or
reordering events, and moving the head back, are detected by :func:`verify`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from tenants.audit.models import PLATFORM_CHAIN, AuditEvent
from tenants.audit.repository import GENESIS, AuditRepository, PlatformAuditRepository
from tenants.audit.seals import broken_marker, seal, seal_problem
from tenants.kit.ids import canonical_json, new_id, utcnow
from tenants.kit.logging import redact
from tenants.kit.master_key import MasterKey

__all__ = [
    "GENESIS",
    "HASHED_FIELDS",
    "PLATFORM_CHAIN",
    "AuditVerdict",
    "audit_hash",
    "list_events",
    "open_chain",
    "record",
    "verify",
    "verify_events",
]

HASHED_FIELDS = ("tenant_key", "seq", "at", "actor", "actor_role", "action", "target", "details")


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    """The result of recomputing a chain: ``first_bad_seq`` names the first event that does not hold."""

    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chain(session: Session, tenant_id: str | None) -> AuditRepository | PlatformAuditRepository:
    return AuditRepository(session, tenant_id) if tenant_id else PlatformAuditRepository(session)


def _normal(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def audit_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the event's hashed fields (canonical JSON)."""
    body = {name: _normal(event.get(name)) for name in HASHED_FIELDS}
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


def record(session: Session, tenant_id: str | None, *, actor: str, role: str, action: str, target: str = "",
           details: Mapping[str, Any] | None = None) -> AuditEvent:
    """Append an event to the tenant's chain (``tenant_id=None``: the platform chain) in the caller's transaction.

    ``actor`` is the API key id (``principal.key_id``), ``"system"`` or ``"runner"``; ``details`` are
    redacted (known secret values, credential-looking keys) and normalised to plain JSON before hashing.
    Appends to one chain are serialised by a row lock on its head, held until the caller commits.
    """
    if not action or len(action) > 64:
        raise ValueError("an audit action is 1-64 characters, e.g. 'key.created'")
    clean: dict[str, Any] = json.loads(canonical_json(redact(dict(details or {}))))
    repo = _chain(session, tenant_id)
    seq, prev, prev_seal = repo.lock_head()
    event = AuditEvent(id=new_id("aud"), tenant_key=repo.chain_key, tenant_id=tenant_id, seq=seq + 1, at=utcnow(),
                       actor=actor[:64], actor_role=role[:32], action=action, target=(target or "")[:255],
                       details=clean, prev_hash=prev, hash="")
    event.hash = audit_hash(prev, {name: getattr(event, name) for name in HASHED_FIELDS})
    repo.append(event, broken_marker("audit", repo.chain_key, (seq, prev, prev_seal))
                or seal("audit", repo.chain_key, event.seq, event.hash))
    return event


def open_chain(session: Session, tenant_id: str | None, *, master: MasterKey | None = None) -> bool:
    """Start a chain with a sealed, empty head (seq 0): at onboarding for a tenant's chain, at the first start
    of a fresh installation for the platform chain. From then on a missing head, or events deleted down to
    none, fails verification. True if the head was created (False: the chain already had one). ``master``:
    seal under this key rather than the process's."""
    repo = _chain(session, tenant_id)
    return repo.open(seal("audit", repo.chain_key, 0, GENESIS, master=master))


def _walk(events: Iterable[AuditEvent | Mapping[str, Any]]) -> tuple[AuditVerdict | None, int, int, str]:
    """Recompute links and hashes; (the first break or None, events read, last seq, last hash)."""
    prev, count, expected = GENESIS, 0, 1
    for raw in events:
        ev = raw if isinstance(raw, Mapping) else {n: getattr(raw, n) for n in (*HASHED_FIELDS, "prev_hash", "hash")}
        count += 1
        seq = int(ev["seq"])
        if seq != expected:
            return AuditVerdict(False, count, min(seq, expected), f"sequence gap: expected {expected}, found {seq}"), \
                count, expected - 1, prev
        if ev["prev_hash"] != prev:
            return AuditVerdict(False, count, seq, "previous-hash link broken"), count, seq, prev
        if audit_hash(prev, ev) != ev["hash"]:
            return AuditVerdict(False, count, seq, "event content does not match its hash"), count, seq, prev
        prev = str(ev["hash"])
        expected += 1
    return None, count, expected - 1, prev


def verify_events(events: Iterable[AuditEvent | Mapping[str, Any]], head: tuple[int, str, str | None] | None,
                  chain_key: str) -> AuditVerdict:
    """Recompute a chain given in seq order, then check it ends where the head says it does and that the
    head's seal holds (so deleting the newest events, or all of them, and moving the head back are detected
    too; tenants.audit.seals)."""
    broken, count, last, prev = _walk(events)
    if broken is not None:
        return broken
    if head is None:
        return AuditVerdict(False, count, 1, "the chain has no head (it was deleted, or predates sealed heads: "
                                             "see `midwatch audit seal-heads`)")
    problem: tuple[int | None, str] | None = None
    if head[0] > last:
        problem = last + 1, f"chain truncated: the head is at seq {head[0]}, the last event is {last}"
    elif head[0] < last:
        problem = head[0] + 1, f"events beyond the head (seq {head[0]})"
    elif head[1] != prev:
        problem = last or None, "the newest event does not match the chain head"
    elif (why := seal_problem("audit", chain_key, head[0], head[1], head[2])) is not None:
        problem = head[0] + 1, why
    return AuditVerdict(True, count) if problem is None else AuditVerdict(False, count, *problem)


def verify(session: Session, tenant_id: str | None) -> AuditVerdict:
    """Recompute a tenant's chain (``None``: the platform chain) from the stored events, against its sealed
    head. The head is read before the events: an append meanwhile shows as events beyond it, so the head
    is read again and the check repeated once against the newer head."""
    repo = _chain(session, tenant_id)
    verdict = verify_events(repo.all_events(), repo.head(), repo.chain_key)
    if not verdict.ok and verdict.reason.startswith("events beyond the head"):
        verdict = verify_events(repo.all_events(), repo.head(), repo.chain_key)
    return verdict


def list_events(session: Session, tenant_id: str | None, *, after: int | None, limit: int,
                action: str | None = None) -> Sequence[AuditEvent]:
    """A page of a chain, oldest first (``after``: the last seq of the previous page)."""
    return _chain(session, tenant_id).page(after=after, limit=limit, action=action)
