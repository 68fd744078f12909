"""Errors raised by the runner package.

One root, each error with a stable ``code`` that the API maps to problem+json::

    RunnerError                  runner_error
    ├── SpecInvalid              spec_invalid            (.issues: list[SpecIssue])
    ├── NonDeterministicSpec     non_deterministic_spec
    ├── TemplateError            template_error
    ├── RuleError                rule_error
    ├── SchemaInvalid            schema_invalid          (.path inside the schema)
    └── StepFailed               step_failed             (.category from the failure taxonomy, .action)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from runner.spec import SpecIssue

__all__ = [
    "FailureAction",
    "FailureCategory",
    "NonDeterministicSpec",
    "RuleError",
    "RunnerError",
    "SchemaInvalid",
    "SpecInvalid",
    "StepFailed",
    "TemplateError",
]

FailureCategory = Literal["dependency", "auth", "validation", "budget", "scope", "approval", "state", "internal"]
FailureAction = Literal["fail", "escalate", "skip_item"]


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
