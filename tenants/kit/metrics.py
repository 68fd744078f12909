"""Every Prometheus metric Midwatch exports, in one place.

Two kinds (README "Metrics" lists them with their labels):

- **Event metrics** (counters, histograms): a process increments them as things happen, through the small
  functions below (``step_finished(...)``, ``run_finished(...)``, ...). They are process-local and work in
  prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``), so an API with several worker
  processes exports their sum.
- **Database gauges** (:data:`DB_GAUGES`): figures read from the database (queue depth, escalations waiting,
  budgets, breakers, secrets, measured reliability, worker heartbeats) by
  :class:`tenants.observability.exposition.DatabaseCollector` over a cached snapshot.

Labels are bounded on purpose: ``tenant`` (the tenant id; ``midwatch_tenant_info`` maps it to the name),
``agent``, ``state``, ``outcome``, ``category`` (the eight failure categories), ``provider``, ``event_type``,
and, on gauges only, ``host`` (a tenant's egress hosts), ``secret`` (secrets with a rotation policy),
``step`` (a spec's step ids), ``metric``/``period`` (budget limits) and ``window``. Never a run, item,
approval or request id: those belong in traces and logs.
"""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

from tenants.kit.types import FAILURE_CATEGORIES

__all__ = [
    "DB_GAUGES",
    "EVENT_METRICS",
    "RUN_STATES",
    "approvals_expired",
    "heartbeat",
    "lease_lost",
    "lease_stolen",
    "model_call",
    "run_finished",
    "run_started",
    "run_submitted",
    "step_finished",
    "sweeper_recovered",
    "webhook_attempt",
]

RUN_STATES = frozenset({"succeeded", "failed", "cancelled", "escalated", "budget_exhausted"})
_CATEGORIES = frozenset(FAILURE_CATEGORIES)
_PROVIDERS = frozenset({"sandbox", "openai", "anthropic", "remote"})
_WEBHOOK_OUTCOMES = frozenset({"delivered", "retry", "failed"})
_LATENCY_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0)
_WAIT_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)

# No *_created series: they double the series count and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

BUILD_INFO = Gauge("midwatch_build_info", "Midwatch version of this process (value 1)", ["version"],
                   multiprocess_mode="max")
RUNS_SUBMITTED = Counter("midwatch_runs_submitted_total", "Runs accepted by the API (idempotent replays excluded)",
                         ["tenant", "agent"])
RUNS_STARTED = Counter("midwatch_runs_started_total", "Runs started for the first time", ["tenant", "agent"])
TIME_TO_START = Histogram("midwatch_run_time_to_start_seconds", "Submission to first start of a run",
                          ["tenant"], buckets=_WAIT_BUCKETS)
RUNS_FINISHED = Counter("midwatch_runs_finished_total",
                        "Runs reaching a final state, with the failure category of a failed/escalated run",
                        ["tenant", "agent", "state", "category"])
STEPS = Counter("midwatch_steps_total", "Step outcomes (one per item and step, after retries)",
                ["tenant", "agent", "outcome"])
STEP_ATTEMPTS = Counter("midwatch_step_attempts_total", "Step attempts: calls made, retries included",
                        ["tenant", "agent"])
STEP_FAILURES = Counter("midwatch_step_failures_total", "Failed step outcomes by failure category",
                        ["tenant", "agent", "category"])
STEP_RETRIES = Counter("midwatch_step_retries_total", "Retries spent on steps (attempts beyond the first)",
                       ["tenant", "agent"])
STEP_SECONDS = Histogram("midwatch_step_duration_seconds", "Wall time of a step including its checkpoint",
                         ["tenant", "agent"], buckets=_LATENCY_BUCKETS)
MODEL_CALLS = Counter("midwatch_model_calls_total", "Model calls by provider and outcome",
                      ["tenant", "agent", "provider", "outcome"])
MODEL_TOKENS = Counter("midwatch_model_tokens_total", "Model tokens by direction (input, output)",
                       ["tenant", "agent", "provider", "direction"])
MODEL_COST = Counter("midwatch_model_cost_usd_total", "Model spend in USD", ["tenant", "agent"])
MODEL_SECONDS = Histogram("midwatch_model_call_duration_seconds", "Wall time of a model call", ["provider"],
                          buckets=_LATENCY_BUCKETS)
LEASE_STEALS = Counter("midwatch_lease_steals_total",
                       "Runs taken over from a worker whose lease expired (it died or stalled)", ["tenant"])
LEASES_LOST = Counter("midwatch_leases_lost_total",
                      "Runs a worker lost to another while working on them (a stalled worker's side)", ["tenant"])
SWEEPER_RECOVERIES = Counter("midwatch_sweeper_recoveries_total",
                             "Stranded runs (dead worker, lost wake-up) re-enqueued by the sweeper", ["tenant"])
APPROVALS_EXPIRED = Counter("midwatch_approvals_expired_total", "Approvals that expired without a decision",
                            ["tenant"])
WEBHOOK_DELIVERIES = Counter("midwatch_webhook_deliveries_total",
                             "Webhook delivery attempts by outcome (delivered, retry, failed)",
                             ["tenant", "event_type", "outcome"])
