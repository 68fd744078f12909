"""Rules for a tenant's catalog. Never commits; definitions arrive already validated by the runner's types."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from tenants.catalog.models import BreakerRecord, ModelRecord, ToolRecord
from tenants.catalog.repository import CatalogRepository
from tenants.kit.errors import InvalidInput, NotFound, found
from tenants.kit.ids import utcnow

__all__ = [
    "delete_model",
    "delete_tool",
    "get_model",
    "get_tool",
    "list_breakers",
    "list_models",
    "list_tools",
    "put_model",
    "put_tool",
    "reset_breaker",
]

BUILTIN_PREFIX = "sandbox."


def put_tool(session: Session, tenant_id: str, name: str, definition: dict[str, Any]) -> tuple[ToolRecord, bool]:
    """Create or replace a tool definition; built-in names are reserved."""
    if name.startswith(BUILTIN_PREFIX):
        raise InvalidInput(f"tool names starting with {BUILTIN_PREFIX!r} are built in", field="name")
    return CatalogRepository(session, tenant_id).put_tool(name, definition, utcnow())


def list_tools(session: Session, tenant_id: str) -> Sequence[ToolRecord]:
    return CatalogRepository(session, tenant_id).tools()


def list_models(session: Session, tenant_id: str) -> Sequence[ModelRecord]:
    return CatalogRepository(session, tenant_id).models()


def get_tool(session: Session, tenant_id: str, name: str) -> ToolRecord:
    return found(CatalogRepository(session, tenant_id).tool(name), f"tool {name!r}")


def delete_tool(session: Session, tenant_id: str, name: str) -> None:
    if not CatalogRepository(session, tenant_id).delete_tool(name):
        raise NotFound(f"tool {name!r} not found")


def put_model(session: Session, tenant_id: str, alias: str, config: dict[str, Any]) -> tuple[ModelRecord, bool]:
    """Create or replace a model alias; ``sandbox`` is built in."""
    if alias == "sandbox":
        raise InvalidInput("the model alias 'sandbox' is built in", field="alias")
    return CatalogRepository(session, tenant_id).put_model(alias, config, utcnow())


def get_model(session: Session, tenant_id: str, alias: str) -> ModelRecord:
    return found(CatalogRepository(session, tenant_id).model(alias), f"model {alias!r}")


def delete_model(session: Session, tenant_id: str, alias: str) -> None:
    if not CatalogRepository(session, tenant_id).delete_model(alias):
        raise NotFound(f"model {alias!r} not found")


def list_breakers(session: Session, tenant_id: str) -> Sequence[BreakerRecord]:
    return CatalogRepository(session, tenant_id).breakers()


def reset_breaker(session: Session, tenant_id: str, host: str, closed_state: dict[str, Any]) -> None:
    """Close a breaker by hand (after the operator fixed the dependency)."""
    repo = CatalogRepository(session, tenant_id)
    if not any(b.host == host for b in repo.breakers()):
        raise NotFound(f"no circuit breaker for host {host!r}")
    repo.save_breaker(host, closed_state, utcnow())
