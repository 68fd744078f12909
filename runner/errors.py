"""Errors raised by the runner package.

One root, each error with a stable ``code`` that the API maps to problem+json::

    RunnerError                  runner_error
    ├── SpecInvalid              spec_invalid            (.issues: list[SpecIssue])
    ├── NonDeterministicSpec     non_deterministic_spec
    ├── TemplateError            template_error
    ├── RuleError                rule_error
    ├── SchemaInvalid            schema_invalid          (.path inside the schema)
    ├── RehearsalError           rehearsal_failed        (the rehearsal could not be carried out)
    └── StepFailed               step_failed             (.category from the failure taxonomy, .action)
        └── ToolArgsInvalid      tool_args_invalid       (category validation; .tool, .json_path, .feedback)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "FailureAction",
    "FailureCategory",
    "NonDeterministicSpec",
    "RehearsalError",
    "RuleError",
    "RunnerError",
    "SchemaInvalid",
    "SpecInvalid",
    "SpecIssue",
    "StepFailed",
    "TemplateError",
    "ToolArgsInvalid",
]

FailureCategory = Literal["dependency", "auth", "validation", "budget", "scope", "approval", "state", "internal"]
FailureAction = Literal["fail", "escalate", "skip_item"]


class SpecIssue(BaseModel):
    """One validation error of a spec; `path` is like "steps[1].llm.model" ("" for the root).

    Defined here, beside the error that carries it (re-exported by ``runner.spec``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    message: str
    code: str = "invalid"


class RunnerError(Exception):
    """Root of the runner package's errors. Each carries a stable `code`."""

    code = "runner_error"


class SpecInvalid(RunnerError):
    """An agent spec failed validation; `.issues` lists every problem found."""

    code = "spec_invalid"

    def __init__(self, issues: Sequence[SpecIssue]) -> None:
        self.issues: list[SpecIssue] = list(issues)
        shown = "; ".join(f"{i.path or '<root>'}: {i.message}" for i in self.issues[:5])
        more = f" (+{len(self.issues) - 5} more)" if len(self.issues) > 5 else ""
        super().__init__(f"spec has {len(self.issues)} error(s): {shown}{more}")


class NonDeterministicSpec(RunnerError):
    """A checkpoint's stored step id does not match the spec's step at that position."""

    code = "non_deterministic_spec"


class TemplateError(RunnerError):
    """A `{{ path }}` template is malformed or names a value that does not exist."""

    code = "template_error"


class RuleError(RunnerError):
    """A CEL rule failed to compile, exceeds its bounds, or did not evaluate to a bool."""

    code = "rule_error"


class SchemaInvalid(RunnerError):
    """A JSON Schema is invalid, or cannot run in bounded linear time (see runner.jsonschemas).

    ``path`` locates the problem inside the schema ("properties/name/pattern"; "" for the root).
    """

    code = "schema_invalid"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class RehearsalError(RunnerError):
    """A rehearsal could not be carried out (an undefined tool, a worker that would not start, a timeout):
    not a verdict on the agent. The message says what to fix."""

    code = "rehearsal_failed"


class StepFailed(RunnerError):
    """A step could not produce a valid output; ``category`` is the failure taxonomy, ``action`` what follows."""

    code = "step_failed"

    def __init__(self, category: FailureCategory, reason: str, *, action: FailureAction = "fail",
                 attempts: int = 1, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.category = category
        self.reason = reason
        self.action = action
        self.attempts = attempts
        self.details = details or {}


class ToolArgsInvalid(StepFailed):
    """A tool's arguments (from a spec step or a model's tool call) do not match its ``args_schema``,
    or a model's arguments were not a JSON object. Raised before any call is made.

    ``feedback`` is the text to return to a model as the tool's error result.
    """

    code = "tool_args_invalid"

    def __init__(self, tool: str, message: str, *, json_path: str = "$", action: FailureAction = "escalate") -> None:
        super().__init__("validation", f"arguments for tool {tool!r} are invalid at {json_path}: {message}",
                         action=action, details={"tool": tool, "json_path": json_path, "reason_code": self.code})
        self.tool = tool
        self.json_path = json_path
        self.message = message

    @property
    def feedback(self) -> str:
        """What to tell the model that sent these arguments."""
        return (f"Invalid arguments for tool {self.tool}: at {self.json_path}: {self.message}. "
                "Call it again with arguments that match its parameters schema.")
