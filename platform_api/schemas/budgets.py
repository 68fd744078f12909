"""Wire types for budgets: strict requests, and every amount as a decimal string (never a float)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from platform_api.schemas.common import In
from platform_api.schemas.common import Money as Amount
from tenants.budgets.models import MAX_AMOUNT, Metric, Period

__all__ = ["BudgetEventOut", "BudgetsOut", "LimitIn", "LimitOut", "ReservationOut"]

DecimalText = Annotated[str, Field(pattern=r"^[0-9]{1,10}(\.[0-9]{1,8})?$")]  # below MAX_AMOUNT, 10⁻⁸ at most
WholeNumber = Annotated[int, Field(ge=0, le=int(MAX_AMOUNT))]


class LimitIn(In):
    """One limit. ``limit`` is a decimal string (``"12.50"``); counters may also be JSON integers."""

    metric: Metric
    limit: DecimalText | WholeNumber = Field(
        description="a decimal string (\"12.50\"; whole numbers for the counters); counters may also be "
                    "JSON integers, money never (cost_usd is always a string)")
    period: Period | None = Field(None, description="required except for concurrent_runs")
    timezone: str = Field("UTC", min_length=1, max_length=64, description="IANA zone the period is aligned to")
    agent: str | None = Field(None, min_length=1, max_length=64, pattern=r"^(\*|[a-z0-9][a-z0-9._-]*)$",
                              description="limit one agent; omit (or '*') for the whole tenant")

    @model_validator(mode="after")
    def _money_is_a_string(self) -> LimitIn:
        if self.metric == "cost_usd" and not isinstance(self.limit, str):
            raise ValueError('cost_usd limits are decimal strings, e.g. "12.50"')
        return self


class LimitOut(BaseModel):
    agent: str | None = Field(description="null: the whole tenant")
    metric: str
    period: str | None = Field(description="null for concurrent_runs")
    timezone: str
    limit: Amount
    used: Amount = Field(description="spent this period (concurrent_runs: slots in use)")
    reserved: Amount = Field(description="held by reservations not yet reconciled")
    remaining: Amount = Field(description="room left, never negative")
    overspend: Amount = Field(description="charged beyond reservations this period")
    period_start: datetime | None
    period_end: datetime | None


class ReservationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    metric: str
    agent: str
    run_id: str | None
    amount: Amount
    actual: Amount | None
    overspend: Amount
    state: str
    created_at: datetime
    expires_at: datetime
    finished_at: datetime | None


class BudgetEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    agent: str
    metric: str
    period: str
    period_start: datetime
    threshold: int = Field(description="percent of the limit: 50, 80 or 100")
    limit: Amount
    committed: Amount = Field(description="used + reserved when the threshold was crossed")
    created_at: datetime


class BudgetsOut(BaseModel):
    limits: list[LimitOut]
    reservations: list[ReservationOut] = Field(description="open reservations (newest 100)")
    events: list[BudgetEventOut] = Field(description="latest threshold events (newest 100)")
