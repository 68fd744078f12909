"""Budget rules: reserve before spending, reconcile after, release on failure; runs charged when accepted.

How the engine uses this module (every call takes the caller's session; the caller commits)::

    # before a priced call (LLM step), in the transaction that precedes the call:
    check_priced(session, tenant_id, agent, model=alias, price=price_or_None)   # fail closed
    res = reserve_many(session, tenant_id, agent,
                       {"cost_usd": worst_case_usd, "tokens": max_tokens, "llm_calls": 1},
                       reservation_id=f"{run_id}:{item}:{step}:{attempt}", run_id=run_id)
    # commit, then make the call; BudgetExhausted → run state ``budget_exhausted``, reason = str(exc)
    # after the call, in the same commit as the checkpoint:
    settled = reconcile(session, tenant_id, res.id, {"cost_usd": actual_usd, "tokens": used_tokens,
                                                     "llm_calls": 1})
    # on failure of the call (no spend happened): release(session, tenant_id, res.id)
    # res.events / settled.events: threshold crossings to turn into webhooks after commit.

    # runs per period, when a run is accepted (one conditional UPDATE per limit; nothing without one):
    charge_run(session, tenant_id, agent, now=now)

    # the scheduler, every sweep: release_expired(session) (crashed workers' reservations).

Concurrent runs are not held here: a ``concurrent_runs`` limit (the tenant's, or one agent's) is mirrored
into tenants.scheduling as a cap, which the fair claim enforces exactly, so a capped tenant's surplus
waits in the queue without re-delivery.

Errors: :class:`~tenants.kit.errors.BudgetExhausted` (``reason`` ``limit_reached`` or
``model_unpriced``), :class:`~tenants.kit.errors.InvalidInput`, :class:`~tenants.kit.errors.NotFound`,
:class:`~tenants.kit.errors.IdempotencyConflict`.

Why over 500 lines: the ledger's rules (periods, limits, reserve, reconcile, release, thresholds) are
one invariant (used + reserved never passes a limit unnoticed) and are read together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from tenants.budgets.models import (
    AMOUNT_SCALE,
    MAX_AMOUNT,
    PERIOD_METRICS,
    Budget,
    BudgetEvent,
    BudgetLimit,
    Metric,
    Period,
)
from tenants.budgets.repository import BudgetRepository, LedgerRow, PlatformBudgetRepository
from tenants.kit.errors import BudgetExhausted, IdempotencyConflict, InvalidInput, NotFound
from tenants.kit.ids import utcnow
from tenants.scheduling.repository import ScheduleRepository
from tenants.webhooks.service import emit

__all__ = [
    "ALL_AGENTS",
    "COUNTER_METRICS",
    "DEFAULT_RESERVATION_TTL_S",
    "LIMITS_CACHE_S",
    "THRESHOLDS",
    "ExpiredReleased",
    "LimitSpec",
    "LimitUsage",
    "Reservation",
    "Settlement",
    "ThresholdEvent",
    "charge_run",
    "check_priced",
    "limits_snapshot",
    "money_budget_applies",
    "overview",
    "period_window",
    "reconcile",
    "release",
    "release_expired",
    "reserve",
    "reserve_many",
    "set_limits",
    "to_amount",
    "usage_by_tenant",
]

COUNTER_METRICS: tuple[str, ...] = ("tokens", "llm_calls", "runs", "concurrent_runs")  # whole numbers
THRESHOLDS: tuple[int, ...] = (50, 80, 100)  # percent of a limit; each recorded once per period
DEFAULT_RESERVATION_TTL_S = 900.0  # longer than any single priced call may take
# How long an API process trusts its copy of a tenant's limits: a new or changed runs-per-period limit takes
# effect on other API processes within this bound (at once on the process that set it).
LIMITS_CACHE_S = 2.0
ALL_AGENTS = "*"
_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)
_NO_PERIOD = "none"  # concurrent_runs limits are not per period


# ---- values ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ThresholdEvent:
    """A limit crossed 50, 80 or 100 % in a period (recorded once; emit a webhook after commit)."""

    id: int
    budget_id: str
    agent: str
    metric: str
    period: str
    period_start: datetime
    threshold: int
    limit: Decimal
    committed: Decimal
    created_at: datetime

    @classmethod
    def of(cls, event: BudgetEvent) -> ThresholdEvent:
        return cls(id=event.id, budget_id=event.budget_id, agent=event.agent, metric=event.metric,
                   period=event.period, period_start=event.period_start, threshold=event.threshold,
                   limit=event.limit, committed=event.committed, created_at=event.created_at)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Amounts held for ``id`` until :func:`reconcile` or :func:`release` (or expiry)."""

    id: str
    amounts: dict[str, Decimal]
    expires_at: datetime
    budget_ids: dict[str, list[str]]  # metric → ledger rows holding it (empty: no limit applies)
    events: list[ThresholdEvent] = field(default_factory=list)
    replayed: bool = False  # True when ``id`` had been reserved before: nothing new was held


