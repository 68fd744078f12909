"""Wire types of tenants, API keys and scheduling (/v1/admin, /v1/keys)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from platform_api.schemas.common import In, Out
from tenants.accounts.service import TENANT_NAME

__all__ = ["CreateKey", "CreateTenant", "IssuedKeyOut", "KeyOut", "OnboardedTenant", "RotateKey", "SchedulingIn",
           "SchedulingOut", "TenantOut"]



class CreateTenant(In):
    name: str = Field(pattern=TENANT_NAME.pattern,
                      description="2-63 lowercase letters, digits or '-', starting with a letter; unique")
    display_name: str = Field("", max_length=200)


class TenantOut(Out):
    id: str
    name: str
    display_name: str
    status: str
    created_at: datetime


class KeyOut(Out):
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


class CreateKey(In):
    role: Literal["tenant-admin", "approver", "viewer"]
    name: str = Field("", max_length=100)
    rate_limit_per_minute: int | None = Field(None, ge=1, le=1_000_000,
                                              description="requests per minute for this key (default: the "
                                                          "platform's MIDWATCH_RATE_LIMIT_PER_MINUTE)")


class RotateKey(In):
    grace_seconds: int = Field(3600, ge=0, le=7 * 86400,
                               description="how long the old key keeps working (0 to 7 days; default 1 hour)")


class SchedulingIn(In):
    weight: int = Field(ge=1, le=100, description="share of worker time against other tenants with work")


class SchedulingOut(Out):
    tenant: str
    weight: int
    running: int = Field(description="runs holding a worker now")
    cap: int | None = Field(description="concurrent_runs budget limit (PUT .../budgets); null: no cap")
