"""midwatch."""
