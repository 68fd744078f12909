"""A tenant's webhooks: register (the signing secret is in that response only), list, delete, the delivery log,
and a test event. Tenant admins only: endpoint URLs and delivery errors can describe the tenant's systems."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from litestar import Router, delete, get, post
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, Field, model_validator

from platform_api.auth import require
from platform_api.routes._common import Caller, Cursor, Limit
from platform_api.schemas import Page, PublicText, find_nul
from tenants.audit.service import record
from tenants.kit.db import unit_of_work
from tenants.kit.settings import get_settings
from tenants.webhooks import service

__all__ = ["router"]


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


@post("/", sync_to_thread=True, status_code=201,
      summary="Register a webhook endpoint; the signing secret is in this response only",
      description=f"events: any of {', '.join(service.EVENT_TYPES)}. Each delivery is a JSON POST with headers "
                  "Midwatch-Event, Midwatch-Delivery, Midwatch-Timestamp and Midwatch-Signature "
                  "(v1=hex HMAC-SHA256(secret, timestamp + '.' + body)).")
def create_webhook(data: JSONBody[CreateWebhook], principal: Caller) -> CreatedWebhookOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        endpoint, secret = service.create_endpoint(session, me.tenant_id, data.url, data.events,
                                                   description=data.description,
                                                   allow_loopback=get_settings().allow_loopback_egress)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="webhook.created", target=endpoint.id,
               details={"url": endpoint.url, "events": endpoint.events})
        return CreatedWebhookOut(**WebhookOut.model_validate(endpoint).model_dump(), secret=secret)


@get("/", sync_to_thread=True, summary="List webhook endpoints (never their secrets)")
def list_webhooks(principal: Caller, limit: Limit = 100, cursor: Cursor = None) -> Page[WebhookOut]:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        data = [WebhookOut.model_validate(e) for e in service.list_endpoints(session, me.tenant_id, after=cursor,
                                                                             limit=limit)]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


@delete("/{webhook_id:str}", sync_to_thread=True, status_code=204, summary="Delete a webhook endpoint")
def delete_webhook(webhook_id: FromPath[str], principal: Caller) -> None:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        service.delete_endpoint(session, me.tenant_id, webhook_id)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="webhook.deleted", target=webhook_id)


@get("/{webhook_id:str}/deliveries", sync_to_thread=True,
     summary="The endpoint's delivery log, newest first: attempts, last status and error, timestamps")
def list_deliveries(webhook_id: FromPath[str], principal: Caller, limit: Limit = 100, cursor: Cursor = None
                    ) -> Page[DeliveryOut]:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        rows = service.deliveries(session, me.tenant_id, webhook_id, before=cursor, limit=limit)
        data = [DeliveryOut.model_validate(d) for d in rows]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


@post("/{webhook_id:str}/test", sync_to_thread=True, status_code=202,
      summary="Send a webhook.test event to this endpoint (delivered by the scheduler within seconds)")
def test_webhook(webhook_id: FromPath[str], principal: Caller) -> dict[str, Any]:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        delivery = service.send_test(session, me.tenant_id, webhook_id)
        return {"delivery_id": delivery.id, "event_type": delivery.event_type, "state": delivery.state}


router = Router(path="/v1/webhooks", tags=["webhooks"],
                route_handlers=[create_webhook, list_webhooks, delete_webhook, list_deliveries, test_webhook])