HEARTBEAT = Gauge("midwatch_worker_heartbeat_timestamp_seconds",
                  "Unix time of this process's last heartbeat (worker or scheduler)", ["kind"],
                  multiprocess_mode="max")

EVENT_METRICS = (BUILD_INFO, RUNS_SUBMITTED, RUNS_STARTED, TIME_TO_START, RUNS_FINISHED, STEPS, STEP_ATTEMPTS,
                 STEP_FAILURES, STEP_RETRIES, STEP_SECONDS, MODEL_CALLS, MODEL_TOKENS, MODEL_COST, MODEL_SECONDS,
                 LEASE_STEALS, LEASES_LOST, SWEEPER_RECOVERIES, APPROVALS_EXPIRED, WEBHOOK_DELIVERIES, HEARTBEAT)

# name -> (help, labels): the gauges DatabaseCollector derives from the database snapshot.
DB_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "midwatch_tenant_info": ("Tenant id to name (value 1); join with group_left(tenant_name)",
                             ("tenant", "tenant_name", "status")),
    "midwatch_runs": ("Live runs by state (queued, running, waiting_approval, escalated)", ("tenant", "state")),
    "midwatch_runs_stuck": ("Running runs whose worker's lease expired, or handed back and not picked up for "
                            "2 minutes", ("tenant",)),
    "midwatch_queue_depth": ("Runs due to start or continue now, waiting for a worker (the dispatch queue)",
                             ("tenant",)),
    "midwatch_queue_oldest_waiting_seconds": ("How long the longest-waiting runnable run has waited", ("tenant",)),
    "midwatch_escalations_waiting": ("Escalated runs waiting for a human", ("tenant",)),
    "midwatch_escalation_oldest_waiting_seconds": ("Time the oldest escalated run has waited", ("tenant",)),
    "midwatch_approvals_waiting": ("Pending approval requests", ("tenant",)),
    "midwatch_approval_oldest_waiting_seconds": ("Age of the oldest pending approval request", ("tenant",)),
    "midwatch_approvals_overdue": ("Pending approvals past their expiry (the scheduler should expire them)",
                                   ("tenant",)),
    "midwatch_breaker_state": ("Circuit breaker per tenant and host: 0 closed, 1 half-open, 2 open",
                               ("tenant", "host")),
    "midwatch_budget_limit": ("A budget limit in its unit (USD, tokens, calls, runs, concurrent runs)",
                              ("tenant", "agent", "metric", "period")),
    "midwatch_budget_used": ("Used this period", ("tenant", "agent", "metric", "period")),
    "midwatch_budget_reserved": ("Reserved (held by calls in flight) this period",
                                 ("tenant", "agent", "metric", "period")),
    "midwatch_secret_age_seconds": ("Time since a secret with a rotation policy was last rotated",
                                    ("tenant", "secret")),
    "midwatch_secret_rotation_max_age_seconds": ("The secret's rotation policy (max age)", ("tenant", "secret")),
    "midwatch_webhook_deliveries_pending": ("Webhook deliveries waiting to be sent or retried", ("tenant",)),
    "midwatch_webhook_deliveries_retrying": ("Pending webhook deliveries whose last attempt failed",
                                             ("tenant",)),
    "midwatch_webhook_deliveries_failed_recent": ("Webhook deliveries given up in the last hour", ("tenant",)),
    "midwatch_agent_runs": ("Finished runs per agent and outcome over the window (24h, 7d)",
                            ("tenant", "agent", "outcome", "window")),
    "midwatch_agent_cost_usd": ("Spend of finished runs over the window", ("tenant", "agent", "window")),
    "midwatch_agent_success_ratio": ("Measured success: succeeded / finished runs (cancelled excluded)",
                                     ("tenant", "agent", "window")),
    "midwatch_agent_projected_success_ratio": ("Compound projection: product of measured per-step success",
                                               ("tenant", "agent", "window")),
    "midwatch_agent_slo_ratio": ("The agent's SLO (objective.slo.success_rate of its latest spec)",
                                 ("tenant", "agent")),
    "midwatch_agent_step_success_ratio": ("Measured success of one step of an agent",
                                          ("tenant", "agent", "step", "window")),
    "midwatch_agent_retries": ("Step retries of an agent over the window", ("tenant", "agent", "window")),
    "midwatch_agent_open_incident": ("1 while the agent's last outcome was a failure not yet followed by a "
                                     "success", ("tenant", "agent")),
    "midwatch_agent_mttr_seconds": ("Mean time from an agent's first failure to its next success",
                                    ("tenant", "agent")),
    "midwatch_workers_alive": ("Worker processes with a fresh heartbeat", ()),
    "midwatch_schedulers_alive": ("Scheduler processes with a fresh heartbeat", ()),
    "midwatch_heartbeat_age_seconds": ("Age of the newest heartbeat per process kind", ("kind",)),
    "midwatch_metrics_snapshot_ok": ("1 if the last database snapshot for these gauges succeeded", ()),
    "midwatch_metrics_snapshot_age_seconds": ("Age of the database snapshot these gauges show", ()),
    "midwatch_metrics_snapshot_duration_seconds": ("Time the last database snapshot took", ()),
}


