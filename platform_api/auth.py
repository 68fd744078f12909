"""Who is calling, and may they. The tenant comes from the API key only, never from the URL or body.

Every route declares the roles it admits in its handler's ``opt`` (:func:`roles`, or the shorthands
:data:`OPERATOR`, :data:`ANY_TENANT_ROLE`, :data:`TENANT_ADMIN`); :func:`role_guard`, the guard of every
``/v1`` router, authenticates the caller once per request and refuses a role the route does not declare
(a route that declares none refuses everyone). Handlers then receive the caller through the ``principal``
(any caller) or ``caller`` (a tenant's principal) dependencies.

A verified key is cached per process for a few seconds (``tenants.accounts.service.AUTH_CACHE_S``) and
requests are counted per key without a database write per request (``tenants.accounts.ratelimit``:
Redis when the deployment has it, otherwise in-memory counts flushed about once a second). Failed
authentications are throttled per client address, so guessing keys costs the guesser, not the database.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Final, overload

import anyio.to_thread
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from tenants.accounts.ratelimit import BatchedCounter, Counter, Limiter, RedisCounter
from tenants.accounts.service import KEYS, Principal, Role, bearer_token, hash_key, verify_key
from tenants.kit.db import unit_of_work
from tenants.kit.errors import Forbidden, RateLimited, Unauthorized
from tenants.kit.ids import utcnow
from tenants.kit.logging import annotate_request
from tenants.kit.settings import Settings, get_settings

__all__ = ["ANY_TENANT_ROLE", "OPERATOR", "TENANT_ADMIN", "TENANT_ROLES", "TenantPrincipal", "declared_roles",
           "limiter", "provide_caller", "provide_principal", "reset_limiter", "role_guard", "roles"]

TENANT_ROLES: Final[tuple[Role, ...]] = ("tenant-admin", "approver", "viewer")
_STATE_KEY = "midwatch_principal"

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


def _authenticate(request: ASGIConnection[Any, Any, Any, Any], *, may_block: bool = True) -> Principal | None:
    """Resolve the Authorization header (cached briefly), count the request against the key's per-minute
    limit (429 ``rate_limited`` over it). An address that keeps failing authentication gets 429 for the rest of
the minute for any key not verified in the last few seconds (keys in use keep working, so a guesser
behind a shared address cannot lock out the users next to it).

    ``may_block=False`` (on the event loop): answer only from memory, a key verified in the last few seconds
    and a count the limiter holds; None, with nothing counted, where the answer needs the database or Redis
    (or is a refusal of the key: failures are counted on the worker thread)."""
    settings = get_settings()
    limits = limiter()
    address = request.client.host if request.client else "unknown"
    now = utcnow()
    try:
        key_hash = hash_key(bearer_token(request.headers.get("authorization")))
        verified = KEYS.get(key_hash)
        if verified is None:  # only a key not verified recently costs a lookup: guard that with the throttle
            if not may_block:
                return None
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
        if not may_block:
            return None
        limits.failed(address)
        raise
    limit = verified.rate_limit_per_minute or settings.rate_limit_per_minute
    verdict = (limits.request(verified.principal.key_id, limit) if may_block
               else limits.request_local(verified.principal.key_id, limit))
    if verdict is None:
        return None
    if not verdict.allowed:
        raise RateLimited(f"this API key is limited to {limit} requests per minute; retry in "
                          f"{verdict.retry_after_s} s", retry_after_s=verdict.retry_after_s)
    annotate_request(tenant_id=verified.principal.tenant_id)  # every later log line of this request names the tenant
    return verified.principal


def roles(*allowed: Role) -> dict[str, tuple[Role, ...]]:
    """A handler's ``opt`` declaring the roles it admits (``"operator"`` alone: an operator route; tenant
    roles: a tenant-scoped route)."""
    if not allowed or ("operator" in allowed and len(allowed) > 1):
        raise ValueError("a route admits the operator alone, or one or more tenant roles")
    return {"roles": allowed}


OPERATOR: Final = roles("operator")
ANY_TENANT_ROLE: Final = roles(*TENANT_ROLES)
TENANT_ADMIN: Final = roles("tenant-admin")


def declared_roles(opt: Mapping[str, object]) -> tuple[Role, ...]:
    """The roles a handler's ``opt`` admits (empty: none declared)."""
    found = opt.get("roles")
    return tuple(found) if isinstance(found, tuple) else ()


async def role_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Authenticate the caller once per request and admit it only with a role the route declares. A key
    verified in the last few seconds, whose count the limiter holds in memory, is admitted on the event loop;
    anything that needs the database or Redis is asked on a worker thread."""
    allowed = declared_roles(handler.opt)
    if not allowed:
        raise Forbidden("this route declares no roles")  # fail closed: a route without roles admits nobody
    principal = _authenticated(connection, may_block=False)  # a key in use: no round trip, no thread hop
    if principal is None:
        principal = await anyio.to_thread.run_sync(_authenticated, connection)
    if allowed == ("operator",):
        if not principal.is_operator:
            raise Forbidden("this action needs an operator key")
        return
    if principal.tenant_id is None:
        raise Forbidden("operator keys manage the platform; use a tenant key for tenant resources")
    if principal.role not in allowed:
        raise Forbidden(f"this action needs one of the roles: {', '.join(allowed)} (your key is {principal.role})")


@overload
def _authenticated(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal: ...


@overload
def _authenticated(connection: ASGIConnection[Any, Any, Any, Any], *, may_block: bool) -> Principal | None: ...


def _authenticated(connection: ASGIConnection[Any, Any, Any, Any], *, may_block: bool = True) -> Principal | None:
    found: Principal | None = connection.state.get(_STATE_KEY)
    if found is None:
        found = _authenticate(connection, may_block=may_block)
        if found is not None:
            connection.state[_STATE_KEY] = found
    return found


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The ``principal`` dependency: the caller the guard admitted."""
    return _authenticated(request)


def provide_caller(request: Request[Any, Any, Any]) -> TenantPrincipal:
    """The ``caller`` dependency: the tenant principal the guard admitted (tenant-scoped routes only)."""
    principal = _authenticated(request)
    if principal.tenant_id is None:  # the guard refuses operators on tenant routes; never reached
        raise Forbidden("operator keys manage the platform; use a tenant key for tenant resources")
    return TenantPrincipal(principal.key_id, principal.role, principal.tenant_id)
