"""Observability: the metric set, database-derived gauges, worker heartbeats and the platform status."""
