"""Run-end concerns as subscribers, so adding one (metrics, webhooks, a notifier) never edits the engine.

Like Dramatiq's middleware ``after_*`` hooks: the engine publishes a :class:`RunEnded` when a run reaches
a final or waiting state. ``in_transaction`` subscribers run inside the commit that ends the run (an
outbox row commits or rolls back with it); ``after_commit`` subscribers run once it landed. Subscribers
may name the states they want; the engine then asks whether a state has in-transaction subscribers, so a
run ending with none can end inside its last step's single statement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from tenants.kit import metrics
from tenants.kit.db import Session
from tenants.kit.logging import get_logger
from tenants.webhooks.service import emit

__all__ = ["RunEnded", "after_commit", "has_in_transaction", "in_transaction", "subscribe"]

log = get_logger("engine")
Phase = Literal["in_transaction", "after_commit"]


@dataclass(frozen=True, slots=True)
class RunEnded:
    tenant_id: str
    run_id: str
    agent_name: str
    state: str
    reason: str | None
    category: str | None
    cost_usd: Decimal


InTransaction = Callable[[Session, RunEnded], None]
AfterCommit = Callable[[RunEnded], None]
_in_tx: list[tuple[frozenset[str] | None, InTransaction]] = []
_after: list[tuple[frozenset[str] | None, AfterCommit]] = []


def subscribe(phase: Phase, fn: InTransaction | AfterCommit, states: Iterable[str] | None = None) -> None:
    """Call ``fn`` when a run ends (in one of ``states``; None: every state)."""
    wanted = frozenset(states) if states is not None else None
    if phase == "in_transaction":
        _in_tx.append((wanted, fn))  # type: ignore[arg-type]
    else:
        _after.append((wanted, fn))  # type: ignore[arg-type]


def has_in_transaction(state: str) -> bool:
    return any(wanted is None or state in wanted for wanted, _ in _in_tx)


def in_transaction(session: Session, ended: RunEnded) -> None:
    for wanted, fn in _in_tx:
        if wanted is None or ended.state in wanted:
            fn(session, ended)


def after_commit(ended: RunEnded) -> None:
    for wanted, fn in _after:
        if wanted is None or ended.state in wanted:
            try:
                fn(ended)
            except Exception:  # a subscriber must never fail a run that already ended
                log.warning("run_end_subscriber_failed", run_id=ended.run_id, exc_info=True)


def _webhook(session: Session, ended: RunEnded) -> None:
    """The ``run.failed`` / ``run.escalated`` webhooks: outbox rows, sent only if the run's end commits."""
    emit(session, ended.tenant_id, f"run.{ended.state}", {"run_id": ended.run_id, "agent": ended.agent_name,
                                                          "state": ended.state, "reason": ended.reason,
                                                          "failure_category": ended.category})


def _metrics(ended: RunEnded) -> None:
    metrics.run_finished(ended.tenant_id, ended.agent_name, ended.state, ended.category)


def _log(ended: RunEnded) -> None:
    log.info("run_finished", run_id=ended.run_id, tenant_id=ended.tenant_id, state=ended.state, reason=ended.reason)


subscribe("in_transaction", _webhook, states=("failed", "escalated"))
subscribe("after_commit", _metrics)
subscribe("after_commit", _log)
