"""Prometheus metrics the runner records."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["RUNS_FINISHED", "STEPS", "STEP_SECONDS", "SWEEPER_REQUEUED"]

STEPS = Counter("midwatch_steps_total", "Step executions by outcome and failure category",
                ["outcome", "category"])
STEP_SECONDS = Histogram("midwatch_step_seconds", "Wall time of a step including its checkpoint",
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120))
RUNS_FINISHED = Counter("midwatch_runs_finished_total", "Runs reaching a final state", ["state"])
SWEEPER_REQUEUED = Counter("midwatch_sweeper_requeued_total", "Stranded runs re-enqueued by the sweeper")
