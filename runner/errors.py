"""The one exception root of the ``runner`` package.

    RunnerError (code)
    ├── SpecInvalid            spec_invalid          (carries .issues)
    ├── NonDeterministicSpec   non_deterministic_spec (a checkpoint's step id differs from the pinned spec)
    ├── TemplateError          template_error
    ├── RuleError              rule_error
    └── StepFailed             step_failed           (carries the failure category and the action to take)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "FailureCategory",
    "NonDeterministicSpec",
    "RuleError",
    "RunnerError",
    "SpecInvalid",
    "StepFailed",
    "TemplateError",
]

FailureCategory = Literal["dependency", "auth", "validation", "budget", "scope", "approval", "state", "internal"]
FailureAction = Literal["fail", "escalate", "skip_item"]


class RunnerError(Exception):
    """Root of the runner package's errors. Each carries a stable ``code``."""

    code: ClassVar[str] = "runner_error"


class SpecInvalid(RunnerError):
    code = "spec_invalid"

    def __init__(self, issues: list[Any]) -> None:
        super().__init__("; ".join(f"{getattr(i, 'path', '')}: {getattr(i, 'message', i)}" for i in issues))
        self.issues = issues


class NonDeterministicSpec(RunnerError):
    code = "non_deterministic_spec"


class TemplateError(RunnerError):
    code = "template_error"


class RuleError(RunnerError):
    code = "rule_error"


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
