"""Agents and their immutable, versioned specs."""
