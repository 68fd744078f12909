"""Helpers shared by route modules: pagination parameters, audit details."""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar.di import NamedDependency
from litestar.params import Parameter

from tenants.accounts.service import IssuedKey, Principal
from tenants.kit.errors import InvalidInput

__all__ = ["INT32_MAX", "INT64_MAX", "Caller", "Cursor", "Limit", "expiry_change", "int_cursor"]

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Caller = NamedDependency[Principal]  # the authenticated principal (see platform_api.auth)

Limit = Annotated[int, Parameter(ge=1, le=500, description="page size (1-500)")]
Cursor = Annotated[str | None, Parameter(max_length=100, description="next_cursor of the previous page")]


def int_cursor(cursor: str | None, maximum: int) -> int | None:
    """A numeric cursor (digits only, at most ``maximum``: the column's range) or a 422."""
    if cursor is None:
        return None
    if not re.fullmatch(r"[0-9]{1,19}", cursor) or int(cursor) > maximum:
        raise InvalidInput("cursor must be the next_cursor of a previous page", field="cursor")
    return int(cursor)


def expiry_change(issued: IssuedKey) -> dict[str, Any]:
    """A rotated key's expiry before and after the rotation, as an audit record's ``before``/``after``."""
    before, after = issued.replaced_expiry or (None, None)
    return {"before": {"expires_at": before.isoformat() if before else None},
            "after": {"expires_at": after.isoformat() if after else None}}
