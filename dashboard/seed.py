"""Fill a database with realistic history for the dashboard, tests and the benchmark.

``seed(runs=N, tenants=M, now=...)`` creates M tenants (agents with real specs, API keys of various
ages) and N runs spread over the last :data:`HISTORY_DAYS` days: mostly succeeded, some failed /
escalated / budget-exhausted with a category and a reason, a few cancelled, and a live tail
(running, stuck with an expired lease, waiting for approval), then a live queue (:func:`_seed_queue`): every
tenant has a profile (:func:`queue_profile`): ``steady`` tenants start runs within a second or two and have a
few runs queued for seconds, a ``flood`` tenant has a backlog whose oldest run waits about 14 minutes and
slow recent starts, a ``capped`` tenant sits at its ``concurrent_runs`` limit with runs held for minutes; the
schedule rows count each tenant's (and agent's) leased runs as the claim would. Every run gets its hash-chained
decision events, bulk-loaded (COPY on PostgreSQL) in batches, and the read models
(``run_rollups_hourly``, ``step_stats_daily``, ``failures_hourly``, ``agent_health``, ``latest_failures``)
are derived from those events by the same deriver the scheduler runs (:mod:`tenants.reliability.derive`),
never computed here: each batch is folded in the transaction that loads it, from the rows in memory rather than
read back (:func:`~tenants.reliability.derive.derive_written`; 1M runs are about 8M events). Recent runs also
get items, checkpoints and side effects, so the run page has a timeline to show.

Then the governance data every other panel reads, written through the owning domains' services
exactly as the platform would: budget limits with this period's use (reserved and reconciled, so
the 50/80/100 % threshold events are real) and a few open reservations; approvals (pending for the
runs waiting for one, approved / rejected / expired for recent runs); secrets (metadata varied:
some overdue for rotation, one with a pending version; values are random and never shown;
skipped when no master key is available); blocked scope / egress violations; audit events.

``midwatch demo seed --runs N --tenants M`` calls :func:`seed_command`.

Why over 500 lines: one generator of consistent history across every domain (each part is a short
function); splitting it by domain would scatter the shared random state and time line.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import hash_key, onboard_tenant, open_platform_chain
from tenants.agents.service import store_version
from tenants.approvals.service import ApprovalRequest, decide, expire_due, request_approval
from tenants.audit.seals import run_chain
from tenants.audit.seals import seal as seal_head
from tenants.audit.service import record as audit
from tenants.budgets.service import LimitSpec, reconcile, reserve_many, set_limits
from tenants.kit.db import unit_of_work
from tenants.kit.ids import sha256_hex, utcnow
from tenants.kit.master_key import get_master_key
from tenants.reliability.derive import derive_all, derive_written
from tenants.reliability.repository import EventRow
from tenants.reliability.service import load_rows
from tenants.runs.events import GENESIS, event_hash
from tenants.secrets.errors import MasterKeyUnavailable
from tenants.secrets.service import create_secret, promote_secret, rotate_secret
from tenants.security.service import record_violation

__all__ = ["HISTORY_DAYS", "QUEUE_PROFILES", "SeedReport", "queue_profile", "seed", "seed_command"]

HISTORY_DAYS = 14
BATCH = 50_000
DETAIL_ALL_BELOW = 20_000  # seeds up to this size get a full timeline for every run
DETAIL_HOURS = 3  # larger seeds: only runs created in the last hours get one

COMPANIES = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell", "cyberdyne",
             "soylent", "aperture", "massive", "vandelay", "monarch", "oscorp", "pied-piper", "gringotts",
             "nakatomi", "dunder"]

# name, SLO, steps: (id, kind, tool, base success rate, median latency ms)
AGENTS: list[tuple[str, float, list[tuple[str, str, str, float, float]]]] = [
    ("invoice-followup", 0.95, [("fetch", "tool", "crm.get_invoice", 0.995, 180.0),
                                ("draft", "llm", "", 0.985, 1400.0),
                                ("send", "tool", "mail.send_reminder", 0.997, 240.0)]),
    ("lead-enrichment", 0.90, [("lookup", "tool", "crm.get_lead", 0.99, 150.0),
                               ("search", "tool", "web.search_company", 0.97, 900.0),
                               ("summarise", "llm", "", 0.985, 1800.0),
                               ("update", "tool", "crm.update_lead", 0.996, 200.0)]),
    ("ticket-triage", 0.97, [("read", "tool", "helpdesk.get_ticket", 0.998, 120.0),
                             ("classify", "llm", "", 0.99, 900.0),
                             ("route", "tool", "helpdesk.assign", 0.997, 160.0)]),
    ("refund-review", 0.99, [("order", "tool", "shop.get_order", 0.997, 200.0),
                             ("policy", "tool", "docs.refund_policy", 0.999, 90.0),
                             ("decide", "llm", "", 0.98, 2200.0),
                             ("refund", "tool", "payments.refund", 0.995, 450.0),
                             ("notify", "tool", "mail.send", 0.998, 230.0)]),
    ("contract-summary", 0.95, [("fetch", "tool", "drive.get_file", 0.996, 300.0),
                                ("summarise", "llm", "", 0.98, 3500.0)]),
]
QUEUE_PROFILES = ("steady", "flood", "steady", "capped", "steady", "steady", "steady", "steady")
FLOOD_OLDEST_S = 14 * 60.0  # a flood tenant's backlog spans up to this
CAPPED_RUNNING = 2  # a capped tenant's runs started for the queue (its limit: every run it has leased)
SIDE_EFFECT_TOOLS = frozenset({"mail.send_reminder", "crm.update_lead", "helpdesk.assign", "payments.refund",
                               "mail.send"})
CATEGORY_WEIGHTS = {"dependency": 45, "validation": 18, "auth": 9, "budget": 7, "scope": 4, "approval": 5,
                    "state": 5, "internal": 7}
REASONS = {
    "dependency": ["{tool}: 503 Service Unavailable after 3 attempts (Retry-After honoured)",
                   "{tool}: timed out after 10 s (3 attempts)",
                   "{tool}: expected application/json, got text/html (a login page?)",
                   "{tool}: 429 Too Many Requests; circuit breaker open for 60 s"],
    "auth": ["{tool}: 401 Unauthorized; OAuth refresh failed: invalid_grant",
             "{tool}: 403 Forbidden for secret crm_token (rotated upstream?)"],
    "validation": ["{step}: output rejected by rule size(output.text) < 2000 after 2 retries; escalated",
                   "{step}: output does not match output_schema: 'amount' is a required property"],
    "budget": ["tenant budget exhausted: USD 50.00 of 50.00 per day reserved",
               "autonomy bound max_llm_calls=10 reached"],
    "scope": ["{tool}: host api.unknown-host.io is outside the agent's declared egress",
              "tool shell.exec is not in the agent's scope"],
    "approval": ["approval for {tool} expired after 3600 s; on_timeout=deny",
                 "approval for {tool} rejected by approver: 'amount looks wrong'"],
    "state": ["unknown_outcome: a call to non-idempotent tool {tool} may have happened before a crash; "
              "a human must check"],
    "internal": ["redelivery_exhausted: the run's worker vanished 6 times (limit 5)",
                 "step kind 'agent' is not supported yet"],
}
STATE_FOR = {"dependency": "failed", "auth": "failed", "validation": "escalated", "budget": "budget_exhausted",
             "scope": "failed", "approval": "escalated", "state": "escalated", "internal": "failed"}


@dataclass
class _Agent:
    tenant_id: str
    agent_id: str
    version_id: str
    name: str
    steps: list[tuple[str, str, str, float, float]]
    health: float  # multiplies every step's failure odds: > 1 is an unreliable tenant


def queue_profile(index: int) -> str:
    """The queue profile of the ``index``-th tenant (by id): ``steady``, ``flood`` or ``capped``."""
    return QUEUE_PROFILES[index % len(QUEUE_PROFILES)]


def _profile_wait_ms(profile: str, rng: random.Random) -> float:
    """How long a run of a tenant with this queue profile waits to start these days."""
    if profile == "flood":
        return math.exp(rng.uniform(math.log(20_000), math.log(12 * 60_000)))
    if profile == "capped":
        return math.exp(rng.uniform(math.log(5_000), math.log(4 * 60_000)))
    return rng.lognormvariate(math.log(400), 0.9)


def _start_delay_ms(profile: str, created: datetime, now: datetime, rng: random.Random) -> float:
    """Submission to first start: recent runs wait as their tenant's profile says (never past ``now`` - 30 s),
    older history started within 3 s."""
    if created < now - timedelta(hours=DETAIL_HOURS):
        return float(rng.randint(20, 3000))
    room_ms = (now - created).total_seconds() * 1000 - 30_000
    return max(20.0, min(_profile_wait_ms(profile, rng), room_ms))


@dataclass
class SeedReport:
    tenants: int = 0
    agents: int = 0
    runs: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    tenant_ids: list[str] = field(default_factory=list)


def _spec(name: str, slo: float, steps: list[tuple[str, str, str, float, float]]) -> dict[str, Any]:
    tools = [tool for _, kind, tool, _, _ in steps if kind == "tool"]
    hosts = sorted({f"api.{tool.split('.')[0]}.example.com" for tool in tools})
    spec_steps: list[dict[str, Any]] = []
    for sid, kind, tool, _, _ in steps:
        if kind == "tool":
            spec_steps.append({"id": sid, "tool": tool, "args": {"id": "{{ item.id }}"}})
        else:
            spec_steps.append({"id": sid, "llm": {"model": "careful", "fallbacks": ["fast"],
                                                  "prompt": f"{sid} for item {{{{ item.id }}}}"},
                               "rules": ["size(output.text) < 2000"], "on_invalid": {"retry": 2, "then": "escalate"}})
    return {"apiVersion": "midwatch/v1", "name": name, "description": f"{name} (seeded)",
            "objective": {"success_criteria": "every item handled once", "slo": {"success_rate": slo}},
            "scope": {"tools": tools, "egress": hosts,
                      "secrets": sorted({f"{t.split('.')[0]}_token" for t in tools[:2]})},
            "autonomy": {"max_steps": 10, "max_llm_calls": 10, "max_duration_s": 600},
            "input": {"items": True, "schema": {"type": "object", "required": ["id"]}},
            "steps": spec_steps}


def _run_id(at: datetime, rng: random.Random) -> str:
    return f"run_{int(at.timestamp() * 1000):012x}{rng.getrandbits(48):012x}"


def _setup_tenants(n: int, rng: random.Random, now: datetime) -> list[_Agent]:
    agents: list[_Agent] = []
    with unit_of_work() as session:
        accounts = AccountsPlatformRepository(session)
        keys: list[dict[str, Any]] = []
        for i in range(n):
            base = COMPANIES[i % len(COMPANIES)]
            name = base if i < len(COMPANIES) else f"{base}-{i // len(COMPANIES) + 1}"
            suffix = 1
            while accounts.tenant_by_name(name) is not None:
                suffix += 1
                name = f"{base}-{i // len(COMPANIES) + 1}-{suffix}"
            tenant, _ = onboard_tenant(session, name, name.replace("-", " ").title())
            health = rng.choice([0.5, 1.0, 1.0, 1.0, 2.0, 3.0, 6.0])
            for agent_name, slo, steps in rng.sample(AGENTS, rng.randint(1, 4)):
                stored = store_version(session, tenant.id, agent_name, _spec(agent_name, slo, steps), [])
                agents.append(_Agent(tenant.id, stored.agent.id, stored.version.id, agent_name, steps, health))
            for role, age, used in [("tenant-admin", rng.randint(5, 200), rng.choice([0.1, 3, None, 60])),
                                    ("viewer", rng.randint(1, 120), rng.choice([0.5, 10, None]))]:
                plaintext = f"seed-{rng.getrandbits(128):032x}"
                created = now - timedelta(days=age)
                keys.append({"id": f"key_seed{rng.getrandbits(64):016x}", "tenant_id": tenant.id, "role": role,
                             "name": f"{role} key (seeded)", "prefix": plaintext[:14], "key_hash": hash_key(plaintext),
                             "created_at": created,
                             "last_used_at": None if used is None else now - timedelta(days=min(age, used)),
                             "revoked_at": None})
        load_rows(session, "api_keys", keys)
    return agents


def _flush(batches: dict[str, list[dict[str, Any]]], report: SeedReport, now: datetime) -> None:
    """Load a batch of runs and their rows, and fold its decision events into the read models in the same
    transaction, from memory (:func:`derive_written`: the deriver's own fold and cursor; when it declines,
    :func:`derive_all` reads them back at the end)."""
    order = ["runs", "run_items", "step_checkpoints", "side_effects", "decision_events"]
    with unit_of_work() as session:
        for name in order:
            rows = batches.get(name) or []
            if rows:
                report.rows[name] = report.rows.get(name, 0) + load_rows(session, name, rows)
        events = batches.get("decision_events") or []
        if events and derive_written(session, _event_rows(batches), now=now):
            _bump(report, "events_derived", len(events))
    batches.clear()


def _event_rows(batches: dict[str, list[dict[str, Any]]]) -> list[EventRow]:
    """The batch's decision events as the deriver reads them (with their run's agent, start and submission)."""
    runs = {r["id"]: (r["agent_name"], r["started_at"], r["created_at"]) for r in batches["runs"]}
    rows = []
    for e in batches["decision_events"]:  # cost_usd is a Decimal and latency_ms a float here, as read back
        agent, started, created = runs[e["run_id"]]
        rows.append(EventRow(0, e["tenant_id"], e["run_id"], agent, started, e["kind"], e["step_id"],
                             e["failure_category"], e["why"], e["cost_usd"], e["latency_ms"], e["attempts"],
                             e["created_at"], created))
    return rows


def seed(runs: int, tenants: int, *, now: datetime | None = None, rng_seed: int = 7,
         live_fraction: float = 0.01) -> SeedReport:
    """Create ``tenants`` tenants and ``runs`` runs of history ending at ``now``; returns what was written."""
    started_clock = time.monotonic()
    now = (now or utcnow()).astimezone(UTC)  # the deriver's hours and days are UTC
    rng = random.Random(rng_seed)
    report = SeedReport()
    agents = _setup_tenants(tenants, rng, now)
    report.tenants, report.agents = tenants, len(agents)
    report.tenant_ids = sorted({a.tenant_id for a in agents})
    weights = [1.0 / math.sqrt(1 + i % 37) for i in range(len(agents))]  # some tenants are much busier
    categories, cat_weights = list(CATEGORY_WEIGHTS), list(CATEGORY_WEIGHTS.values())
    span = HISTORY_DAYS * 86400.0
    offsets = sorted(rng.random() * span for _ in range(runs))  # ascending: oldest first
    n_live = max(0, int(runs * live_fraction)) if runs >= 20 else 0
    detail_since = now - timedelta(hours=DETAIL_HOURS)
    batches: dict[str, list[dict[str, Any]]] = defaultdict(list)
    chosen = rng.choices(agents, weights=weights, k=runs)
    profiles = {tid: queue_profile(i) for i, tid in enumerate(report.tenant_ids)}
    seen = _SeenRuns()
    for index, offset in enumerate(offsets):
        agent = chosen[index]
        created = now - timedelta(seconds=span - offset) - timedelta(seconds=60)
        live = index >= runs - n_live
        detail = runs <= DETAIL_ALL_BELOW or created >= detail_since or live
        # the newest two live runs wait for an approval, so the approval queue is never empty
        _one_run(agent, created, now, live, detail, rng, categories, cat_weights, batches,
                 waiting=live and index >= runs - 2,
                 delay_ms=_start_delay_ms(profiles[agent.tenant_id], created, now, rng))
        seen.note(agent, batches["runs"][-1])
        report.runs += 1
        if len(batches["runs"]) >= BATCH:
            _flush(batches, report, now)
    if runs >= 20:
        report.runs += _seed_queue(agents, profiles, runs, now, rng, categories, cat_weights, batches, seen)
    _flush(batches, report, now)
    _seed_schedules(seen, now, report)
    # whatever was not folded while loading, as the scheduler derives it (in larger batches: millions of events);
    # on the clock, as the scheduler would: the dashboard reads the deriver's last pass as "as of"
    _bump(report, "events_derived", derive_all(batch=200_000))
    _seed_governance(agents, seen, profiles, rng, now, report)
    report.seconds = time.monotonic() - started_clock
    return report


# ---- the live queue and the schedule counters --------------------------------------------------
def _seed_queue(agents: list[_Agent], profiles: dict[str, str], runs: int, now: datetime, rng: random.Random,
                categories: list[str], cat_weights: list[int], batches: dict[str, list[dict[str, Any]]],
                seen: _SeenRuns) -> int:
    """Queued runs per tenant profile (and a capped tenant's leased runs), and a few runs per tenant that
    started in the last hour after the wait their profile gives (so time-to-start has figures at any seed
    size); returns how many runs it added."""
    by_tenant: dict[str, list[_Agent]] = defaultdict(list)
    for agent in agents:
        by_tenant[agent.tenant_id].append(agent)
    plan: list[tuple[_Agent, float, str]] = []  # (agent, seconds since submission, live state)
    for tid, tenant_agents in sorted(by_tenant.items()):
        profile = profiles[tid]
        if profile == "flood":
            backlog = min(300, max(8, runs // 500))
            plan += [(rng.choice(tenant_agents), FLOOD_OLDEST_S * (k + 1) / backlog, "queued") for k in range(backlog)]
        elif profile == "capped":
            plan += [(rng.choice(tenant_agents), rng.uniform(60, 240), "running") for _ in range(CAPPED_RUNNING)]
            plan += [(rng.choice(tenant_agents), rng.uniform(60, 360), "queued") for _ in range(3)]
        else:
            plan += [(rng.choice(tenant_agents), rng.uniform(2, 40), "queued") for _ in range(rng.randint(0, 2))]
    for agent, age_s, state in sorted(plan, key=lambda p: -p[1]):  # oldest first, as they were submitted
        created = now - timedelta(seconds=age_s)
        _one_run(agent, created, now, True, True, rng, categories, cat_weights, batches, live_as=state,
                 delay_ms=rng.uniform(30_000, 50_000))
        seen.note(agent, batches["runs"][-1])
    recent = min(20, max(2, runs // 5000))
    for tid, tenant_agents in sorted(by_tenant.items()):
        for _ in range(recent):
            agent, delay_ms = rng.choice(tenant_agents), _profile_wait_ms(profiles[tid], rng)
            started = now - timedelta(minutes=rng.uniform(3, 55))
            _one_run(agent, started - timedelta(milliseconds=delay_ms), now, False, True, rng, categories, cat_weights,
                     batches, delay_ms=delay_ms)
            seen.note(agent, batches["runs"][-1])
    return len(plan) + recent * len(by_tenant)


def _seed_schedules(seen: _SeenRuns, now: datetime, report: SeedReport) -> None:
    """The schedule rows as the claim leaves them: each tenant's and agent's runs holding a lease counted as
    running (the caps are set with the budget limits)."""
    with unit_of_work() as session:
        tenants = {t for t, _ in seen.leased}
        report.rows["tenant_schedules"] = load_rows(session, "tenant_schedules", [
            {"tenant_id": t, "weight": 1, "vtime": 0.0, "avg_slice_s": 0.05, "cap": None, "updated_at": now,
             "running": sum(n for (tid, _), n in seen.leased.items() if tid == t)} for t in sorted(tenants)])
        report.rows["agent_schedules"] = load_rows(session, "agent_schedules", [
            {"tenant_id": t, "agent_name": a, "running": n, "cap": None} for (t, a), n in sorted(seen.leased.items())])


# ---- governance: budgets, approvals, secrets, scope violations, audit --------------------------
@dataclass
class _SeenRuns:
    """What the governance seed needs from the generated runs (a few per tenant, not all of them)."""

    waiting: list[tuple[_Agent, str, datetime]] = field(default_factory=list)
    ok: dict[str, list[tuple[_Agent, str]]] = field(default_factory=lambda: defaultdict(list))
    bad: dict[str, list[tuple[_Agent, str]]] = field(default_factory=lambda: defaultdict(list))
    count: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last: dict[str, str] = field(default_factory=dict)
    leased: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (tenant, agent) -> runs

    def note(self, agent: _Agent, row: dict[str, Any]) -> None:
        t = agent.tenant_id
        self.count[t] += 1
        self.last[t] = row["id"]
        if row["lease_until"] is not None:
            self.leased[(t, agent.name)] += 1
        if row["state"] == "waiting_approval":
            self.waiting.append((agent, row["id"], row["updated_at"]))
        elif row["finished_at"] is not None:  # the newest two succeeded and two not succeeded runs
            newest = self.ok[t] if row["state"] == "succeeded" else self.bad[t]
            newest.append((agent, row["id"]))
            del newest[:-2]


BURN_PROFILE = [0.35, 0.62, 0.86, 0.93, 0.18, 0.51, 0.08]  # share of each tenant's daily limits used so far
RISKY = [("payments.refund", "args.amount > 100", "approver"), ("mail.send", "size(args.to) > 20", "approver"),
         ("crm.update_lead", "args.owner != item.owner", "tenant-admin")]
VIOLATIONS = [("host", "api.unknown-host.io", "host api.unknown-host.io is outside the agent's declared egress"),
              ("host", "169.254.169.254", "host 169.254.169.254 (cloud metadata) is never allowed"),
              ("tool", "shell.exec", "tool shell.exec is not in the agent's scope"),
              ("secret", "aws_root_key", "secret aws_root_key is not in the agent's scope")]


def _seed_governance(agents: list[_Agent], seen: _SeenRuns, profiles: dict[str, str], rng: random.Random,
                     now: datetime, report: SeedReport) -> None:
    by_tenant: dict[str, list[_Agent]] = defaultdict(list)
    for agent in agents:
        by_tenant[agent.tenant_id].append(agent)
    try:
        master = get_master_key()
    except MasterKeyUnavailable:
        master = None
        print("seed: no secrets master key configured (MIDWATCH_MASTER_KEY): secrets are not seeded", flush=True)
    with unit_of_work() as session:
        for i, tid in enumerate(sorted(by_tenant)):
            tenant_agents = by_tenant[tid]
            audit(session, None, actor="seed", role="operator", action="tenant.onboarded", target=tid)
            for agent in tenant_agents:
                audit(session, tid, actor="seed", role="tenant-admin", action="agent.version_stored",
                      target=agent.name, details={"version": 1})
            leased = sum(n for (t, _), n in seen.leased.items() if t == tid)
            # capped: every slot in use; the others have room above what they run now
            cap = leased if profiles[tid] == "capped" else max(20, leased + 10)
            _seed_budget(session, tid, i, seen.count[tid], cap, rng, now, report)
            if master is not None:
                _seed_secrets(session, tid, tenant_agents, rng, now, report)
            _seed_violations(session, tid, i, tenant_agents, seen.last.get(tid, ""), rng, now, report)
        _seed_approvals(session, seen, rng, now, report)


def _bump(report: SeedReport, name: str, n: int = 1) -> None:
    report.rows[name] = report.rows.get(name, 0) + n


def _seed_budget(session: Any, tid: str, i: int, runs: int, cap: int, rng: random.Random, now: datetime,
                 report: SeedReport) -> None:
    money = Decimal(rng.choice([20, 50, 100, 250]))
    tokens, calls = rng.choice([500_000, 2_000_000]), rng.choice([2_000, 10_000])
    runs_limit = max(100, math.ceil(runs / rng.choice([0.3, 0.6, 0.9]) / 100) * 100)
    set_limits(session, tid, [LimitSpec("cost_usd", money, "day"), LimitSpec("tokens", tokens, "day"),
                              LimitSpec("llm_calls", calls, "day"), LimitSpec("runs", runs_limit, "month"),
                              LimitSpec("concurrent_runs", cap)], now=now)
    _bump(report, "budget_limits", 5)
    audit(session, tid, actor="seed", role="operator", action="budget.limits_set", target=tid,
          details={"cost_usd_per_day": str(money)})
    share = BURN_PROFILE[i % len(BURN_PROFILE)]
    chunks = rng.randint(4, 9)
    for k in range(chunks):  # worst case reserved, then reconciled to a little less (as the engine does)
        part = share / chunks
        cost = (money * Decimal(str(round(part, 6)))).quantize(Decimal("0.01"))
        used_tokens = int(tokens * part * rng.uniform(0.6, 1.0))
        used_calls = max(1, int(calls * part * 0.5))
        rid = f"seed:{tid}:{k}"
        reserve_many(session, tid, None, {"cost_usd": cost, "tokens": used_tokens, "llm_calls": used_calls}, rid,
                     now=now)
        reconcile(session, tid, rid, {"cost_usd": cost, "tokens": int(used_tokens * 0.9), "llm_calls": used_calls},
                  now=now)
    rid = f"seed:{tid}:runs"
    reserve_many(session, tid, None, {"runs": runs}, rid, now=now)
    reconcile(session, tid, rid, {"runs": runs}, now=now)
    if i % 2 == 0:  # a model call in flight right now
        reserve_many(session, tid, None, {"cost_usd": (money / 100).quantize(Decimal("0.01")), "tokens": 4000,
                                          "llm_calls": 1}, f"seed:{tid}:open", now=now)
    _bump(report, "budget_reservations", chunks + 1 + int(i % 2 == 0))


def _seed_secrets(session: Any, tid: str, agents: list[_Agent], rng: random.Random, now: datetime,
                  report: SeedReport) -> None:
    names = sorted({f"{tool.split('.')[0]}_token" for a in agents for _, kind, tool, _, _ in a.steps
                    if kind == "tool"})[:4]
    for j, name in enumerate(names):
        age = rng.choice([4, 12, 35, 61, 88, 97, 130, 210])
        policy = None if j == 3 else rng.choice([30, 90, 90, 180])
        created = now - timedelta(days=age, hours=rng.randint(0, 23))
        create_secret(session, tid, name, secrets.token_urlsafe(32), max_age_days=policy, now=created)
        audit(session, tid, actor="seed", role="tenant-admin", action="secret.created", target=name)
        if age > 60 and rng.random() < 0.4:  # rotated once since: the age counts from the promotion
            rotate_secret(session, tid, name, secrets.token_urlsafe(32), now=created + timedelta(days=age - 20))
            promote_secret(session, tid, name, now=created + timedelta(days=age - 19))
            audit(session, tid, actor="seed", role="tenant-admin", action="secret.promoted", target=name)
        elif rng.random() < 0.25:  # a new value staged, not yet verified and promoted
            rotate_secret(session, tid, name, secrets.token_urlsafe(32), now=now - timedelta(hours=rng.randint(1, 60)))
            audit(session, tid, actor="seed", role="tenant-admin", action="secret.rotated", target=name)
        _bump(report, "secrets")


def _seed_violations(session: Any, tid: str, i: int, agents: list[_Agent], run_id: str, rng: random.Random,
                     now: datetime, report: SeedReport) -> None:
    for _ in range([0, 1, 4, 0, 2, 7, 0][i % 7]):
        kind, target, reason = rng.choice(VIOLATIONS)
        agent = rng.choice(agents)
        record_violation(session, tid, run_id=run_id, agent_name=agent.name, step_id=agent.steps[-1][0], kind=kind,
                         target=target, reason=reason, at=now - timedelta(hours=rng.uniform(0.2, 24 * 10)))
        audit(session, tid, actor="runner", role="runner", action="scope.violation", target=run_id,
              details={"kind": kind, "name": target})
        _bump(report, "scope_violations")


def _request(session: Any, agent: _Agent, run_id: str, at: datetime, timeout_s: int, rng: random.Random) -> Any:
    action, rule, route = rng.choice(RISKY)
    args = {"id": "R-0", "amount": rng.choice([120, 480, 1250, 3900])}
    sid = agent.steps[-1][0]
    return request_approval(session, agent.tenant_id, ApprovalRequest(
        run_id=run_id, agent_name=agent.name, item_index=0, step_index=len(agent.steps) - 1, step_id=sid,
        action=action, args=args, args_hash=sha256_hex(f"{run_id}/{action}/{args}"), rule=rule, route=route,
        timeout_s=timeout_s, on_timeout="deny"), at)


def _seed_approvals(session: Any, seen: _SeenRuns, rng: random.Random, now: datetime, report: SeedReport) -> None:
    for agent, run_id, waiting_since in seen.waiting:  # the queue: one pending approval per waiting run
        _request(session, agent, run_id, max(waiting_since, now - timedelta(minutes=50)), 3600, rng)
        _bump(report, "approvals")
    for t_index, tid in enumerate(sorted(seen.count)):
        ok, bad = seen.ok[tid], seen.bad[tid]
        for agent, run_id in ok:  # approved, then the run went on and succeeded
            a = _request(session, agent, run_id, now - timedelta(minutes=rng.randint(30, 600)), 12 * 3600, rng)
            decide(session, agent.tenant_id, a.id, approve=True, role=a.route, key_id="key_seed_approver", comment=None)
        for n, (agent, run_id) in enumerate(bad):
            if (n + t_index) % 2 == 0:  # rejected by the approver
                a = _request(session, agent, run_id, now - timedelta(minutes=rng.randint(30, 600)), 12 * 3600, rng)
                decide(session, agent.tenant_id, a.id, approve=False, role=a.route, key_id="key_seed_approver",
                       comment="amount looks wrong")
            else:  # nobody answered in time: the scheduler applies on_timeout (deny)
                _request(session, agent, run_id, now - timedelta(hours=3), 3600, rng)
        _bump(report, "approvals", len(ok) + len(bad))
    expire_due(session, now)


@dataclass
class _SimRun:
    """One simulated run's rows, built step by step like the engine would write them."""

    agent: _Agent
    run_id: str
    rng: random.Random
    detail: bool
    clock: datetime
    events: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    steps_done: int = 0
    llm_calls: int = 0
    items_failed: int = 0
    cost: Decimal = Decimal(0)
    category: str | None = None
    reason: str | None = None

    def event(self, kind: str, at: datetime, **kw: Any) -> None:
        row: dict[str, Any] = {"tenant_id": self.agent.tenant_id, "run_id": self.run_id, "seq": len(self.events) + 1,
                               "kind": kind, "item_index": kw.get("item_index"), "step_index": kw.get("step_index"),
                               "step_id": kw.get("step_id"), "considered": kw.get("considered"),
                               "chosen": kw.get("chosen"), "why": kw.get("why"), "verdicts": None,
                               "failure_category": kw.get("failure_category"),
                               "cost_usd": kw.get("cost_usd", Decimal(0)),
                               "latency_ms": round(float(kw.get("latency_ms", 0.0)), 3),
                               "attempts": kw.get("attempts"),
                               "input_hash": kw.get("input_hash"), "output_hash": kw.get("output_hash"),
                               "created_at": at}
        row["prev_hash"] = self.events[-1]["hash"] if self.events else GENESIS
        row["hash"] = event_hash(row["prev_hash"], row)
        self.events.append(row)

    def step(self, item_index: int, step_index: int, categories: list[str], cat_weights: list[int]) -> str | None:
        """Simulate one step: None when it succeeded, else the item's new state (failed / escalated)."""
        sid, kind, tool, base, median = self.agent.steps[step_index]
        rng = self.rng
        fail_p = min(0.9, (1 - base) * self.agent.health)
        ok = rng.random() >= fail_p
        retries = 0 if rng.random() < 0.9 else rng.randint(1, 3)
        latency = round(median * math.exp(rng.gauss(0, 0.5)) * (1 + retries), 3)
        self.clock += timedelta(milliseconds=latency)
        step_cost = Decimal("0.0021") * Decimal(int(latency / 100) + 1) if kind == "llm" else Decimal(0)
        self.llm_calls += 1 + retries if kind == "llm" else 0
        self.cost += step_cost
        key = f"mw-{self.run_id}-{item_index}-{step_index}"
        where = {"item_index": item_index, "step_index": step_index, "step_id": sid}
        if ok:
            self.steps_done += 1
            out_hash = sha256_hex(f"{self.run_id}/{item_index}/{sid}")
            if self.detail:
                self._succeeded_rows(where, tool, key, out_hash, retries, latency)
            llm = kind == "llm"
            self.event("step.succeeded", self.clock, **where, considered=["careful", "fast"] if llm else [tool],
                       chosen="careful" if llm else tool,
                       why=(f"succeeded after {retries} retr{'y' if retries == 1 else 'ies'} (503, backoff)"
                            if retries else "output valid (schema and rules passed)"),
                       cost_usd=step_cost, latency_ms=latency, output_hash=out_hash, attempts=1 + retries)
            return None
        self.category = rng.choices(categories, cat_weights)[0]
        self.reason = rng.choice(REASONS[self.category]).format(tool=tool or f"{sid} (llm)", step=sid)
        item_state = "escalated" if STATE_FOR[self.category] == "escalated" else "failed"
        self.items_failed += 1
        if self.detail and kind == "tool" and self.category == "state":
            self.effects.append({"idempotency_key": key, "tenant_id": self.agent.tenant_id, "run_id": self.run_id,
                                 **where, "tool": tool, "state": "unknown", "attempts": 1, "outcome": None,
                                 "created_at": self.clock, "completed_at": None})
        self.event("step.failed", self.clock, **where, considered=[item_state, "retry"], chosen=item_state,
                   why=self.reason, failure_category=self.category, latency_ms=latency, attempts=1 + retries)
        return item_state

    def _succeeded_rows(self, where: dict[str, Any], tool: str | None, key: str, out_hash: str, retries: int,
                        latency: float) -> None:
        t = self.agent.tenant_id
        self.checkpoints.append({"run_id": self.run_id, **where, "tenant_id": t, "status": "succeeded",
                                 "output": {"ok": True}, "output_hash": out_hash, "attempts": 1 + retries,
                                 "latency_ms": latency, "fence": 1, "created_at": self.clock})
        if tool in SIDE_EFFECT_TOOLS:
            self.effects.append({"idempotency_key": key, "tenant_id": t, "run_id": self.run_id, **where,
                                 "tool": tool, "state": "succeeded", "attempts": 1 + retries,
                                 "outcome": {"status": 200}, "created_at": self.clock - timedelta(milliseconds=latency),
                                 "completed_at": self.clock})

    def item(self, item_index: int, stop: bool, categories: list[str], cat_weights: list[int]) -> str:
        """Simulate one item's steps; its final state (``pending`` when the run is still on it)."""
        item_state = "done"
        for step_index in range(len(self.agent.steps)):
            if stop and step_index == len(self.agent.steps) - 1:
                item_state = "pending"
                break
            failed = self.step(item_index, step_index, categories, cat_weights)
            if failed is not None:
                item_state = failed
                break
        bad = item_state in ("failed", "escalated")
        self.items.append({"run_id": self.run_id, "item_index": item_index, "tenant_id": self.agent.tenant_id,
                           "input": {"id": f"R-{item_index}"}, "state": item_state,
                           "reason": self.reason if bad else None, "failure_category": self.category if bad else None,
                           "steps_used": len(self.agent.steps), "llm_calls": 0, "next_attempt": 1,
                           "updated_at": self.clock})
        return item_state


def _live_state(live: bool, waiting: bool, rng: random.Random) -> str | None:
    """A live tail run's state (queued runs come from :func:`_seed_queue`, by tenant profile)."""
    if not live:
        return None
    state = rng.choices(["running", "stuck", "waiting_approval"], [4, 1, 2])[0]
    return "waiting_approval" if waiting else state


def _one_run(agent: _Agent, created: datetime, now: datetime, live: bool, detail: bool, rng: random.Random,
             categories: list[str], cat_weights: list[int],
             batches: dict[str, list[dict[str, Any]]], *, waiting: bool = False, delay_ms: float = 1000.0,
             live_as: str | None = None) -> None:
    run_id = _run_id(created, rng)
    n_items = 1 if rng.random() < 0.7 else rng.randint(2, 6)
    started: datetime | None = created + timedelta(milliseconds=delay_ms)
    live_state = live_as or _live_state(live, waiting, rng)
    if live_state == "queued":
        started = None
    sim = _SimRun(agent, run_id, rng, detail, started or created)
    state = "succeeded"
    cancelled = not live and rng.random() < 0.01
    stop_at_item = rng.randrange(n_items) if live_state in ("running", "stuck", "waiting_approval") else None
    if started is not None:
        sim.event("run.started", started, chosen="agent version 1", why="first start",
                  considered=[s[0] for s in agent.steps])
    for item_index in range(n_items if started is not None else 0):
        item_state = sim.item(item_index, item_index == stop_at_item, categories, cat_weights)
        if item_state not in ("done", "pending"):
            state = STATE_FOR[sim.category or "internal"]
            break
    finished, run_state, lease_until = _end(sim, state, live_state, cancelled, n_items, now)
    batches["runs"].append(_run_row(sim, n_items, run_state, lease_until, created, started, finished, live_state))
    if detail:
        pending = [{"run_id": run_id, "item_index": i, "tenant_id": agent.tenant_id, "input": {"id": f"R-{i}"},
                    "state": "pending", "reason": None, "failure_category": None, "steps_used": 0, "llm_calls": 0,
                    "next_attempt": 1, "updated_at": None}
                   for i in range(len(sim.items), n_items)]
        batches["run_items"].extend(sim.items + pending)
        batches["step_checkpoints"].extend(sim.checkpoints)
        batches["side_effects"].extend(sim.effects)
    batches["decision_events"].extend(sim.events)


def _end(sim: _SimRun, state: str, live_state: str | None, cancelled: bool, n_items: int,
         now: datetime) -> tuple[datetime | None, str, datetime | None]:
    """How the run ends (or where it stands when live): finished at, state, lease."""
    if live_state is not None:
        sim.category = sim.reason = None
        lease_until = {"running": now + timedelta(seconds=25),
                       "stuck": now - timedelta(minutes=sim.rng.randint(3, 40))}.get(live_state)
        return None, "running" if live_state == "stuck" else live_state, lease_until
    if cancelled:
        state, sim.category, sim.reason = "cancelled", None, "cancelled by request"
    finished = sim.clock + timedelta(milliseconds=sim.rng.randint(5, 200))
    if state != "succeeded" and n_items > 1 and state != "cancelled":
        sim.reason = f"{sim.items_failed} of {n_items} items {state}; first (item {len(sim.items) - 1}): {sim.reason}"
    sim.event(f"run.{state}", finished, chosen=state, why=sim.reason or "every item completed",
              failure_category=sim.category, cost_usd=sim.cost)
    return finished, state, None


def _run_row(sim: _SimRun, n_items: int, run_state: str, lease_until: datetime | None, created: datetime,
             started: datetime | None, finished: datetime | None, live_state: str | None) -> dict[str, Any]:
    agent, events = sim.agent, sim.events
    return {
        "id": sim.run_id, "tenant_id": agent.tenant_id, "agent_id": agent.agent_id, "agent_name": agent.name,
        "agent_version_id": agent.version_id, "agent_version": 1, "state": run_state, "reason": sim.reason,
        "failure_category": sim.category if run_state in ("failed", "escalated", "budget_exhausted") else None,
        "input": {"items": n_items} if sim.detail else None, "is_batch": n_items > 1, "items_total": n_items,
        "items_done": sum(1 for i in sim.items if i["state"] == "done"), "items_failed": sim.items_failed,
        "steps_done": sim.steps_done, "llm_calls": sim.llm_calls, "cost_usd": sim.cost, "idempotency_key": None,
        "request_hash": None, "lease_owner": "worker-1:4242:1" if lease_until else None, "lease_until": lease_until,
        "fence": 1 if started else 0, "crash_count": 0, "cancel_requested": run_state == "cancelled",
        "suspend_requested": False, "priority": 3, "runnable_at": created if live_state == "queued" else None,
        "event_seq": len(events), "event_head": events[-1]["hash"] if events else None,
        "event_seal": seal_head("run", run_chain(agent.tenant_id, sim.run_id), len(events),
                                events[-1]["hash"] if events else GENESIS),
        "wake_at": None, "created_at": created, "started_at": started, "finished_at": finished,
        "updated_at": finished or sim.clock}


def seed_command(runs: int, tenants: int) -> int:
    """``midwatch demo seed --runs N --tenants M``: seed the configured database (migrated first) and report."""
    from tenants.migrations import upgrade

    upgrade()
    with unit_of_work() as session:  # as midwatch.services.bootstrap does on a fresh installation
        open_platform_chain(session)
    report = seed(runs, tenants)
    rows = ", ".join(f"{name} {n:,}" for name, n in sorted(report.rows.items()))
    print(f"seeded {report.tenants} tenants, {report.agents} agents, {report.runs:,} runs in "
          f"{report.seconds:.1f} s ({rows})", flush=True)
    if os.environ.get("MIDWATCH_DASHBOARD_DEMO_KEY") is None:
        print("open the dashboard with `midwatch dashboard` (or `midwatch up`) and sign in with an operator key",
              flush=True)
    return 0
