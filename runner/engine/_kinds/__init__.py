"""Step kinds: a table from a step's kind (``tool``, ``llm``, ``agent``) to the module that runs it.

Adding a kind is one module here (a :class:`StepKind`) plus its field on ``runner.spec.Step``. A kind
says what the step is about to do (for the approval gate) and then does it, returning a
:class:`StepOutcome`; it never writes to the database itself: side effects go through
:class:`EngineServices` (the ledger, the journal), which the run slice provides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from runner.engine._registry import Toolbox
from runner.spec import Step

if TYPE_CHECKING:
    from runner.engine._registry import LlmReservation
    from runner.providers.base import ModelResponse
    from tenants.runs.models import LoopCall

__all__ = ["KINDS", "EngineServices", "PendingAction", "StepContext", "StepKind", "StepOutcome"]


@dataclass(slots=True)
class StepOutcome:
    """What a step produced and the decision record that explains it."""

    output: Any
    considered: list[str]
    chosen: str
    why: str
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 1
    llm_calls: int = 0
    cost_usd: Decimal = Decimal(0)
    input_hash_source: Any = None
    idempotency_key: str | None = None  # set when the step's own call went through the side-effect ledger
    steps: int = 1  # step executions it counts for against autonomy.max_steps (an agent step: 1 + its tool calls)
    # Parts of cost_usd / llm_calls the kind already wrote to the run's counters in its own commits (the
    # agent loop's model turns, each settled in one commit with its checkpoint); the step's commit adds the rest.
    recorded_cost_usd: Decimal = Decimal(0)
    recorded_llm_calls: int = 0


@dataclass(frozen=True, slots=True)
class PendingAction:
    """What a step is about to do, as an approver sees it: the action and its rendered arguments."""

    action: str
    args: Any


class EngineServices(Protocol):
    """What a kind may ask of the run slice that executes it."""

    def ledger_intent(self, ctx: StepContext, idempotent: bool, *, suffix: str = "",
                      tool_name: str | None = None) -> str:
        """Record a side effect's intent durably before the call; its idempotency key."""
        ...

    def side_effect(self, step: Step) -> bool:
        """Whether the step's own tool call is a side effect."""
        ...

    def loop_calls(self, ctx: StepContext) -> list[LoopCall]:
        """The agent loop's checkpointed tool calls of this item and step (replayed on resume)."""
        ...

    def record_loop_call(self, ctx: StepContext, values: dict[str, Any], key: str | None, output: Any,
                         event: dict[str, Any]) -> None:
        """Checkpoint one agent-loop tool call (and its side effect's outcome) with its decision event."""
        ...

    def record_model_turn(self, ctx: StepContext, hold: LlmReservation, response: ModelResponse,
                          values: dict[str, Any] | None, event: dict[str, Any], llm_calls: int) -> Decimal:
        """Settle one agent-loop model call and record it in ONE commit: the budget ledger's charge, the run's
        cost and LLM-call counters, the turn's checkpoint (``values``; None for an answer that will not be
        replayed) and its decision event. Returns what the ledger charged."""
        ...

    def approve(self, ctx: StepContext, pending: PendingAction) -> None:
        """The approval gate for an action inside a step; returns when it may go ahead. Raises StepFailed when
        it was denied, and stops the slice (releasing the worker) while a human decides."""
        ...

    def at_checkpoint(self) -> None:
        """Called by a kind between two of its own checkpoints (an agent loop's turns and calls): on SIGTERM the
        run is handed back here, and the next worker resumes after the last checkpoint."""
        ...

    def autonomy_bound(self, steps_used: int, llm_calls: int, *, model_call: bool) -> str | None:
        """Which autonomy bound the next step execution (or, with ``model_call``, the next model call) would
        exceed after ``steps_used`` step executions and ``llm_calls`` model calls of the item; None if none."""
        ...


@dataclass(slots=True)
class StepContext:
    """One step of one item, as a kind sees it."""

    services: EngineServices
    toolbox: Toolbox
    run_id: str
    tenant_id: str
    item_index: int
    index: int
    step: Step
    context: dict[str, Any]  # what templates and rules see: input, item, steps (and output, step for rules)
    start_attempt: int = 1
    steps_used: int = 0  # the item's step executions before this step (autonomy.max_steps)
    llm_calls: int = 0  # the item's model calls before this step (autonomy.max_llm_calls)


class StepKind(Protocol):
    """How one kind of step runs."""

    def pending_action(self, ctx: StepContext) -> PendingAction:
        """What the step is about to do (rendered once; :meth:`run` receives it)."""
        ...

    def run(self, ctx: StepContext, pending: PendingAction) -> StepOutcome:
        """Do the step; raise StepFailed (or RetryLater) when it fails."""
        ...


def _table() -> dict[str, StepKind]:
    from runner.engine._kinds.agent import AgentKind
    from runner.engine._kinds.llm import LlmKind
    from runner.engine._kinds.tool import ToolKind

    return {"tool": ToolKind(), "llm": LlmKind(), "agent": AgentKind()}


KINDS: dict[str, StepKind] = _table()
