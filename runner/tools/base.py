"""The tool interface and the per-call context the engine hands a tool."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from runner.tools.retry import RetryDecision

__all__ = ["BuiltinTool", "Tool", "ToolCall", "ToolResult"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    tenant_id: str
    run_id: str
    item_index: int
    step_id: str
    args: Any
    idempotency_key: str | None  # set for side-effecting steps: send it to the tool


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A validated tool result and every attempt that produced it (none recorded for built-ins)."""

    value: Any
    attempts: list[RetryDecision] = field(default_factory=list)


class Tool(Protocol):
    """A callable action. ``side_effect`` tools get a ledger entry; ``idempotent`` ones honour the key.

    ``args_schema`` (JSON Schema, or None for any object) is what a model is told the tool takes and what
    every call is checked against first (``runner.providers.tool_args``)."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def args_schema(self) -> Mapping[str, Any] | None: ...

    @property
    def side_effect(self) -> bool: ...

    @property
    def idempotent(self) -> bool: ...

    def call(self, call: ToolCall) -> Any:
        """Run the tool; its validated output (raises StepFailed)."""
        ...

    def call_detailed(self, call: ToolCall, *, start_attempt: int = 1) -> ToolResult:
        """Like :meth:`call`, also returning the attempts; ``start_attempt`` resumes after RetryLater."""
        ...


class BuiltinTool:
    """Base of the built-in tools: one attempt, nothing to retry (subclasses implement :meth:`call`)."""

    name: ClassVar[str]
    description: ClassVar[str]
    args_schema: ClassVar[Mapping[str, Any] | None] = None
    side_effect: ClassVar[bool] = False
    idempotent: ClassVar[bool] = True

    def call(self, call: ToolCall) -> Any:
        """Run the tool; its output."""
        raise NotImplementedError

    def call_detailed(self, call: ToolCall, *, start_attempt: int = 1) -> ToolResult:
        """:meth:`call` with no attempts recorded."""
        del start_attempt
        return ToolResult(self.call(call))
