"""Who is calling. The tenant comes from the API key only, never from the URL or body."""

from __future__ import annotations

from typing import Any

from litestar import Request

from tenants.accounts.service import Principal, Role, authenticate
from tenants.kit.db import unit_of_work
from tenants.kit.errors import Forbidden
from tenants.kit.logging import annotate_request
from tenants.kit.settings import get_settings

__all__ = ["TenantPrincipal", "operator_only", "principal_dependency", "require"]


class TenantPrincipal:
    """A principal known to act inside a tenant (tenant_id is a str)."""

    __slots__ = ("key_id", "role", "tenant_id")

    def __init__(self, key_id: str, role: Role, tenant_id: str) -> None:
        self.key_id = key_id
        self.role = role
        self.tenant_id = tenant_id


def principal_dependency(request: Request[Any, Any, Any]) -> Principal:
    """Resolve the Authorization header in its own short transaction, which also counts the request
    against the key's per-minute limit (429 ``rate_limited`` over it) and touches last-used."""
    limit = get_settings().rate_limit_per_minute
    with unit_of_work() as session:
        principal = authenticate(session, request.headers.get("authorization"), rate_limit_per_minute=limit)
    annotate_request(tenant_id=principal.tenant_id)  # every later log line of this request names the tenant
    return principal


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
