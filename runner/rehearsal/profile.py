"""Rehearsal profiles: how often each fault strikes. Built in: ``gentle``, ``realistic``, ``hostile``.

A profile file (``--profile night.yaml``) starts from a built-in one (``extends: realistic``, the default)
and overrides what it names; unknown keys are an error and every rate is bounded, so a profile is safe to
accept over the API too. Rates are per request of a call (the first request of each tool or model call
of each item and step); a later request of the same call (a retry) meets a fault ``retry_factor`` times as
often, or the very same transient fault again with probability ``storm`` (a 429 storm, a 503 burst).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runner.errors import SpecInvalid
from runner.spec import SpecIssue

__all__ = ["BUILTIN", "ModelFaults", "PlatformFaults", "Profile", "ToolFaults", "load_profile", "profile_from"]

Rate = Annotated[float, Field(ge=0, le=1)]
MAX_PROFILE_BYTES = 64 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolFaults(_Strict):
    """Faults of the HTTP APIs behind the agent's tools (and of the APIs the built-in tools stand in for)."""

    rate_limit: Rate = 0.0  # 429 with Retry-After
    retry_after_s: float = Field(default=1.0, ge=0, le=30)
    unavailable: Rate = 0.0  # 503
    html: Rate = 0.0  # 200 text/html: a proxy's error page where JSON was expected
    reset: Rate = 0.0  # connection reset before the API did anything
    reset_after_apply: Rate = 0.0  # the API acted, then the connection was lost: an unknown outcome
    truncated: Rate = 0.0  # half a JSON body (the API acted)
    slow: Rate = 0.0  # a latency spike within the tool's timeout
    slow_s: float = Field(default=0.3, ge=0, le=10)
    token_expiry: Rate = 0.0  # 401 invalid_token (tools with auth): OAuth tools refresh, static secrets escalate
    drift: Rate = 0.0  # a field of the answer renamed (schema drift)
    storm: Rate = 0.0
    timeouts: int = Field(default=0, ge=0, le=5)  # answers held past the tool's timeout_s (each costs that long)
    drift_from: float | None = Field(default=None, ge=0, le=1)  # from this share of the items on, every answer drifts

    @model_validator(mode="after")
    def _at_most_one(self) -> ToolFaults:
        total = (self.rate_limit + self.unavailable + self.html + self.reset + self.reset_after_apply
                 + self.truncated + self.slow + self.token_expiry + self.drift)
        if total > 1:
            raise ValueError(f"tool fault rates add up to {total:.2f}; at most 1")
        return self


class ModelFaults(_Strict):
    """Faults of the models: transport errors and answers that are wrong in ways a spec can catch."""

    unavailable: Rate = 0.0  # 503
    rate_limit: Rate = 0.0  # 429
    rule_breaking: Rate = 0.0  # a leaked password, a 6,000-character ramble, an empty answer
    off_schema: Rate = 0.0  # a structured answer that breaks the output schema, or prose instead of JSON
    refusal: Rate = 0.0
    truncated: Rate = 0.0  # an answer of about 1,200 tokens: cut off unless the step's max_tokens leaves room
    bad_tool_args: Rate = 0.0  # agent steps: tool arguments that are not JSON

    @model_validator(mode="after")
    def _at_most_one(self) -> ModelFaults:
        total = (self.unavailable + self.rate_limit + self.rule_breaking + self.off_schema + self.refusal
                 + self.truncated + self.bad_tool_args)
        if total > 1:
            raise ValueError(f"model fault rates add up to {total:.2f}; at most 1")
        return self


class PlatformFaults(_Strict):
    """Faults of the rehearsal's own worker and queue (never anyone else's)."""

    kill_worker: bool = False  # kill -9 the worker mid-batch, while a call of the last repetition is in flight
    drop_queue: bool = False  # drop the rehearsal queue's messages at that moment


