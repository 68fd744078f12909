"""Wire types of webhook endpoints and deliveries (/v1/webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from platform_api.schemas.common import PublicText, find_nul

__all__ = ["CreateWebhook", "CreatedWebhookOut", "DeliveryOut", "WebhookOut"]



class CreateWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    events: Annotated[list[Annotated[str, Field(max_length=64)]], Field(min_length=1, max_length=20)]
    description: Annotated[str, Field(max_length=200)] = ""

    @model_validator(mode="after")
    def _no_nul(self) -> CreateWebhook:
        where = find_nul(dict(self))
        if where is not None:
            raise ValueError(f"{where}: text cannot contain NUL (\\u0000) characters")
        return self


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    description: str
    events: list[str]
    active: bool
    created_at: datetime


class CreatedWebhookOut(WebhookOut):
    secret: str = Field(description="HMAC-SHA256 signing secret: shown in this response only")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    event_type: str
    state: str
    attempts: int
    last_status: int | None
    last_error: PublicText
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
