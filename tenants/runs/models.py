"""Tables: runs, run_items, step_checkpoints, side_effects, decision_events.

Checkpoints are keyed by position ``(run_id, item_index, step_index)`` and carry the step id,
which the engine checks against the pinned spec on resume.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tenants.kit.db import Base
from tenants.kit.types import JsonType, UtcDateTime

__all__ = ["SUSPENDED_REASON", "TERMINAL_STATES", "DecisionEvent", "LoopCall", "Run", "RunItem", "SideEffect",
           "StepCheckpoint"]

RUN_STATES = (
    "queued",
    "running",
    "waiting_approval",
    "suspended",
    "succeeded",
    "failed",
    "cancelled",
    "escalated",
    "budget_exhausted",
)
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "escalated", "budget_exhausted"})
SUSPENDED_REASON = "tenant suspended by the operator"
"""The reason a run of a suspended tenant shows (state ``suspended``) until the tenant is resumed."""


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        # Partial: only keyed runs, and no query that does not name the key can read a tenant's runs through it
        Index("uq_runs_tenant_idempotency_key", "tenant_id", "idempotency_key", unique=True,
              postgresql_where=text("idempotency_key IS NOT NULL"), sqlite_where=text("idempotency_key IS NOT NULL")),
        Index("ix_runs_tenant_created", "tenant_id", "id"),
        Index("ix_runs_state_lease", "state", "lease_until"),
        # The dispatch queue: runnable runs per (tenant, agent) in priority order (see tenants.scheduling).
        Index("ix_runs_runnable", "tenant_id", "agent_name", "priority", "runnable_at", "id",
              postgresql_where=text("runnable_at IS NOT NULL"), sqlite_where=text("runnable_at IS NOT NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    agent_name: Mapped[str] = mapped_column(String(64))
    agent_version_id: Mapped[str] = mapped_column(ForeignKey("agent_versions.id"))
    agent_version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(24), default="queued")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_category: Mapped[str | None] = mapped_column(String(16), nullable=True)
    input: Mapped[Any] = mapped_column(JsonType, nullable=True)
    is_batch: Mapped[bool] = mapped_column(Boolean, default=False)
    items_total: Mapped[int] = mapped_column(Integer, default=1)
    items_done: Mapped[int] = mapped_column(Integer, default=0)
    items_failed: Mapped[int] = mapped_column(Integer, default=0)
    steps_done: Mapped[int] = mapped_column(Integer, default=0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), default=Decimal(0))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Lease: the worker that owns the run, until when, and the fencing token every write checks.
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    fence: Mapped[int] = mapped_column(BigInteger, default=0)
    crash_count: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    suspend_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # Scheduling: a run can be claimed by a worker when runnable_at is set and due; priority 1 (most
    # urgent) .. 5 orders runs within their tenant only. wake_at: when the sweeper re-sends a wake-up.
    priority: Mapped[int] = mapped_column(SmallInteger, default=3, server_default=text("3"))
    runnable_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    wake_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # The decision log's chain head (newest seq and hash), kept on the run row by every fenced write.
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    event_head: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The head's seal (tenants.audit.seals): an HMAC a database-only attacker cannot forge, written with it.
    event_seal: Mapped[str | None] = mapped_column(String(96), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class RunItem(Base):
    __tablename__ = "run_items"
    __table_args__ = (Index("ix_run_items_state", "run_id", "state", "item_index"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    input: Mapped[Any] = mapped_column(JsonType, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|done|failed|escalated|skipped
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_category: Mapped[str | None] = mapped_column(String(16), nullable=True)
    steps_used: Mapped[int] = mapped_column(Integer, default=0)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    # The attempt number the next call of the item's current step starts at (after a deferred retry).
    next_attempt: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class StepCheckpoint(Base):
    __tablename__ = "step_checkpoints"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    step_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # succeeded | skipped
    output: Mapped[Any] = mapped_column(JsonType, nullable=True)
    output_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    latency_ms: Mapped[float] = mapped_column(Numeric(12, 3), default=0)
    fence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The item's totals up to and including this step (an agent step counts 1 + its tool calls): a run resumed
    # after a crash or a wait keeps enforcing max_steps / max_llm_calls from here. NULL on older rows.
    steps_used: Mapped[int | None] = mapped_column(Integer, nullable=True)
    llm_calls: Mapped[int | None] = mapped_column(Integer, nullable=True)


class LoopCall(Base):
    """A checkpoint inside an ``agent`` step's bounded loop: a model turn, or one of the tool calls it asked for.

    Keyed by ``(iteration, call_index)``: ``call_index`` 0 is the model turn (``message`` is the assistant
    message as JSON, ``model`` the alias that answered, ``llm_calls`` the model calls it took and ``cost_usd``
    what the budget ledger charged for them, in the same commit); 1..n are its tool calls in order (the
    provider's ``call_id``, the ``tool``, redacted ``args``, ``message`` the exact tool-result text the model
    got, ``is_error``, the side effect's ``idempotency_key``). Replaying ``message`` in key order rebuilds the
    conversation exactly; a checkpointed call is never made again.
    """

    __tablename__ = "loop_calls"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    iteration: Mapped[int] = mapped_column(Integer, primary_key=True)  # the model turn, 1-based
    call_index: Mapped[int] = mapped_column(Integer, primary_key=True, server_default=text("0"))
    tenant_id: Mapped[str] = mapped_column(String(40))
    call_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    tool: Mapped[str | None] = mapped_column(String(120), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    args: Mapped[Any] = mapped_column(JsonType, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_error: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    idempotency_key: Mapped[str | None] = mapped_column(String(120), nullable=True)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), default=Decimal(0), server_default=text("0"))
    llm_calls: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    fence: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class SideEffect(Base):
    """The side-effect ledger: intent before the call, outcome after, keyed by the idempotency key."""

    __tablename__ = "side_effects"
    __table_args__ = (Index("ix_side_effects_run", "run_id", "item_index", "step_index"),)

    idempotency_key: Mapped[str] = mapped_column(String(120), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    item_index: Mapped[int] = mapped_column(Integer)
    step_index: Mapped[int] = mapped_column(Integer)
    step_id: Mapped[str] = mapped_column(String(64))
    tool: Mapped[str] = mapped_column(String(120))
    state: Mapped[str] = mapped_column(String(16))  # intent | succeeded | failed | unknown
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    outcome: Mapped[Any] = mapped_column(JsonType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class DecisionEvent(Base):
    """Append-only, hash-chained per run: what was considered, what was chosen, and why."""

    __tablename__ = "decision_events"
    __table_args__ = (UniqueConstraint("run_id", "seq", name="uq_decision_events_run_seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))  # run.started | step.succeeded | step.failed | ...
    item_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    step_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    considered: Mapped[Any] = mapped_column(JsonType, nullable=True)
    chosen: Mapped[str | None] = mapped_column(Text, nullable=True)
    why: Mapped[str | None] = mapped_column(Text, nullable=True)
    verdicts: Mapped[Any] = mapped_column(JsonType, nullable=True)
    failure_category: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), default=Decimal(0))
    latency_ms: Mapped[float] = mapped_column(Numeric(12, 3), default=0)
    attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)  # step events: calls made, retries included
    input_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    output_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The trace the event was written under (OpenTelemetry), outside the hash: one id from an alert's exemplar
    # or a log line to the decision, and back.
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
