"""Wire types of ``/v1/secrets``. Requests are strict (unknown fields rejected); no response type
has a field that could carry a value: values are write-only."""

from __future__ import annotations

from dataclasses import dataclass, fields

from pydantic import ConfigDict, Field

from platform_api.schemas.common import In
from tenants.secrets.service import (
    MAX_AGE_DAYS_LIMIT,
    MAX_GRACE_SECONDS,
    MAX_VALUE_CHARS,
    NAME_PATTERN,
    NAME_RULE,
    SecretMetadata,
)

__all__ = ["CreateSecret", "PromoteSecret", "RotateSecret", "SecretOut"]

class _In(In):
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)


class CreateSecret(_In):
    name: str = Field(pattern=NAME_PATTERN.pattern, description=f"{NAME_RULE}; unique")
    value: str = Field(min_length=1, max_length=MAX_VALUE_CHARS, description="write-only: never returned")
    max_age_days: int | None = Field(None, ge=1, le=MAX_AGE_DAYS_LIMIT,
                                     description="rotation policy: rotation_due once the current value is this old")
    grace_seconds: int | None = Field(None, ge=0, le=MAX_GRACE_SECONDS,
                                      description="how long the previous value keeps working after a promote "
                                                  "(default 3600)")


class RotateSecret(_In):
    value: str = Field(min_length=1, max_length=MAX_VALUE_CHARS,
                       description="the new value, staged as pending (write-only)")


class PromoteSecret(_In):
    version: int | None = Field(None, ge=1, description="promote only if this is still the pending version")
    verify_with_tool: None = Field(
        None, description="reserved (not available yet): verify the pending value through a tool before promoting; "
                          "must be null or absent")


@dataclass(frozen=True, slots=True)
class SecretOut(SecretMetadata):
    """A secret's metadata on the wire: the domain's own type, which deliberately has no field for a value."""

    @classmethod
    def of(cls, meta: SecretMetadata) -> SecretOut:
        return cls(**{f.name: getattr(meta, f.name) for f in fields(meta)})
