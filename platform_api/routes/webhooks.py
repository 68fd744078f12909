"""A tenant's webhooks: register (the signing secret is in that response only), list, delete, the delivery log,
and a test event. Tenant admins only: endpoint URLs and delivery errors can describe the tenant's systems."""

from __future__ import annotations

from typing import Any

from litestar import Router, delete, get, post
from litestar.params import FromPath, JSONBody

from platform_api.auth import TENANT_ADMIN
from platform_api.routes._common import Cursor, Db, Limit, TenantCaller, audit, page
from platform_api.schemas.common import Page
from platform_api.schemas.webhooks import CreatedWebhookOut, CreateWebhook, DeliveryOut, WebhookOut
from tenants.kit.settings import get_settings
from tenants.webhooks import service

__all__ = ["router"]


@post("/", opt=TENANT_ADMIN, sync_to_thread=True, status_code=201,
      summary="Register a webhook endpoint; the signing secret is in this response only",
      description=f"events: any of {', '.join(service.EVENT_TYPES)}. Each delivery is a JSON POST with headers "
                  "Midwatch-Event, Midwatch-Delivery, Midwatch-Timestamp and Midwatch-Signature "
                  "(v1=hex HMAC-SHA256(secret, timestamp + '.' + body)).")
def create_webhook(data: JSONBody[CreateWebhook], caller: TenantCaller, session: Db) -> CreatedWebhookOut:
    endpoint, secret = service.create_endpoint(session, caller.tenant_id, data.url, data.events,
                                               description=data.description,
                                               allow_loopback=get_settings().allow_loopback_egress)
    audit(session, caller, "webhook.created", endpoint.id,
           details={"url": endpoint.url, "events": endpoint.events})
    return CreatedWebhookOut(**WebhookOut.model_validate(endpoint).model_dump(), secret=secret)


@get("/", opt=TENANT_ADMIN, sync_to_thread=True, summary="List webhook endpoints (never their secrets)")
def list_webhooks(caller: TenantCaller, session: Db, limit: Limit = 100, cursor: Cursor = None) -> Page[WebhookOut]:
    data = [WebhookOut.model_validate(e) for e in service.list_endpoints(session, caller.tenant_id, after=cursor,
                                                                         limit=limit)]
    return page(data, limit, lambda v: v.id)


@delete("/{webhook_id:str}", opt=TENANT_ADMIN, sync_to_thread=True, status_code=204,
        summary="Delete a webhook endpoint")
def delete_webhook(webhook_id: FromPath[str], caller: TenantCaller, session: Db) -> None:
    service.delete_endpoint(session, caller.tenant_id, webhook_id)
    audit(session, caller, "webhook.deleted", webhook_id)


@get("/{webhook_id:str}/deliveries", opt=TENANT_ADMIN, sync_to_thread=True,
     summary="The endpoint's delivery log, newest first: attempts, last status and error, timestamps")
def list_deliveries(webhook_id: FromPath[str], caller: TenantCaller, session: Db, limit: Limit = 100,
                    cursor: Cursor = None) -> Page[DeliveryOut]:
    rows = service.deliveries(session, caller.tenant_id, webhook_id, before=cursor, limit=limit)
    data = [DeliveryOut.model_validate(d) for d in rows]
    return page(data, limit, lambda v: v.id)


@post("/{webhook_id:str}/test", opt=TENANT_ADMIN, sync_to_thread=True, status_code=202,
      summary="Send a webhook.test event to this endpoint (delivered by the scheduler within seconds)")
def test_webhook(webhook_id: FromPath[str], caller: TenantCaller, session: Db) -> dict[str, Any]:
    delivery = service.send_test(session, caller.tenant_id, webhook_id)
    return {"delivery_id": delivery.id, "event_type": delivery.event_type, "state": delivery.state}


router = Router(path="/v1/webhooks", tags=["webhooks"],
                route_handlers=[create_webhook, list_webhooks, delete_webhook, list_deliveries, test_webhook])
