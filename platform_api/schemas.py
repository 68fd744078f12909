"""Wire types of the HTTP API: strict requests (unknown fields rejected), explicit responses."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from tenants.kit.errors import scrub_reason

__all__ = [
    "AgentOut",
    "AgentVersionOut",
    "CreateKey",
    "CreateTenant",
    "DecisionEventOut",
    "IssuedKeyOut",
    "KeyOut",
    "LintOut",
    "OnboardedTenant",
    "Page",
    "PublicText",
    "RotateKey",
    "RunItemOut",
    "RunOut",
    "SandboxRecordOut",
    "SchedulingIn",
    "SchedulingOut",
    "StoredAgentOut",
    "SubmitRun",
    "TenantOut",
    "find_nul",
]

T = TypeVar("T")

# Money on the wire: a decimal string ("0.0123"), never a float and never "0E-8".
Money = Annotated[Decimal, PlainSerializer(lambda d: format(d.normalize(), "f"), return_type=str)]
# A reason or error text stored from an exception: never shown with SQL, parameters or a traceback.
PublicText = Annotated[str | None, AfterValidator(scrub_reason)]


def find_nul(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding a NUL character, else None.

    PostgreSQL cannot store NUL in text or JSONB, so such input is rejected at the edge (on every
    database, so SQLite and PostgreSQL installs answer alike). Iterative: depth is the decoder's to bound.
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, current = stack.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return where or "(body)"
        elif isinstance(current, dict):
            for key, child in current.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"{where}[{key!r}]"
                stack.append((f"{where}[{key!r}]" if where else str(key), child))
        elif isinstance(current, list | tuple):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(current))
    return None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _no_nul(self) -> _In:
        where = find_nul(dict(self))
        if where is not None:
            raise ValueError(f"{where}: text cannot contain NUL (\\u0000) characters")
        return self


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """A page of results; pass ``next_cursor`` as ``cursor`` for the next page (null: no more)."""

    data: list[T]
    next_cursor: str | None = None


class CreateTenant(_In):
    name: str = Field(min_length=2, max_length=63, description="lowercase slug, unique on the platform")
    display_name: str = Field("", max_length=200)


class TenantOut(_Out):
    id: str
    name: str
    display_name: str
    status: str
    created_at: datetime


class KeyOut(_Out):
    id: str
    role: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = Field(description="set by rotation: the key stops working at this time")
    rate_limit_per_minute: int | None = Field(description="this key's limit; null: the platform default")


class IssuedKeyOut(KeyOut):
    key: str = Field(description="the API key itself: shown once, never again")


class OnboardedTenant(BaseModel):
    tenant: TenantOut
    admin_key: IssuedKeyOut


class CreateKey(_In):
    role: Literal["tenant-admin", "approver", "viewer"]
    name: str = Field("", max_length=100)
    rate_limit_per_minute: int | None = Field(None, ge=1, le=1_000_000,
                                              description="requests per minute for this key (default: the "
                                                          "platform's MIDWATCH_RATE_LIMIT_PER_MINUTE)")


class RotateKey(_In):
    grace_seconds: int = Field(3600, ge=0, le=7 * 86400,
                               description="how long the old key keeps working (0 to 7 days; default 1 hour)")


class LintOut(BaseModel):
    valid: bool
    errors: list[dict[str, Any]]
    warnings: list[dict[str, Any]]
    projection: dict[str, Any] | None


class AgentVersionOut(_Out):
    id: str
    version: int
    spec_hash: str
    spec: dict[str, Any]
    warnings: list[Any]
    created_at: datetime


class AgentOut(_Out):
    id: str
    name: str
    latest_version: int
    created_at: datetime
    updated_at: datetime


class StoredAgentOut(BaseModel):
    agent: AgentOut
    version: AgentVersionOut
    created: bool


class SchedulingIn(_In):
    weight: int = Field(ge=1, le=100, description="share of worker time against other tenants with work")


class SchedulingOut(_Out):
    tenant: str
    weight: int
    running: int = Field(description="runs holding a worker now")
    cap: int | None = Field(description="concurrent_runs budget limit (PUT .../budgets); null: no cap")


class SubmitRun(_In):
    input: Any = Field(None, description="the run's input (any JSON); for batch agents, shared by all items")
    items: list[Any] | None = Field(None, description="batch items, required iff the spec has input.items: true")
    priority: int = Field(3, ge=1, le=5, description="1 (most urgent) to 5; orders runs within your tenant only "
                                                     "(part of the Idempotency-Key's request)")
    version: int | None = Field(None, ge=1, le=2**31 - 1,
                                description="the agent version to run (default: the latest; for an agent that "
                                            "requires a rehearsal, the newest whose rehearsal passed)")


class RunOut(_Out):
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


class RunItemOut(_Out):
    item_index: int
    state: str
    reason: PublicText
    failure_category: str | None
    steps_used: int
    input: Any


class DecisionEventOut(_Out):
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


class SandboxRecordOut(_Out):
    id: int = Field(description="1, 2, ... per tenant")
    idempotency_key: str
    args: Any
    created_at: datetime