@dataclass(frozen=True, slots=True)
class Settlement:
    """What :func:`reconcile` or :func:`release` did; ``state == "noop"`` for a repeated call."""

    id: str
    state: Literal["settled", "released", "noop"]
    charged: dict[str, Decimal] = field(default_factory=dict)
    overspend: dict[str, Decimal] = field(default_factory=dict)
    events: list[ThresholdEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ExpiredReleased:
    reservations: int


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A limit as the operator sets it (validated by :func:`set_limits`)."""

    metric: str
    limit: Decimal | int | str
    period: str | None = None
    timezone: str = "UTC"
    agent: str | None = None


@dataclass(frozen=True, slots=True)
class LimitUsage:
    """A configured limit with its current period's figures (zeros when the period is unused)."""

    agent: str
    metric: str
    period: str
    timezone: str
    limit: Decimal
    used: Decimal
    reserved: Decimal
    overspend: Decimal
    period_start: datetime | None
    period_end: datetime | None

    @property
    def remaining(self) -> Decimal:
        """Room left; never negative even after an overspend (the excess is in ``overspend``)."""
        return max(Decimal(0), self.limit - self.used - self.reserved)

    @property
    def used_rate(self) -> float | None:
        """Used ÷ limit (None for a zero limit)."""
        return float(self.used / self.limit) if self.limit > 0 else None

    @property
    def committed_rate(self) -> float | None:
        """(Used + reserved) ÷ limit: what the threshold events (50/80/100 %) measure."""
        return float((self.used + self.reserved) / self.limit) if self.limit > 0 else None


# ---- pure helpers ---------------------------------------------------------------------------
def period_window(period: str, timezone: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC start and end of the calendar ``day``/``month`` containing ``now`` in ``timezone``.

    Calendar-aligned in the zone (so DST days are 23 or 25 hours long); a local midnight that does
    not exist resolves, per zoneinfo's ``fold=0``, to the instant the clocks jumped.
    """
    zone = _zone(timezone)
    local = now.astimezone(zone)
    if period == "day":
        start = datetime(local.year, local.month, local.day, tzinfo=zone)
        nxt = start.date() + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)
    elif period == "month":
        start = datetime(local.year, local.month, 1, tzinfo=zone)
        end = datetime(local.year + local.month // 12, local.month % 12 + 1, 1, tzinfo=zone)
    else:
        raise InvalidInput(f"unknown budget period {period!r} (use 'day' or 'month')")
    return start.astimezone(UTC), end.astimezone(UTC)


def to_amount(metric: str, value: Decimal | int | str) -> Decimal:
    """An exact, non-negative amount for ``metric``: whole numbers for counters, 10⁻⁸ USD for money.

    Money with more than 8 decimal places is rounded *up* (a reservation is a worst case and an
    actual charge is never under-counted). Floats are refused: they cannot represent 0.1.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidInput(f"{metric}: amounts are decimal strings or integers, not {type(value).__name__}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidInput(f"{metric}: {value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidInput(f"{metric}: amounts must be finite and not negative (got {value})")
    if amount > MAX_AMOUNT:
        raise InvalidInput(f"{metric}: {value} is above the largest amount ({MAX_AMOUNT})")
    if metric in COUNTER_METRICS:
        if amount != amount.to_integral_value():
            raise InvalidInput(f"{metric}: must be a whole number (got {value})")
        return amount.quantize(_QUANTUM)
    return amount.quantize(_QUANTUM, rounding=ROUND_CEILING)


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown IANA timezone {timezone!r}") from None


def _agent(agent: str | None) -> str:
    return agent or ALL_AGENTS


def _crossed(before: Decimal, after: Decimal, limit: Decimal) -> list[int]:
    """Thresholds passed going from ``before`` to ``after`` committed (exact: compares 100·x to t·limit)."""
    if limit <= 0 or after <= before:
        return []
    return [t for t in THRESHOLDS if before * 100 < t * limit <= after * 100]


def _record_crossings(repo: BudgetRepository, row: LedgerRow, before: Decimal, now: datetime
                      ) -> list[ThresholdEvent]:
    events = []
    for threshold in _crossed(before, row.committed, row.limit):
        event = repo.record_event(row.id, threshold, row.committed, now)
        if event is not None:
            events.append(ThresholdEvent.of(event))
            # recorded once per budget row and threshold; the webhook goes out only if this commit lands
            emit(repo.session, repo.tenant_id, "budget.threshold", {
                "budget": event.budget_id, "agent": event.agent, "metric": event.metric, "period": event.period,
                "percent": threshold, "used": str(event.committed), "limit": str(event.limit)})
    return events


def _exhausted(repo: BudgetRepository, limit: BudgetLimit, budget_id: str, metric: str, amount: Decimal
               ) -> BudgetExhausted:
    ledger = repo.snapshot(budget_id)
    assert ledger is not None
    scope = "the tenant" if limit.agent == ALL_AGENTS else f"agent {limit.agent!r}"
    local_start = ledger.period_start.astimezone(_zone(ledger.timezone))
    detail = (f"{metric} budget exhausted for {scope}: limit {_fmt(ledger.limit)} per {ledger.period} "
              f"(period from {local_start.isoformat()} {ledger.timezone}), used {_fmt(ledger.used)}, "
              f"reserved {_fmt(ledger.reserved)}, requested {_fmt(amount)}")
    return BudgetExhausted(detail, reason="limit_reached", metric=metric, agent=limit.agent,
                           period=ledger.period, period_start=ledger.period_start.isoformat(),
                           limit=_fmt(ledger.limit), used=_fmt(ledger.used), reserved=_fmt(ledger.reserved),
                           requested=_fmt(amount))


def _fmt(value: Decimal) -> str:
    return format(value.normalize(), "f")


# ---- limits (operator) ----------------------------------------------------------------------
def set_limits(session: Session, tenant_id: str, specs: Sequence[LimitSpec], *, now: datetime | None = None
               ) -> list[BudgetLimit]:
    """Replace the tenant's limits with ``specs``. Current periods take a changed limit at once.

    Changing a limit's timezone starts a fresh ledger row (the period boundaries moved).
    """
    now = now or utcnow()
    rows: list[dict[str, object]] = []
    seen: set[tuple[str, str, str]] = set()
    for spec in specs:
        if spec.metric not in get_args(Metric):
            raise InvalidInput(f"unknown budget metric {spec.metric!r} (one of {', '.join(get_args(Metric))})")
        if spec.metric == "concurrent_runs":
            if spec.period is not None:
                raise InvalidInput("concurrent_runs is not per period: leave period out")
            period, timezone = _NO_PERIOD, "UTC"
        else:
            if spec.period not in get_args(Period):
                raise InvalidInput(f"{spec.metric}: period must be 'day' or 'month'")
            period, timezone = str(spec.period), spec.timezone
            _zone(timezone)
        agent = _agent(spec.agent)
        key = (agent, spec.metric, period)
        if key in seen:
            raise InvalidInput(f"two limits for {spec.metric} per {period} of agent {agent!r}")
        seen.add(key)
        rows.append({"agent": agent, "metric": spec.metric, "period": period, "timezone": timezone,
                     "limit": to_amount(spec.metric, spec.limit)})
    repo = BudgetRepository(session, tenant_id)
    repo.replace_limits(rows, now)
    caps = {str(r["agent"]): int(r["limit"]) for r in rows if r["metric"] == "concurrent_runs"}  # type: ignore[call-overload]
    ScheduleRepository(session, tenant_id).set_caps(caps.pop(ALL_AGENTS, None), caps)
    _LIMITS.pop(tenant_id, None)
    return list(repo.limits())


def limits_snapshot(session: Session, tenant_id: str) -> list[dict[str, str]]:
    """The tenant's configured limits as plain JSON (amounts as strings), e.g. for an audit record's before/after."""
    return [{"agent": limit.agent, "metric": limit.metric, "period": limit.period, "timezone": limit.timezone,
             "limit": _fmt(limit.limit)} for limit in BudgetRepository(session, tenant_id).limits()]


def overview(session: Session, tenant_id: str, *, now: datetime | None = None) -> list[LimitUsage]:
    """Every limit of the tenant with its current period's use (read-only: creates no rows)."""
    now = now or utcnow()
    repo = BudgetRepository(session, tenant_id)
    running = _running(session, tenant_id)
    zero = Decimal(0).quantize(_QUANTUM)
    out = []
    for limit in repo.limits():
        if limit.metric == "concurrent_runs":  # runs holding a lease now (tenants.scheduling)
            out.append(LimitUsage(agent=limit.agent, metric=limit.metric, period=limit.period,
                                  timezone=limit.timezone, limit=limit.limit,
                                  used=Decimal(running.get(limit.agent, 0)).quantize(_QUANTUM), reserved=zero,
                                  overspend=zero, period_start=None, period_end=None))
            continue
        start, end = period_window(limit.period, limit.timezone, now)
        ledger: Budget | None = repo.ledger(limit.agent, limit.metric, limit.period, start)
        used, reserved = (ledger.used, ledger.reserved) if ledger else (zero, zero)
        out.append(LimitUsage(
            agent=limit.agent, metric=limit.metric, period=limit.period, timezone=limit.timezone,
            limit=limit.limit, used=used, reserved=reserved,
            overspend=ledger.overspend if ledger else zero, period_start=start, period_end=end,
        ))
    return out


def _running(session: Session, tenant_id: str) -> dict[str, int]:
    """Runs holding a lease: the tenant's (``*``) and each agent's."""
    schedule = ScheduleRepository(session, tenant_id)
    row = schedule.get()
    return {**schedule.agent_running(), ALL_AGENTS: row.running if row else 0}


def usage_by_tenant(session: Session, *, now: datetime | None = None) -> dict[str, list[LimitUsage]]:
    """Every tenant's limits with their current period's use, as :func:`overview` gives them, in two queries
    (the operator dashboard; read-only, creates no rows)."""
    now = now or utcnow()
    repo = PlatformBudgetRepository(session)
    ledgers = {(b.tenant_id, b.agent, b.metric, b.period, b.timezone, b.period_start): b
               for b in repo.ledgers_ending_after(now)}
    zero = Decimal(0).quantize(_QUANTUM)
    out: dict[str, list[LimitUsage]] = {}
    running = repo.running_counts()
    for limit in repo.all_limits():
        if limit.metric == "concurrent_runs":
            used = Decimal(running.get((limit.tenant_id, limit.agent), 0)).quantize(_QUANTUM)
            out.setdefault(limit.tenant_id, []).append(LimitUsage(
                agent=limit.agent, metric=limit.metric, period=limit.period, timezone=limit.timezone,
                limit=limit.limit, used=used, reserved=zero, overspend=zero, period_start=None, period_end=None))
            continue
        start, end = period_window(limit.period, limit.timezone, now)
        ledger = ledgers.get((limit.tenant_id, limit.agent, limit.metric, limit.period, limit.timezone, start))
        used, reserved = (ledger.used, ledger.reserved) if ledger else (zero, zero)
        out.setdefault(limit.tenant_id, []).append(LimitUsage(
            agent=limit.agent, metric=limit.metric, period=limit.period, timezone=limit.timezone,
            limit=limit.limit, used=used, reserved=reserved, overspend=ledger.overspend if ledger else zero,
            period_start=start, period_end=end))
    return out


# ---- reservations (engine) ------------------------------------------------------------------
def money_budget_applies(session: Session, tenant_id: str, agent: str | None) -> bool:
    """Whether a cost_usd limit covers this agent (its own or the tenant's)."""
    repo = BudgetRepository(session, tenant_id)
    return bool(repo.limits(metrics=["cost_usd"], agents=sorted({_agent(agent), ALL_AGENTS})))


def check_priced(session: Session, tenant_id: str, agent: str | None, *, model: str,
                 price: Decimal | None) -> None:
    """Fail closed: an unpriced model is not free. Raises BudgetExhausted (reason ``model_unpriced``)
    when ``price`` is None and a money budget applies; without a money budget any model may run."""
    if price is None and money_budget_applies(session, tenant_id, agent):
        raise BudgetExhausted(
            f"model {model!r} has no price, and a cost_usd budget applies to agent {_agent(agent)!r}: "
            "an unpriced model cannot be reserved against a money budget (set its price)",
            reason="model_unpriced", metric="cost_usd", model=model)


def reserve(session: Session, tenant_id: str, agent: str | None, metric: str, amount: Decimal | int | str,
            reservation_id: str, *, run_id: str | None = None, now: datetime | None = None,
            ttl_s: float = DEFAULT_RESERVATION_TTL_S) -> Reservation:
    """Hold ``amount`` of ``metric`` against every limit that applies; see :func:`reserve_many`."""
    return reserve_many(session, tenant_id, agent, {metric: amount}, reservation_id, run_id=run_id, now=now,
                        ttl_s=ttl_s)


def reserve_many(session: Session, tenant_id: str, agent: str | None, amounts: Mapping[str, Decimal | int | str],
                 reservation_id: str, *, run_id: str | None = None, now: datetime | None = None,
                 ttl_s: float = DEFAULT_RESERVATION_TTL_S) -> Reservation:
    """Hold every amount against every limit that applies (the agent's and the tenant's, per day
    and per month), all or nothing, or raise BudgetExhausted naming the metric, limit, use and period.

    Each hold is one conditional UPDATE (``used + reserved + amount <= limit``); the whole call runs
    in a SAVEPOINT, so when one hold fails the earlier ones are undone even if the caller catches
    the error and commits its transaction. A metric with no limit is allowed (nothing is held).
    Calling again with the same ``reservation_id`` holds nothing more and returns the first result
    (``replayed=True``); different amounts under the same id raise IdempotencyConflict.
    """
    now = now or utcnow()
    if not reservation_id or len(reservation_id) > 160:
        raise InvalidInput("reservation_id must be 1-160 characters")
    if not amounts:
        raise InvalidInput("nothing to reserve")
    wanted: dict[str, Decimal] = {}
    for metric, value in amounts.items():
        if metric not in PERIOD_METRICS:
            raise InvalidInput(f"cannot reserve {metric!r} (one of {', '.join(PERIOD_METRICS)}); "
                               "concurrent runs are capped by the scheduler")
        wanted[metric] = to_amount(metric, value)
    agent_name = _agent(agent)
    repo = BudgetRepository(session, tenant_id)
    if repo.reservation_lines(reservation_id):
        return _replay(repo, reservation_id, wanted)
    expires_at = now + timedelta(seconds=ttl_s)
    limits = repo.limits(metrics=sorted(wanted), agents=sorted({agent_name, ALL_AGENTS}))
    held: dict[str, list[str]] = {m: [] for m in wanted}
    events: list[ThresholdEvent] = []
    try:
        with session.begin_nested():
            for metric in sorted(wanted):
                if not repo.add_reservation(reservation_id, metric, agent=agent_name, run_id=run_id,
                                            amount=wanted[metric], now=now, expires_at=expires_at):
                    raise _AlreadyReserved
            # Limits come sorted by (metric, agent, period): every transaction locks ledger rows in
            # the same order, so concurrent multi-row reservations cannot deadlock.
            for limit in limits:
                amount = wanted[limit.metric]
                start, end = period_window(limit.period, limit.timezone, now)
                budget_id = repo.ensure_ledger(limit, start, end, now)
                row = repo.try_reserve(budget_id, amount)
                if row is None:
                    raise _exhausted(repo, limit, budget_id, limit.metric, amount)
                held[limit.metric].append(budget_id)
                events += _record_crossings(repo, row, row.committed - amount, now)
            for metric, budget_ids in held.items():
                repo.set_budget_ids(reservation_id, metric, budget_ids)
    except _AlreadyReserved:
        return _replay(repo, reservation_id, wanted)  # a concurrent call with the same id won
    return Reservation(id=reservation_id, amounts=wanted, expires_at=expires_at, budget_ids=held, events=events)


class _AlreadyReserved(Exception):
    pass


def _replay(repo: BudgetRepository, reservation_id: str, wanted: Mapping[str, Decimal]) -> Reservation:
    lines = repo.reservation_lines(reservation_id)
    stored = {line.metric: line.amount for line in lines}
    if stored != dict(wanted):
        raise IdempotencyConflict(f"reservation {reservation_id!r} exists with other amounts",
                                  reservation_id=reservation_id)
    return Reservation(id=reservation_id, amounts=stored, expires_at=max(line.expires_at for line in lines),
                       budget_ids={line.metric: list(line.budget_ids or []) for line in lines}, replayed=True)


@dataclass(frozen=True, slots=True)
class _Limit:
    agent: str
    metric: str
    period: str
    timezone: str
    limit: Decimal


_LIMITS: dict[str, tuple[float, tuple[_Limit, ...]]] = {}  # tenant id -> (read at, limits)
_LIMITS_LOCK = threading.Lock()


def _cached_limits(session: Session, tenant_id: str) -> tuple[_Limit, ...]:
    """The tenant's limits, read at most every :data:`LIMITS_CACHE_S` per process."""
    with _LIMITS_LOCK:
        cached = _LIMITS.get(tenant_id)
    if cached is not None and time.monotonic() - cached[0] < LIMITS_CACHE_S:
        return cached[1]
    limits = tuple(_Limit(lim.agent, lim.metric, lim.period, lim.timezone, lim.limit)
                   for lim in BudgetRepository(session, tenant_id).limits())
    with _LIMITS_LOCK:
        _LIMITS[tenant_id] = (time.monotonic(), limits)
    return limits


def charge_run(session: Session, tenant_id: str, agent: str, *, now: datetime | None = None) -> None:
    """Count one accepted run against the tenant's and the agent's ``runs`` per-period limits, or raise
    BudgetExhausted (402). One conditional UPDATE per limit that applies; nothing at all without one."""
    applicable = sorted((lim for lim in _cached_limits(session, tenant_id)
                         if lim.metric == "runs" and lim.agent in (agent, ALL_AGENTS)),
                        key=lambda lim: (lim.agent, lim.period))
    if not applicable:
        return
    now = now or utcnow()
    repo = BudgetRepository(session, tenant_id)
    one = Decimal(1).quantize(_QUANTUM)
    for lim in applicable:
        start, end = period_window(lim.period, lim.timezone, now)
        row = repo.try_charge(lim.agent, "runs", lim.period, start, one)
        if row is None:  # the period's first run creates its ledger row; or the limit is reached
            limit = next((x for x in repo.limits(metrics=["runs"], agents=[lim.agent]) if x.period == lim.period),
                         None)
            if limit is None:  # removed since it was cached
                continue
            budget_id = repo.ensure_ledger(limit, start, end, now)
            row = repo.try_charge(lim.agent, "runs", lim.period, start, one)
            if row is None:
                raise _exhausted(repo, limit, budget_id, "runs", one)
        _record_crossings(repo, row, row.committed - one, now)


def reconcile(session: Session, tenant_id: str, reservation_id: str,
              actual: Mapping[str, Decimal | int | str] | Decimal | int | str, *,
              now: datetime | None = None) -> Settlement:
    """Turn the reservation into the actual spend: ``reserved -= amount; used += actual`` on every row it held.

    ``actual`` is a mapping per metric (or one amount when the reservation has one metric); a
    metric left out is charged its reserved amount (fail safe: never under-count).

    Actual below the reservation: the difference simply becomes room again. Actual above it (a
    provider billed more than the worst case): the actual is charged anyway, because the money is
    spent, and the excess is recorded separately as ``overspend`` on the reservation and the
    ledger row. ``reserved`` never goes negative (exactly what was held is removed), a negative
    actual is refused, and the room shown to users is clamped at zero; a row pushed past its
    limit refuses every further reservation until the period rolls over.

    A reservation the scheduler already released as expired is still charged (its whole actual
    counts as overspend, since nothing was held any more). Idempotent: a second call, or a call
    after :func:`release`, does nothing and returns ``state="noop"``.
    """
    now = now or utcnow()
    repo = BudgetRepository(session, tenant_id)
    lines_now = repo.reservation_lines(reservation_id)
    if not lines_now:
        raise NotFound(f"reservation {reservation_id!r} not found")
    if isinstance(actual, Mapping):
        actuals = {m: to_amount(m, v) for m, v in actual.items()}
    else:
        if len(lines_now) != 1:
            raise InvalidInput("this reservation holds several metrics: give the actual amount per metric")
        actuals = {lines_now[0].metric: to_amount(lines_now[0].metric, actual)}
    unknown = set(actuals) - {line.metric for line in lines_now}
    if unknown:
        raise InvalidInput(f"reservation {reservation_id!r} holds no {', '.join(sorted(unknown))}")

    lines, was_held = repo.claim(reservation_id, "reserved", "settled", now), True
    if not lines:
        lines, was_held = repo.claim(reservation_id, "expired", "settled", now), False
    if not lines:
        return Settlement(id=reservation_id, state="noop")
    charged: dict[str, Decimal] = {}
    overspend: dict[str, Decimal] = {}
    events: list[ThresholdEvent] = []
    for line in lines:
        spent = actuals.get(line.metric, line.amount)
        held = line.amount if was_held else Decimal(0)
        over = max(Decimal(0), spent - held)
        repo.record_actual(reservation_id, line.metric, spent, over)
        for budget_id in sorted(line.budget_ids):
            row = repo.settle(budget_id, unreserve=held, charge=spent, overspend=over)
            if row is not None:
                events += _record_crossings(repo, row, row.committed - (spent - held), now)
        charged[line.metric] = spent
        overspend[line.metric] = over
    return Settlement(id=reservation_id, state="settled", charged=charged, overspend=overspend, events=events)


def release(session: Session, tenant_id: str, reservation_id: str, *, now: datetime | None = None) -> Settlement:
    """Give the held amounts back (the call failed before spending). Idempotent; unknown ids are a no-op."""
    return _unhold(BudgetRepository(session, tenant_id), reservation_id, "released", now or utcnow())


def _unhold(repo: BudgetRepository, reservation_id: str, to_state: str, now: datetime) -> Settlement:
    lines = repo.claim(reservation_id, "reserved", to_state, now)
    for line in lines:
        for budget_id in sorted(line.budget_ids):
            repo.settle(budget_id, unreserve=line.amount, charge=Decimal(0), overspend=Decimal(0))
    return Settlement(id=reservation_id, state="released" if lines else "noop")


def release_expired(session: Session, *, now: datetime | None = None, batch: int = 500) -> ExpiredReleased:
    """The scheduler's sweep: release reservations whose holder stopped (crashed worker).

    Safe to run in several schedulers at once: each release is a conditional state change.
    """
    now = now or utcnow()
    platform = PlatformBudgetRepository(session)
    released = 0
    for tenant_id, reservation_id in platform.expired_reservations(now, batch):
        if _unhold(BudgetRepository(session, tenant_id), reservation_id, "expired", now).state != "noop":
            released += 1
    return ExpiredReleased(reservations=released)
