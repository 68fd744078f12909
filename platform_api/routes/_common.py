"""What route modules share: the dependencies (session, caller), pagination parameters, the audit record.

The edge owns the transaction: :func:`provide_session` opens one unit of work per request, committed by
Litestar after the handler and its response serialisation succeed (rolled back on any error), so messages
enqueued after commit leave only then. Audit records are written here, at the edge that knows who acts
(:func:`audit`); the CLI records its own commands and the runner its own actions. The one exception is the
secret vault's decrypt path (``tenants.secrets.service.resolve``), which audits every read itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from platform_api.auth import TenantPrincipal
from platform_api.problems import problem_responses
from platform_api.schemas.common import Page
from tenants.accounts.service import IssuedKey, Principal
from tenants.audit.service import record
from tenants.kit.db import Session, unit_of_work

__all__ = ["CONFLICT", "INT32_MAX", "INT64_MAX", "Caller", "Cursor", "Db", "Int32Cursor", "Int64Cursor", "Limit",
           "TenantCaller", "audit", "expiry_change", "page", "provide_session"]

T = TypeVar("T")

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Caller = NamedDependency[Principal]  # ``principal``: the admitted caller, any role (see platform_api.auth)
TenantCaller = NamedDependency[TenantPrincipal]  # ``caller``: the admitted caller of a tenant-scoped route
Db = NamedDependency[Session]  # ``session``: this request's unit of work

CONFLICT = problem_responses([409])  # a route whose object's state can refuse the action (409 conflict)
Limit = Annotated[int, QueryParameter(ge=1, le=500, description="page size (1-500)")]
Cursor = Annotated[str | None, QueryParameter(max_length=100, description="next_cursor of the previous page")]
# Numeric cursors: a number within the column's range (beyond it names no row: 422, never a database overflow).
# gt=-1, not ge=0: Litestar leaves a zero bound out of the OpenAPI document.
Int32Cursor = Annotated[int | None, QueryParameter(gt=-1, le=INT32_MAX, description="next_cursor of the previous page")]
Int64Cursor = Annotated[int | None, QueryParameter(gt=-1, le=INT64_MAX, description="next_cursor of the previous page")]


def expiry_change(issued: IssuedKey) -> dict[str, Any]:
    """A rotated key's expiry before and after the rotation, as an audit record's ``before``/``after``."""
    before, after = issued.replaced_expiry or (None, None)
    return {"before": {"expires_at": before.isoformat() if before else None},
            "after": {"expires_at": after.isoformat() if after else None}}


async def provide_session() -> AsyncIterator[Session]:
    """The ``session`` dependency: one unit of work per request, committed after the handler succeeds.

    The commit (or rollback) runs on AnyIO's worker threads, not on the event loop's executor where sync
    handlers run: a handler waiting for a database lock must never hold the thread the lock holder's
    commit needs."""
    unit = unit_of_work()
    session = unit.__enter__()
    try:
        yield session
    except BaseException as exc:
        await anyio.to_thread.run_sync(unit.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await anyio.to_thread.run_sync(unit.__exit__, None, None, None)


def audit(session: Session, who: Principal | TenantPrincipal, action: str, target: str,
          details: dict[str, Any] | None = None) -> None:
    """Record ``who`` did ``action`` to ``target`` in the tenant's audit chain (an operator's: the platform's)."""
    record(session, who.tenant_id, actor=who.key_id, role=who.role, action=action, target=target, details=details)


def page(data: list[T], limit: int, cursor_of: Callable[[T], object]) -> Page[T]:
    """A page of ``data``; when it is full, its next cursor is ``cursor_of(last item)``."""
    return Page(data=data, next_cursor=str(cursor_of(data[-1])) if data and len(data) == limit else None)
