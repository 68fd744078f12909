"""The Security page's query: per tenant keys, scopes, chains, secrets, violations and a 0-100 score."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from tenants.audit.service import verify as verify_audit_chain
from tenants.kit.ids import utcnow
from tenants.reliability.repository import PlatformReliabilityRepository
from tenants.runs.events import verify_chain
from tenants.secrets.service import metadata_by_tenant
from tenants.security.repository import PlatformSecurityRepository

__all__ = ["AuditCheck", "KeyRow", "ScopeRow", "SecretRow", "SecurityPosture", "TenantPosture", "ViolationRow",
           "security_posture"]

KEY_MAX_AGE_DAYS = 90
KEY_IDLE_DAYS = 30
BROAD_SCOPE_TOOLS = 8
VIOLATION_WINDOW = timedelta(days=7)
LATEST_VIOLATIONS = 5
VIOLATION_NOUNS = {"host": "egress", "tool": "tool", "secret": "secret"}


@dataclass(frozen=True, slots=True)
class KeyRow:
    """An API key's age and last use (never its value)."""

    id: str
    tenant_id: str | None
    tenant: str
    role: str
    name: str
    prefix: str
    age_days: float
    last_used_days: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class ScopeRow:
    """How wide an agent's latest version reaches: tools, egress hosts, secrets, approval rules."""

    agent_name: str
    version: int
    tools: int
    egress: int
    secrets: int
    approvals: int
    wildcard_egress: bool


@dataclass(frozen=True, slots=True)
class SecretRow:
    """A secret's metadata (``tenants.secrets``; never its value)."""

    name: str
    age_days: int
    max_age_days: int | None
    created_at: datetime
    last_rotated_at: datetime | None
    last_used_at: datetime | None
    current_version: int | None
    pending_version: int | None
    previous_version: int | None
    overdue: bool

    @property
    def status(self) -> str:
        if self.overdue:
            return f"OVERDUE ({self.age_days} d > {self.max_age_days} d)"
        if self.pending_version is not None:
            return f"rotation pending (v{self.pending_version} not promoted)"
        if self.max_age_days is None:
            return "no rotation policy"
        return f"ok ({self.max_age_days - self.age_days} d left)"


@dataclass(frozen=True, slots=True)
class ViolationRow:
    """One blocked attempt to use a tool, host or secret outside an agent's scope."""

    at: datetime
    agent_name: str
    run_id: str
    step_id: str
    kind: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """The result of recomputing a tenant's audit hash chain (``tenants.audit.service.verify``)."""

    ok: bool
    events: int
    first_bad_seq: int | None
    reason: str

    @property
    def summary(self) -> str:
        if self.ok:
            return f"intact ({self.events} events)" if self.events else "intact (no events yet)"
        return f"BROKEN at seq {self.first_bad_seq}: {self.reason}"


@dataclass(frozen=True, slots=True)
class TenantPosture:
    """A tenant's security posture: findings, a 0-100 score and the reasons behind it."""

    tenant_id: str
    tenant: str
    score: int
    reasons: tuple[str, ...]
    keys: tuple[KeyRow, ...]
    scopes: tuple[ScopeRow, ...]
    chains_checked: int
    chains_broken: int
    secrets: tuple[SecretRow, ...]
    violations_7d: dict[str, int]  # kind (tool | host | secret) -> blocked attempts in the last 7 days
    latest_violations: tuple[ViolationRow, ...]
    audit: AuditCheck

    @property
    def overdue_secrets(self) -> int:
        return sum(1 for s in self.secrets if s.overdue)


@dataclass(frozen=True, slots=True)
class SecurityPosture:
    """Every tenant's posture (lowest score first), the operator keys and the platform chain."""

    tenants: tuple[TenantPosture, ...]  # lowest score first
    operator_keys: tuple[KeyRow, ...]
    platform_audit: AuditCheck  # the chain of operator actions outside any tenant
    now: datetime | None = None  # when it was read (every figure here is live: no read models)


def _days(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds() / 86400)


def _key_row(k: Any, names: dict[str, str], now: datetime) -> KeyRow:
    return KeyRow(k.id, k.tenant_id, names.get(k.tenant_id, "(operator)") if k.tenant_id else "(operator)",
                  k.role, k.name, k.prefix, _days(now, k.created_at) or 0.0, _days(now, k.last_used_at),
                  k.revoked_at is not None or (k.expires_at is not None and k.expires_at <= now))  # rotated out


