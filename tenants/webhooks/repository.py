"""All SQL of webhooks: a tenant's endpoints and delivery log; the scheduler's cross-tenant claim of due deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, select, update
from sqlalchemy.orm import Session

from tenants.kit.repository import PlatformRepository, TenantRepository, for_dialect
from tenants.webhooks.models import WebhookDelivery, WebhookEndpoint

__all__ = ["ClaimedDelivery", "PostgresWebhookPlatformRepository", "WebhookPlatformRepository", "WebhookRepository",
           "webhook_platform_repository"]


class WebhookRepository(TenantRepository):
    """A tenant's endpoints and deliveries."""

    def add_endpoint(self, endpoint: WebhookEndpoint) -> WebhookEndpoint:
        endpoint.tenant_id = self.tenant_id
        self.session.add(endpoint)
        self.session.flush()
        return endpoint

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint | None:
        return self.session.scalar(select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == self.tenant_id, WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.deleted_at.is_(None)))

    def endpoints(self, *, after: str | None = None, limit: int = 1000) -> Sequence[WebhookEndpoint]:
        q = (select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == self.tenant_id,
                                           WebhookEndpoint.deleted_at.is_(None))
             .order_by(WebhookEndpoint.id).limit(limit))
        if after:
            q = q.where(WebhookEndpoint.id > after)
        return self.session.scalars(q).all()

    def active_endpoints(self) -> Sequence[WebhookEndpoint]:
        return self.session.scalars(select(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == self.tenant_id, WebhookEndpoint.active.is_(True),
            WebhookEndpoint.deleted_at.is_(None)).order_by(WebhookEndpoint.id)).all()

    def delete_endpoint(self, endpoint_id: str, now: datetime) -> bool:
        """Soft delete (the delivery log stays readable to the operator); pending deliveries are failed."""
        res = self.session.execute(update(WebhookEndpoint).where(
            WebhookEndpoint.tenant_id == self.tenant_id, WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.deleted_at.is_(None)).values(active=False, deleted_at=now))
        self.session.execute(update(WebhookDelivery).where(
            WebhookDelivery.tenant_id == self.tenant_id, WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.state == "pending").values(state="failed", last_error="endpoint deleted",
                                                       next_attempt_at=None))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    def add_delivery(self, delivery: WebhookDelivery) -> None:
        delivery.tenant_id = self.tenant_id
        self.session.add(delivery)

    def deliveries(self, endpoint_id: str, *, before: str | None, limit: int) -> Sequence[WebhookDelivery]:
        """An endpoint's deliveries, newest first."""
        q = (select(WebhookDelivery).where(WebhookDelivery.tenant_id == self.tenant_id,
                                           WebhookDelivery.endpoint_id == endpoint_id)
             .order_by(WebhookDelivery.id.desc()).limit(limit))
        if before:
            q = q.where(WebhookDelivery.id < before)
        return self.session.scalars(q).all()


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """What the sender needs, copied out of the claiming transaction."""

    id: str
    tenant_id: str
    endpoint_id: str
    url: str
    secret: str
    event_type: str
    payload: dict[str, Any]
    attempt: int  # this attempt's number (1-based)
    active: bool  # False: the endpoint was disabled after the event; do not send


class WebhookPlatformRepository(PlatformRepository):
    """The scheduler's view: due deliveries of every tenant; the operator's count of undelivered ones."""

    def undelivered_counts(self) -> dict[tuple[str, str], int]:
        """Deliveries per (tenant, state) still pending or finally failed (``ix_webhook_deliveries_due``)."""
        rows = self.session.execute(
            select(WebhookDelivery.tenant_id, WebhookDelivery.state, func.count())
            .where(WebhookDelivery.state.in_(("pending", "failed")))
            .group_by(WebhookDelivery.tenant_id, WebhookDelivery.state)).all()
        return {(str(t), str(s)): int(n) for t, s, n in rows}

    def delivery_health(self, since: datetime) -> list[tuple[str, int, int, int]]:
        """(tenant_id, pending, pending whose last attempt failed, given up since ``since``) per tenant: the
        ``state`` prefix of ``ix_webhook_deliveries_due`` keeps it to undelivered rows."""
        retrying = func.sum(case((and_(WebhookDelivery.state == "pending", WebhookDelivery.last_error.is_not(None)), 1),
                                  else_=0))
        pending = func.sum(case((WebhookDelivery.state == "pending", 1), else_=0))
        failed = func.sum(case((and_(WebhookDelivery.state == "failed", WebhookDelivery.last_attempt_at >= since),
                                1), else_=0))
        rows = self.session.execute(
            select(WebhookDelivery.tenant_id, pending, retrying, failed)
            .where(WebhookDelivery.state.in_(("pending", "failed")))
            .group_by(WebhookDelivery.tenant_id)).all()
        return [(str(t), int(p or 0), int(r or 0), int(f or 0)) for t, p, r, f in rows]

    def claim_due(self, now: datetime, limit: int, claim_until: datetime) -> list[ClaimedDelivery]:
        """Lock up to ``limit`` due deliveries (SKIP LOCKED: concurrent schedulers take different rows),
        count the attempt and push ``next_attempt_at`` to ``claim_until`` so nobody else sends them while
        this sender does; a sender that dies leaves them due again at ``claim_until`` (at-least-once)."""
        q = (select(WebhookDelivery, WebhookEndpoint)
             .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
             .where(WebhookDelivery.state == "pending", WebhookDelivery.next_attempt_at <= now)
             .order_by(WebhookDelivery.next_attempt_at).limit(limit))
        claimed = []
        for delivery, endpoint in self.session.execute(self._locked(q)).all():
            delivery.attempts += 1
            delivery.next_attempt_at = claim_until
            delivery.last_attempt_at = now
            claimed.append(ClaimedDelivery(
                id=delivery.id, tenant_id=delivery.tenant_id, endpoint_id=endpoint.id, url=endpoint.url,
                secret=endpoint.secret, event_type=delivery.event_type, payload=dict(delivery.payload),
                attempt=delivery.attempts, active=endpoint.active and endpoint.deleted_at is None))
        self.session.flush()
        return claimed

    def _locked(self, query: Any) -> Any:
        """SQLite: writers are serialised, the plain read is enough."""
        return query

    def settle(self, delivery_id: str, *, state: str, status: int | None, error: str | None,
               next_attempt_at: datetime | None, delivered_at: datetime | None) -> None:
        """Record one attempt's outcome (only on a delivery still pending: a deleted endpoint's stays failed)."""
        self.session.execute(update(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending").values(
            state=state, last_status=status, last_error=error, next_attempt_at=next_attempt_at,
            delivered_at=delivered_at))


class PostgresWebhookPlatformRepository(WebhookPlatformRepository):
    """PostgreSQL: concurrent schedulers skip each other's locked deliveries (``FOR UPDATE SKIP LOCKED``)."""

    def _locked(self, query: Any) -> Any:
        return query.with_for_update(skip_locked=True, of=WebhookDelivery)


def webhook_platform_repository(session: Session) -> WebhookPlatformRepository:
    """The scheduler's webhook repository for the session's database."""
    return for_dialect(session, WebhookPlatformRepository, PostgresWebhookPlatformRepository)
