"""Per-tenant state of the built-in sandbox tools (``sandbox.record``'s list of effects)."""
