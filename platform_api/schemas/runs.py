"""Wire types of runs, items, the decision timeline and the sandbox records (/v1/runs, /v1/sandbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from platform_api.schemas.common import In, Money, Out, PublicText

__all__ = ["DecisionEventOut", "RunItemOut", "RunOut", "SandboxRecordOut", "SubmitRun"]



class SubmitRun(In):
    input: Any = Field(None, description="the run's input (any JSON); for batch agents, shared by all items")
    items: list[Any] | None = Field(None, description="batch items, required iff the spec has input.items: true")
    priority: int = Field(3, ge=1, le=5, description="1 (most urgent) to 5; orders runs within your tenant only "
                                                     "(part of the Idempotency-Key's request)")
    version: int | None = Field(None, ge=1, le=2**31 - 1,
                                description="the agent version to run (default: the latest; for an agent that "
                                            "requires a rehearsal, the newest whose rehearsal passed)")


class RunOut(Out):
    id: str
    agent_name: str
    agent_version: int
    state: str
    reason: PublicText
    failure_category: str | None
    is_batch: bool
    items_total: int
    items_done: int
    items_failed: int
    steps_done: int
    llm_calls: int
    cost_usd: Money
    idempotency_key: str | None
    priority: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    cancel_requested: bool


class RunItemOut(Out):
    item_index: int
    state: str
    reason: PublicText
    failure_category: str | None
    steps_used: int
    input: Any


class DecisionEventOut(Out):
    seq: int
    kind: str
    item_index: int | None
    step_index: int | None
    step_id: str | None
    considered: Any
    chosen: str | None
    why: PublicText
    verdicts: Any
    failure_category: str | None
    cost_usd: Money
    latency_ms: float
    input_hash: str | None
    output_hash: str | None
    prev_hash: str
    hash: str
    created_at: datetime
    trace_id: str | None = Field(None, description="the OpenTelemetry trace it was written under, if tracing is on")


class SandboxRecordOut(Out):
    id: int = Field(description="1, 2, ... per tenant")
    idempotency_key: str
    args: Any
    created_at: datetime
