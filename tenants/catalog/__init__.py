"""A tenant's catalog: HTTP tool definitions, model configurations and circuit-breaker states."""
