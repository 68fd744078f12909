"""Wire schemas of rehearsals (``/v1/agents/{name}/rehearsals``, ``/v1/rehearsals``, the rehearsal policy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from platform_api.schemas.common import PublicText

__all__ = ["PolicyIn", "PolicyOut", "ProfileName", "RehearsalDetailOut", "RehearsalIn", "RehearsalOut"]

INT32_MAX = 2**31 - 1

ProfileName = Literal["gentle", "realistic", "hostile"]


class RehearsalIn(BaseModel):
    """What to rehearse and how hard."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int | None = Field(None, ge=1, le=INT32_MAX, description="the version to rehearse (default: latest)")
    profile: ProfileName = Field("realistic", description="how often faults strike (built-in profiles)")
    items: int = Field(20, ge=1, le=200, description="items per repetition")
    repeat: int | None = Field(None, ge=1, le=10, description="repetitions of the same items (pass^k); default 3, "
                                                               "or the spec's objective.slo.pass_k.k if larger")
    seed: int = Field(1, ge=0, le=INT32_MAX, description="the fault schedule's seed: same seed, same figures")


class RehearsalOut(BaseModel):
    """A rehearsal and its headline figures (``verdict`` pass/fail once ``state`` is finished)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_name: str
    agent_version: int | None
    source: str
    profile: str
    seed: int
    items: int
    repeat: int
    state: str
    verdict: str | None
    measured: float | None
    projected: float | None
    slo: float | None
    pass_k: float | None
    duplicates: int | None
    recovery_s: float | None
    error: PublicText
    requested_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RehearsalDetailOut(RehearsalOut):
    """A rehearsal with its full report (see the README, "The 3 a.m. rehearsal")."""

    report: dict[str, Any] | None


class PolicyIn(BaseModel):
    """An agent's deploy gate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    requires_rehearsal: bool
    min_profile: ProfileName = "realistic"


class PolicyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    agent_name: str
    requires_rehearsal: bool
    min_profile: str
    updated_by: str
    updated_at: datetime | None