def _agent(agent: str | None) -> str:
    return agent or ""


def _category(category: str | None) -> str:
    if not category:
        return ""
    return category if category in _CATEGORIES else "internal"


def _provider(provider: str) -> str:
    return provider if provider in _PROVIDERS else "other"


def run_submitted(tenant: str, agent: str) -> None:
    """A run was accepted (call after the submitting transaction commits; not for an idempotent replay)."""
    RUNS_SUBMITTED.labels(tenant, _agent(agent)).inc()


def run_started(tenant: str, agent: str, waited_s: float) -> None:
    """A run started for the first time, ``waited_s`` after it was submitted (time to start)."""
    RUNS_STARTED.labels(tenant, _agent(agent)).inc()
    TIME_TO_START.labels(tenant).observe(max(0.0, waited_s))


def run_finished(tenant: str, agent: str, state: str, category: str | None = None) -> None:
    """A run reached a final state (call once, after the finishing commit)."""
    RUNS_FINISHED.labels(tenant, _agent(agent), state if state in RUN_STATES else "other",
                         _category(category)).inc()


def step_finished(tenant: str, agent: str, *, ok: bool, category: str | None = None, seconds: float = 0.0,
                  retries: int = 0) -> None:
    """One step outcome of one item, after its retries: ``ok``, or failed with ``category``; ``seconds`` of
    wall time including the checkpoint; ``retries`` attempts beyond the first."""
    agent = _agent(agent)
    retries = max(0, retries)
    outcome, attempts, duration = _step_series(tenant, agent, ok)
    outcome.inc()
    attempts.inc(1 + retries)
    if retries:
        STEP_RETRIES.labels(tenant, agent).inc(retries)
    if not ok:
        STEP_FAILURES.labels(tenant, agent, _category(category) or "internal").inc()
    duration.observe(max(0.0, seconds))


@functools.lru_cache(maxsize=4096)
def _step_series(tenant: str, agent: str, ok: bool) -> tuple[Any, Any, Any]:
    """The three series every step moves, looked up once per (tenant, agent, outcome) instead of three
    ``labels()`` calls (a lock and a tuple of label values each) per step. A series evicted from this cache
    is looked up again: ``labels()`` returns the same child."""
    return (STEPS.labels(tenant, agent, "succeeded" if ok else "failed"), STEP_ATTEMPTS.labels(tenant, agent),
            STEP_SECONDS.labels(tenant, agent))


def model_call(tenant: str, agent: str, *, provider: str, ok: bool, seconds: float = 0.0, input_tokens: int = 0,
               output_tokens: int = 0, cost_usd: Decimal | float = 0) -> None:
    """One model call (``provider``: sandbox, openai, anthropic, remote) with its usage and cost."""
    agent, provider = _agent(agent), _provider(provider)
    MODEL_CALLS.labels(tenant, agent, provider, "ok" if ok else "failed").inc()
    MODEL_SECONDS.labels(provider).observe(max(0.0, seconds))
    if input_tokens:
        MODEL_TOKENS.labels(tenant, agent, provider, "input").inc(input_tokens)
    if output_tokens:
        MODEL_TOKENS.labels(tenant, agent, provider, "output").inc(output_tokens)
    if cost_usd:
        MODEL_COST.labels(tenant, agent).inc(float(cost_usd))


def lease_stolen(tenant: str) -> None:
    """This worker took over a run whose previous owner's lease had expired (``crash_count`` went up)."""
    LEASE_STEALS.labels(tenant).inc()


def lease_lost(tenant: str) -> None:
    """This worker found its lease taken by another (a fenced write raised ``LeaseLost``)."""
    LEASES_LOST.labels(tenant).inc()


def sweeper_recovered(tenant: str, count: int = 1) -> None:
    """The sweeper re-enqueued ``count`` stranded runs of ``tenant``."""
    if count:
        SWEEPER_RECOVERIES.labels(tenant).inc(count)


def approvals_expired(tenant: str, count: int = 1) -> None:
    """``count`` approvals of ``tenant`` expired without a decision."""
    if count:
        APPROVALS_EXPIRED.labels(tenant).inc(count)


def webhook_attempt(tenant: str, event_type: str, outcome: str) -> None:
    """One webhook delivery attempt: ``delivered``, ``retry`` (will be retried) or ``failed`` (given up)."""
    WEBHOOK_DELIVERIES.labels(tenant, event_type[:64], outcome if outcome in _WEBHOOK_OUTCOMES else "failed").inc()


def heartbeat(kind: str, at: float) -> None:
    """This process published its heartbeat (``kind``: worker or scheduler) at unix time ``at``."""
    HEARTBEAT.labels(kind).set(at)


def _set_build_info() -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        BUILD_INFO.labels(version("midwatch")).set(1)
    except PackageNotFoundError:  # pragma: no cover - a bare source tree
        BUILD_INFO.labels("0").set(1)


_set_build_info()
