"""Recording and verifying the audit trail. Never commits: an audit event lands in the caller's transaction,
so an action and its record commit (or roll back) together.

Each chain (one per tenant, plus ``"platform"`` for operator actions outside any tenant) is a sequence
``seq = 1, 2, ...`` where every event's ``hash`` is SHA-256 over the previous event's hash and the
event's canonical JSON (tenant_key, seq, at, actor, actor_role, action, target, details) — the approach
of the run decision log (tenants.runs.events). The chain's head row holds the newest (seq, hash), so
editing, deleting (also the newest events), inserting or reordering events is detected by :func:`verify`.
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
from tenants.kit.ids import canonical_json, new_id, utcnow
from tenants.kit.logging import redact

__all__ = [
    "GENESIS",
    "HASHED_FIELDS",
    "PLATFORM_CHAIN",
    "AuditVerdict",
    "audit_hash",
    "list_events",
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
    seq, prev = repo.lock_head()
    event = AuditEvent(id=new_id("aud"), tenant_key=repo.chain_key, tenant_id=tenant_id, seq=seq + 1, at=utcnow(),
                       actor=actor[:64], actor_role=role[:32], action=action, target=(target or "")[:255],
                       details=clean, prev_hash=prev, hash="")
    event.hash = audit_hash(prev, {name: getattr(event, name) for name in HASHED_FIELDS})
    repo.append(event)
    return event


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


def verify_events(events: Iterable[AuditEvent | Mapping[str, Any]], head: tuple[int, str] | None) -> AuditVerdict:
    """Recompute a chain given in seq order, then check it ends where the head says it does (so deleting
    the newest events is detected too)."""
    broken, count, last, prev = _walk(events)
    if broken is not None:
        return broken
    if head is None:
        return AuditVerdict(True, count) if count == 0 else AuditVerdict(False, count, 1, "the chain has no head")
    if head[0] > last:
        return AuditVerdict(False, count, last + 1,
                            f"chain truncated: the head is at seq {head[0]}, the last event is {last}")
    if head[0] < last:
        return AuditVerdict(False, count, head[0] + 1, f"events beyond the head (seq {head[0]})")
    if head[1] != prev:
        return AuditVerdict(False, count, last or None, "the newest event does not match the chain head")
    return AuditVerdict(True, count)


def verify(session: Session, tenant_id: str | None) -> AuditVerdict:
    """Recompute a tenant's chain (``None``: the platform chain) from the stored events."""
    repo = _chain(session, tenant_id)
    return verify_events(repo.all_events(), repo.head())


def list_events(session: Session, tenant_id: str | None, *, after: int | None, limit: int,
                action: str | None = None) -> Sequence[AuditEvent]:
    """A page of a chain, oldest first (``after``: the last seq of the previous page)."""
    return _chain(session, tenant_id).page(after=after, limit=limit, action=action)
