"""The side-effect ledger: an intent is recorded (and committed) before every side-effecting call.

The idempotency key is ``mw-<run>-<item>-<step>[.<call>]``. A new key costs one fenced statement and a
durable commit. A key that already exists means an earlier attempt may have happened before a crash:
an idempotent tool is called again with the same key, a non-idempotent one escalates the item as
``unknown_outcome`` (a human must check), never calling twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.errors import StepFailed
from tenants.kit.db import Session
from tenants.kit.ids import utcnow
from tenants.runs.journal import JournalWrite
from tenants.runs.repository import RunRepository

if TYPE_CHECKING:
    from runner.engine._journal import Journal
    from runner.engine._kinds import StepContext

__all__ = ["ledger_intent"]


def ledger_intent(journal: Journal, ctx: StepContext, idempotent: bool, *, suffix: str = "",
                  tool_name: str | None = None) -> str:
    """Record the intent before a side effect; decide what an earlier intent means. Returns the key."""
    key = f"mw-{ctx.run_id}-{ctx.item_index}-{ctx.index}{suffix}"
    tool_name = tool_name or ctx.step.tool or ""
    now = utcnow()
    intent = {"idempotency_key": key, "item_index": ctx.item_index, "step_index": ctx.index, "step_id": ctx.step.id,
              "tool": tool_name, "state": "intent", "attempts": 1, "created_at": now}
    if journal.commit(journal.write(now, intent=intent), what="ledger intent").intent_recorded:
        return key
    verdict: list[str] = []

    def decide(session: Session) -> JournalWrite:
        repo = RunRepository(session, ctx.tenant_id)
        existing = repo.side_effect(key)
        assert existing is not None  # the intent insert just met it
        if existing.state in ("intent", "unknown") and not idempotent:
            repo.update_side_effect(key, state="unknown")
            verdict[:] = ["unknown"]
        else:
            repo.update_side_effect(key, state="intent", attempts=existing.attempts + 1)
            journal.event(now, "side_effect.retried", item_index=ctx.item_index, step_index=ctx.index,
                          step_id=ctx.step.id, chosen=tool_name, considered=["retry with the same key", "escalate"],
                          why=f"earlier attempt's outcome unknown ({existing.state}); the tool is idempotent, so "
                              f"it is retried with the same idempotency key")
            verdict[:] = ["retry"]
        return journal.write(now)

    journal.commit(decide, what="ledger intent (repeat)")
    if verdict == ["unknown"]:
        raise StepFailed("state", f"unknown_outcome: a call to non-idempotent tool {tool_name} may have "
                         f"happened before a crash (idempotency key {key}); a human must check",
                         action="escalate", details={"idempotency_key": key})
    return key