class Profile(_Strict):
    """A named set of fault rates (see the module docstring)."""

    name: str = Field(default="custom", min_length=1, max_length=40, pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = Field(default="", max_length=500)
    tools: ToolFaults = Field(default_factory=ToolFaults)
    models: ModelFaults = Field(default_factory=ModelFaults)
    platform: PlatformFaults = Field(default_factory=PlatformFaults)
    retry_factor: float = Field(default=0.5, ge=0, le=1)
    approvals: Literal["approve", "reject"] = "approve"  # how the scripted human answers approval requests


BUILTIN: dict[str, Profile] = {
    "gentle": Profile(
        name="gentle", description="a quiet night: a few 429s and 503s, the odd bad answer; no platform faults",
        tools=ToolFaults(rate_limit=0.02, unavailable=0.02, html=0.01, reset=0.01, slow=0.02, slow_s=0.2, storm=0.1),
        models=ModelFaults(unavailable=0.01, rule_breaking=0.02, off_schema=0.02)),
    "realistic": Profile(
        name="realistic", description="an ordinary bad night: 429 storms, 503 bursts, HTML error pages, resets, "
        "truncated bodies, an expired token, a drifted field, wrong model answers, and the worker killed mid-batch",
        tools=ToolFaults(rate_limit=0.05, unavailable=0.05, html=0.02, reset=0.02, reset_after_apply=0.01,
                         truncated=0.02, slow=0.04, token_expiry=0.02, drift=0.01, storm=0.25),
        models=ModelFaults(unavailable=0.02, rate_limit=0.02, rule_breaking=0.06, off_schema=0.06, refusal=0.005,
                           truncated=0.01, bad_tool_args=0.05),
        platform=PlatformFaults(kill_worker=True, drop_queue=True)),
    "hostile": Profile(
        name="hostile", description="everything at once, often: long storms, timeouts, an upstream that drifts for "
        "good a third of the way from the end, models that misbehave one call in three",
        tools=ToolFaults(rate_limit=0.1, retry_after_s=2, unavailable=0.1, html=0.04, reset=0.04,
                         reset_after_apply=0.03, truncated=0.04, slow=0.05, slow_s=0.5, token_expiry=0.04, drift=0.03,
                         storm=0.5, timeouts=2, drift_from=0.66),
        models=ModelFaults(unavailable=0.04, rate_limit=0.04, rule_breaking=0.1, off_schema=0.1, refusal=0.02,
                           truncated=0.03, bad_tool_args=0.1),
        platform=PlatformFaults(kill_worker=True, drop_queue=True)),
}


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def profile_from(data: Any, *, default_name: str = "custom") -> Profile:
    """A custom profile from a mapping: ``extends`` (a built-in name, default ``realistic``) plus overrides.

    Raises SpecInvalid (422 ``spec_invalid``) naming every bad field.
    """
    if not isinstance(data, dict):
        raise SpecInvalid([SpecIssue(path="", message="a profile must be a mapping", code="type")])
    fields = dict(data)
    base_name = fields.pop("extends", "realistic")
    if base_name not in BUILTIN:
        raise SpecInvalid([SpecIssue(path="extends", code="choice",
                                     message=f"extends must be one of {', '.join(BUILTIN)}")])
    fields.setdefault("name", default_name)
    merged = _merge(BUILTIN[str(base_name)].model_dump(), fields)
    try:
        return Profile.model_validate(merged)
    except ValidationError as exc:
        issues = [SpecIssue(path=".".join(str(p) for p in e["loc"]), message=e["msg"], code="invalid")
                  for e in exc.errors(include_url=False)]
        raise SpecInvalid(issues) from None


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile file (YAML or JSON)."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise SpecInvalid([SpecIssue(path="profile", code="not_found", message=(
            f"{name_or_path!r} is neither a built-in profile ({', '.join(BUILTIN)}) nor a profile file"))])
    data = path.read_bytes()
    if len(data) > MAX_PROFILE_BYTES:
        raise SpecInvalid([SpecIssue(path="", code="too_large",
                                     message=f"profile file over {MAX_PROFILE_BYTES} bytes")])
    try:
        loaded = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise SpecInvalid([SpecIssue(path="", code="syntax", message=f"profile is not YAML: {exc}")]) from None
    stem = "".join(c if c.isalnum() or c in "_.-" else "-" for c in path.stem.lower()) or "custom"
    return profile_from(loaded, default_name=stem)
