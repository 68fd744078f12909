"""Rules for webhooks: register endpoints (URL checks, signing secret), emit events into the outbox. Never commits.

:func:`emit` inserts one delivery per matching endpoint in the caller's transaction, so an event is sent
if and only if the state change that raised it commits; runner.webhooks sends the outbox.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from tenants.kit.addresses import check_host
from tenants.kit.errors import InvalidInput, NotFound, found
from tenants.kit.ids import canonical_json, new_id, utcnow
from tenants.kit.logging import redact
from tenants.webhooks.models import WebhookDelivery, WebhookEndpoint
from tenants.webhooks.repository import WebhookRepository
from tenants.webhooks.signing import sign, verify_signature

__all__ = [
    "EVENT_TYPES",
    "MAX_ENDPOINTS",
    "TEST_EVENT",
    "check_url",
    "create_endpoint",
    "delete_endpoint",
    "deliveries",
    "emit",
    "get_endpoint",
    "list_endpoints",
    "send_test",
    "sign",
    "verify_signature",
]

EVENT_TYPES = ("run.failed", "run.escalated", "approval.requested", "approval.expired", "budget.threshold",
               "secret.rotation_due")
TEST_EVENT = "webhook.test"  # sent by POST /v1/webhooks/{id}/test to that endpoint only
MAX_ENDPOINTS = 20  # per tenant: every event fans out to each matching endpoint


def check_url(url: str, *, allow_loopback: bool) -> str:
    """A receiver URL or InvalidInput: http(s), a host, no credentials; without ``allow_loopback``
    (production) no loopback literal address or localhost; never a metadata, private or link-local address or
    an IP literal in a non-canonical form (tenants.kit.addresses.check_host). The egress client checks the
    resolved addresses again at every send (DNS can change)."""
    if len(url) > 2048:
        raise InvalidInput("url is longer than 2048 characters", field="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"url is not a valid URL: {exc}", field="url") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("url must be http:// or https://", field="url")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise InvalidInput("url has no host", field="url")
    if parts.username or parts.password:
        raise InvalidInput("url must not carry credentials", field="url")
    if port == 0:
        raise InvalidInput("url has an invalid port", field="url")
    why = check_host(host, allow_loopback=allow_loopback)
    if why is not None:
        raise InvalidInput(f"url host {why}; it cannot be reached from Midwatch", field="url")
    return url


def create_endpoint(session: Session, tenant_id: str, url: str, events: Sequence[str], *, description: str = "",
                    allow_loopback: bool = False) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it with its signing secret (shown to the caller once)."""
    check_url(url, allow_loopback=allow_loopback)
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if not events or unknown:
        raise InvalidInput(f"events must be a non-empty list of {', '.join(EVENT_TYPES)}"
                           + (f" (unknown: {', '.join(unknown)})" if unknown else ""), field="events")
    repo = WebhookRepository(session, tenant_id)
    if len(repo.endpoints(limit=MAX_ENDPOINTS + 1)) >= MAX_ENDPOINTS:
        raise InvalidInput(f"a tenant can register at most {MAX_ENDPOINTS} webhook endpoints")
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(id=new_id("whk"), tenant_id=tenant_id, url=url, description=description,
                               events=sorted(set(events)), secret=secret, active=True, created_at=utcnow())
    return repo.add_endpoint(endpoint), secret


def get_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint, or NotFound (also for another tenant's)."""
    return found(WebhookRepository(session, tenant_id).endpoint(endpoint_id), f"webhook {endpoint_id!r}")


def list_endpoints(session: Session, tenant_id: str, *, after: str | None, limit: int) -> Sequence[WebhookEndpoint]:
    return WebhookRepository(session, tenant_id).endpoints(after=after, limit=limit)


def delete_endpoint(session: Session, tenant_id: str, endpoint_id: str) -> None:
    """Stop sending to an endpoint (pending deliveries fail with 'endpoint deleted')."""
    if not WebhookRepository(session, tenant_id).delete_endpoint(endpoint_id, utcnow()):
        raise NotFound(f"webhook {endpoint_id!r} not found")


def deliveries(session: Session, tenant_id: str, endpoint_id: str, *, before: str | None,
               limit: int) -> Sequence[WebhookDelivery]:
    """An endpoint's delivery log, newest first."""
    get_endpoint(session, tenant_id, endpoint_id)
    return WebhookRepository(session, tenant_id).deliveries(endpoint_id, before=before, limit=limit)


def _envelope(delivery_id: str, tenant_id: str, event_type: str, payload: Mapping[str, Any],
              now: datetime) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(canonical_json(redact(dict(payload))))
    return {"id": delivery_id, "type": event_type, "tenant_id": tenant_id, "created_at": now.isoformat(),
            "data": data}


def _queue(repo: WebhookRepository, endpoint: WebhookEndpoint, event_type: str, payload: Mapping[str, Any],
           now: datetime) -> WebhookDelivery:
    delivery_id = new_id("whd")
    delivery = WebhookDelivery(id=delivery_id, tenant_id=repo.tenant_id, endpoint_id=endpoint.id,
                               event_type=event_type, payload=_envelope(delivery_id, repo.tenant_id, event_type,
                                                                        payload, now),
                               state="pending", attempts=0, next_attempt_at=now, created_at=now)
    repo.add_delivery(delivery)
    return delivery


def emit(session: Session, tenant_id: str, event_type: str, payload: Mapping[str, Any]) -> list[str]:
    """Queue ``event_type`` for every active endpoint of the tenant subscribed to it; returns the delivery ids.

    Runs in the caller's transaction: nothing is sent unless it commits. ``payload`` is redacted and becomes
    the ``data`` of the JSON body ``{"id", "type", "tenant_id", "created_at", "data"}``.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r} (known: {', '.join(EVENT_TYPES)})")
    repo = WebhookRepository(session, tenant_id)
    now = utcnow()
    queued = [_queue(repo, ep, event_type, payload, now) for ep in repo.active_endpoints() if event_type in ep.events]
    if queued:
        session.flush()
    return [d.id for d in queued]


def send_test(session: Session, tenant_id: str, endpoint_id: str) -> WebhookDelivery:
    """Queue a ``webhook.test`` event to one endpoint (whatever it subscribes to)."""
    endpoint = get_endpoint(session, tenant_id, endpoint_id)
    repo = WebhookRepository(session, tenant_id)
    delivery = _queue(repo, endpoint, TEST_EVENT, {"endpoint_id": endpoint.id, "message": "hello from Midwatch"},
                      utcnow())
    session.flush()
    return delivery
