"""Where the engine finds tools and models for a tenant."""

from __future__ import annotations

from typing import Any

from runner.errors import StepFailed
from runner.providers.base import Provider
from runner.providers.sandbox import SandboxModel
from runner.tools.sandbox import BUILTIN_TOOLS

__all__ = ["resolve_model", "resolve_tool"]

_MODELS: dict[str, Provider] = {"sandbox": SandboxModel()}


def resolve_tool(tenant_id: str, name: str) -> Any:
    """The tool named ``name`` for this tenant (built-ins first)."""
    tool = BUILTIN_TOOLS.get(name)
    if tool is None:
        raise StepFailed("internal", f"tool {name!r} is not defined for this tenant", action="escalate")
    return tool


def resolve_model(tenant_id: str, alias: str) -> Provider:
    """The provider behind a model alias."""
    provider = _MODELS.get(alias)
    if provider is None:
        raise StepFailed("dependency", f"model {alias!r} is not configured", action="escalate")
    return provider