def _scope_row(version: int, name: str, spec: Any) -> ScopeRow:
    scope = (spec or {}).get("scope") or {}
    egress = list(scope.get("egress") or [])
    approvals = ((spec or {}).get("autonomy") or {}).get("approvals") or []
    return ScopeRow(name, version, len(scope.get("tools") or []), len(egress), len(scope.get("secrets") or []),
                    len(approvals), any("*" in str(h) for h in egress))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _score(keys: list[KeyRow], scopes: list[ScopeRow], broken: int, checked: int,
           secrets: list[SecretRow], violations: dict[str, int], audit: AuditCheck) -> tuple[int, list[str]]:
    score, reasons = 100, []
    if not audit.ok:
        score -= 40
        reasons.append(f"audit chain broken at seq {audit.first_bad_seq}: {audit.reason}")
    overdue = [s for s in secrets if s.overdue]
    if overdue:
        score -= min(30, 10 * len(overdue))
        reasons.append(f"{_plural(len(overdue), 'secret')} overdue for rotation: "
                       + ", ".join(f"{s.name} ({s.age_days} d, max {s.max_age_days} d)" for s in overdue))
    for kind, n in sorted(violations.items(), key=lambda kv: (-kv[1], kv[0])):
        if n:
            score -= min(20, 5 * n)
            noun = VIOLATION_NOUNS.get(kind, kind)
            reasons.append(f"{n} blocked {noun} attempt{'' if n == 1 else 's'} in {VIOLATION_WINDOW.days} days")
    live = [k for k in keys if not k.revoked]
    old = [k for k in live if k.age_days > KEY_MAX_AGE_DAYS]
    if old:
        score -= min(20, 10 * len(old))
        reasons.append(f"{len(old)} active API key(s) older than {KEY_MAX_AGE_DAYS} days: rotate them")
    idle = [k for k in live
            if k.age_days > KEY_IDLE_DAYS and (k.last_used_days is None or k.last_used_days > KEY_IDLE_DAYS)]
    if idle:
        score -= min(15, 5 * len(idle))
        reasons.append(f"{len(idle)} active API key(s) unused for {KEY_IDLE_DAYS}+ days: revoke them")
    broad = [s for s in scopes if s.tools > BROAD_SCOPE_TOOLS]
    if broad:
        score -= min(15, 5 * len(broad))
        reasons.append(f"{len(broad)} agent(s) with more than {BROAD_SCOPE_TOOLS} tools in scope: narrow them")
    wild = [s for s in scopes if s.wildcard_egress]
    if wild:
        score -= min(20, 10 * len(wild))
        reasons.append(f"{len(wild)} agent(s) with wildcard egress hosts")
    if broken:
        score -= 40
        reasons.append(f"decision-log hash chain broken in {broken} of {checked} recent runs: investigate tampering")
    if not reasons:
        reasons.append("no findings")
    return max(0, score), reasons


def _audit_check(session: Session, tenant_id: str | None) -> AuditCheck:
    v = verify_audit_chain(session, tenant_id)
    return AuditCheck(v.ok, v.events, v.first_bad_seq, v.reason)


def _secret_rows(session: Session, now: datetime) -> dict[str, list[SecretRow]]:
    out: dict[str, list[SecretRow]] = defaultdict(list)
    for tid, metas in metadata_by_tenant(session, now=now).items():
        for m in metas:
            out[tid].append(SecretRow(m.name, m.age_days, m.max_age_days, m.created_at, m.last_rotated_at,
                                      m.last_used_at, m.current_version, m.pending_version, m.previous_version,
                                      m.rotation_due))
        out[tid].sort(key=lambda r: (not r.overdue, -r.age_days, r.name))
    return out


def security_posture(session: Session, *, now: datetime | None = None,
                     chains_per_tenant: int = 3) -> SecurityPosture:
    """Per tenant: keys by age and last use, scope breadth per agent, recent decision-log chain checks,
    secrets by age and rotation status, blocked scope / egress violations (7 days), the audit chain's
    verification, and a 0-100 score with its reasons. Also the operator keys and the platform audit chain.

    Verifying audit chains reads every tenant's chain: call it through a cache (the dashboard keeps it 60 s).
    """
    now = now or utcnow()
    repo = PlatformReliabilityRepository(session)
    security = PlatformSecurityRepository(session)
    tenants = repo.tenants()
    names = {t.id: t.name for t in tenants}
    keys: dict[str | None, list[KeyRow]] = defaultdict(list)
    for k in repo.api_keys():
        keys[k.tenant_id].append(_key_row(k, names, now))
    scopes: dict[str, list[ScopeRow]] = defaultdict(list)
    for tid, name, version, spec in repo.latest_specs():
        scopes[tid].append(_scope_row(int(version), name, spec))
    secrets = _secret_rows(session, now)
    violations: dict[str, dict[str, int]] = defaultdict(dict)
    for (tid, kind), n in security.counts_since(now - VIOLATION_WINDOW).items():
        violations[tid][kind] = n
    out = []
    for t in tenants:
        checked = broken = 0
        for run_id in repo.recent_run_ids(t.id, chains_per_tenant):
            events = repo.run_events(run_id, 10_000)
            if not events:
                continue
            checked += 1
            rows = ({c.key: getattr(e, c.key) for c in e.__table__.columns} for e in events)
            broken += int(not verify_chain(rows).ok)
        audit = _audit_check(session, t.id)
        latest = tuple(ViolationRow(v.at, v.agent_name, v.run_id, v.step_id, v.kind, v.target, v.reason)
                       for v in security.latest(t.id, LATEST_VIOLATIONS)) if violations.get(t.id) else ()
        score, reasons = _score(keys[t.id], scopes[t.id], broken, checked, secrets[t.id], violations[t.id], audit)
        out.append(TenantPosture(t.id, t.name, score, tuple(reasons), tuple(keys[t.id]), tuple(scopes[t.id]),
                                 checked, broken, tuple(secrets[t.id]), dict(violations[t.id]), latest, audit))
    return SecurityPosture(tuple(sorted(out, key=lambda p: (p.score, p.tenant))), tuple(keys[None]),
                           _audit_check(session, None), now)
