"""Deprecated: the engine's and sweeper's first four metrics, now forwarding to
:mod:`tenants.observability.metrics` (the one module defining every metric).

These call sites know neither the tenant nor the agent, so their series carry empty ``tenant`` and
``agent`` labels (unattributed). Delete this module once ``runner/engine`` and ``runner/sweeper`` call
``metrics.step_finished(...)``, ``metrics.run_finished(...)`` and ``metrics.sweeper_recovered(...)``
with the tenant and agent.
"""

from __future__ import annotations

from tenants.observability import metrics

__all__ = ["RUNS_FINISHED", "STEPS", "STEP_SECONDS", "SWEEPER_REQUEUED"]

_UNATTRIBUTED = ""


class _Steps:
    """``STEPS.labels(outcome, category).inc()``: one step outcome."""

    class _Child:
        def __init__(self, outcome: str, category: str) -> None:
            self.outcome, self.category = outcome, category

        def inc(self, amount: float = 1) -> None:
            ok = self.outcome == "succeeded"
            metrics.STEPS.labels(_UNATTRIBUTED, _UNATTRIBUTED, "succeeded" if ok else "failed").inc(amount)
            metrics.STEP_ATTEMPTS.labels(_UNATTRIBUTED, _UNATTRIBUTED).inc(amount)
            if not ok:
                metrics.STEP_FAILURES.labels(_UNATTRIBUTED, _UNATTRIBUTED, self.category or "internal").inc(amount)

    def labels(self, outcome: str, category: str) -> _Child:
        return self._Child(outcome, category)


class _StepSeconds:
    def observe(self, seconds: float) -> None:
        metrics.STEP_SECONDS.labels(_UNATTRIBUTED, _UNATTRIBUTED).observe(seconds)


class _RunsFinished:
    class _Child:
        def __init__(self, state: str) -> None:
            self.state = state

        def inc(self, amount: float = 1) -> None:
            metrics.run_finished(_UNATTRIBUTED, _UNATTRIBUTED, self.state)

    def labels(self, state: str) -> _Child:
        return self._Child(state)


class _SweeperRequeued:
    def inc(self, amount: float = 1) -> None:
        metrics.sweeper_recovered(_UNATTRIBUTED, int(amount))


STEPS = _Steps()
STEP_SECONDS = _StepSeconds()
RUNS_FINISHED = _RunsFinished()
SWEEPER_REQUEUED = _SweeperRequeued()
