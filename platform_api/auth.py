"""Who is calling. The tenant comes from the API key only, never from the URL or body.

A verified key is cached per process for a few seconds (``tenants.accounts.service.AUTH_CACHE_S``) and
requests are counted per key without a database write per request (``tenants.accounts.ratelimit``:
Redis when the deployment has it, otherwise in-memory counts flushed about once a second). Failed
authentications are throttled per client address, so guessing keys costs the guesser, not the database.
"""

from __future__ import annotations

import threading
from typing import Any

from litestar import Request

from tenants.accounts.ratelimit import BatchedCounter, Counter, Limiter, RedisCounter
from tenants.accounts.service import KEYS, Principal, Role, bearer_token, hash_key, verify_key
from tenants.kit.db import unit_of_work
from tenants.kit.errors import Forbidden, RateLimited, Unauthorized
from tenants.kit.ids import utcnow
from tenants.kit.logging import annotate_request
from tenants.kit.settings import Settings, get_settings

__all__ = ["TenantPrincipal", "limiter", "operator_only", "principal_dependency", "require", "reset_limiter"]

_lock = threading.Lock()
_limiter: Limiter | None = None


class TenantPrincipal:
    """A principal known to act inside a tenant (tenant_id is a str)."""

    __slots__ = ("key_id", "role", "tenant_id")

    def __init__(self, key_id: str, role: Role, tenant_id: str) -> None:
        self.key_id = key_id
        self.role = role
        self.tenant_id = tenant_id


def _counter(settings: Settings) -> Counter:
    url = settings.redis_url or (settings.broker_url if settings.broker_url.startswith(("redis://", "rediss://"))
                                 else "")
    if url:
        import redis

        return RedisCounter(redis.Redis.from_url(url), settings.redis_namespace)
    return BatchedCounter()


def limiter() -> Limiter:
    """The process's limiter, built from settings on first use."""
    global _limiter
    with _lock:
        if _limiter is None:
            _limiter = Limiter(_counter(get_settings()))
        return _limiter


def reset_limiter() -> None:
    """Forget the limiter (tests switch settings between harnesses)."""
    global _limiter
    with _lock:
        if _limiter is not None:
            _limiter.counter.close()
        _limiter = None
    KEYS.clear()


def principal_dependency(request: Request[Any, Any, Any]) -> Principal:
    """Resolve the Authorization header (cached briefly), count the request against the key's per-minute
    limit (429 ``rate_limited`` over it). An address that keeps failing authentication gets 429 for the rest of
the minute for any key not verified in the last few seconds (keys in use keep working, so a guesser
behind a shared address cannot lock out the users next to it)."""
    settings = get_settings()
    limits = limiter()
    address = request.client.host if request.client else "unknown"
    now = utcnow()
    try:
        key_hash = hash_key(bearer_token(request.headers.get("authorization")))
        verified = KEYS.get(key_hash)
        if verified is None:  # only a key not verified recently costs a lookup: guard that with the throttle
            throttled = limits.failures_exceeded(address, settings.auth_failures_per_minute)
            if not throttled.allowed:
                raise RateLimited(f"too many failed authentications from this address; retry in "
                                  f"{throttled.retry_after_s} s", retry_after_s=throttled.retry_after_s)
            with unit_of_work() as session:
                verified = verify_key(session, key_hash, now)
            KEYS.put(key_hash, verified)
        elif verified.expires_at is not None and verified.expires_at <= now:
            raise Unauthorized("unknown or revoked API key")
    except Unauthorized:
        limits.failed(address)
        raise
    limit = verified.rate_limit_per_minute or settings.rate_limit_per_minute
    verdict = limits.request(verified.principal.key_id, limit)
    if not verdict.allowed:
        raise RateLimited(f"this API key is limited to {limit} requests per minute; retry in "
                          f"{verdict.retry_after_s} s", retry_after_s=verdict.retry_after_s)
    annotate_request(tenant_id=verified.principal.tenant_id)  # every later log line of this request names the tenant
    return verified.principal


def require(principal: Principal, *roles: Role) -> TenantPrincipal:
    """The caller as a tenant principal holding one of ``roles`` (operators cannot act in a tenant)."""
    if principal.tenant_id is None:
        raise Forbidden("operator keys manage the platform; use a tenant key for tenant resources")
    if roles and principal.role not in roles:
        raise Forbidden(f"this action needs one of the roles: {', '.join(roles)} (your key is {principal.role})")
    return TenantPrincipal(principal.key_id, principal.role, principal.tenant_id)


def operator_only(principal: Principal) -> Principal:
    """The caller, if an operator."""
    if not principal.is_operator:
        raise Forbidden("this action needs an operator key")
    return principal
