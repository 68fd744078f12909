"""The tool interface and the per-call context the engine hands a tool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Tool", "ToolCall"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    tenant_id: str
    run_id: str
    item_index: int
    step_id: str
    args: Any
    idempotency_key: str | None  # set for side-effecting steps: send it to the tool


class Tool(Protocol):
    """A callable action. ``side_effect`` tools get a ledger entry; ``idempotent`` ones honour the key."""

    name: str
    side_effect: bool
    idempotent: bool

    def call(self, call: ToolCall) -> Any: ...
