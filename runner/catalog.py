"""Public wire types of a tenant's catalog: HTTP tool definitions and model configurations.

The API validates ``PUT /v1/tools/{name}`` and ``PUT /v1/models/{alias}`` bodies with these; the
engine builds tools and providers from the stored JSON.
"""

from runner.providers.remote import ModelConfig
from runner.tools.breaker import BreakerConfig, BreakerState
from runner.tools.http_definition import ToolDefinition

__all__ = ["BreakerConfig", "BreakerState", "ModelConfig", "ToolDefinition"]
