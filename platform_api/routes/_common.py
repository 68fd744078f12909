"""Helpers shared by route modules: pagination parameters."""

from __future__ import annotations

from typing import Annotated

from litestar.di import NamedDependency
from litestar.params import Parameter

from tenants.accounts.service import Principal

__all__ = ["Caller", "Cursor", "Limit"]

Caller = NamedDependency[Principal]  # the authenticated principal (see platform_api.auth)

Limit = Annotated[int, Parameter(ge=1, le=500, description="page size (1-500)")]
Cursor = Annotated[str | None, Parameter(max_length=100, description="next_cursor of the previous page")]
