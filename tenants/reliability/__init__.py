"""Reliability read models: rollups the runner maintains as it writes, and the dashboard's queries."""
