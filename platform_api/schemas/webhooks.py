"""Wire types of webhook endpoints and deliveries (/v1/webhooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from platform_api.schemas.common import In, PublicText
from tenants.webhooks.service import EVENT_TYPES

# one of the service's event types (the document lists them; the service refuses others, naming them)
WebhookEvent = Annotated[str, Field(max_length=64, json_schema_extra={"enum": list(EVENT_TYPES)})]

__all__ = ["CreateWebhook", "CreatedWebhookOut", "DeliveryOut", "WebhookOut"]



class CreateWebhook(In):
    url: Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@\s]",
                              description="http:// or https://; never a metadata or private address")]
    events: Annotated[list[WebhookEvent], Field(min_length=1, max_length=20)]  # checked by the service, which
    # names the unknown ones
    description: Annotated[str, Field(max_length=200)] = ""


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
