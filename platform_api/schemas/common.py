"""What every wire type shares: strict requests, explicit responses, pages, money, public text."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

from tenants.kit.errors import scrub_reason

__all__ = ["In", "Money", "Out", "Page", "Problem", "PublicText", "find_nul"]

T = TypeVar("T")

# Money on the wire: a decimal string ("0.0123"), never a float and never "0E-8".
Money = Annotated[Decimal, PlainSerializer(lambda d: format(d.normalize(), "f"), return_type=str)]
# A reason or error text stored from an exception: never shown with SQL, parameters or a traceback.
PublicText = Annotated[str | None, AfterValidator(scrub_reason)]


def find_nul(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding a NUL character, else None.

    PostgreSQL cannot store NUL in text or JSONB, so such input is rejected at the edge (on every
    database, so SQLite and PostgreSQL installs answer alike). Iterative: depth is the decoder's to bound.
    """
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, current = stack.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return where or "(body)"
        elif isinstance(current, dict):
            for key, child in current.items():
                if isinstance(key, str) and "\x00" in key:
                    return f"{where}[{key!r}]"
                stack.append((f"{where}[{key!r}]" if where else str(key), child))
        elif isinstance(current, list | tuple):
            stack.extend((f"{where}[{i}]", child) for i, child in enumerate(current))
    return None


class In(BaseModel):
    """Base of request bodies: unknown fields rejected, strict types, no NUL in any text."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _integral_numbers(cls, data: Any) -> Any:
        """JSON has one number type, and JSON Schema (the OpenAPI document) calls ``3.0`` an integer: an
        integer field takes it as 3 (``3.5`` stays refused)."""
        if not isinstance(data, dict):
            return data
        fixed = {key: int(value) for name, field in cls.model_fields.items()
                 if isinstance(value := data.get(key := field.alias or name), float) and value.is_integer()
                 and _integer_field(field.annotation)}
        return {**data, **fixed} if fixed else data

    @model_validator(mode="after")
    def _no_nul(self) -> In:
        where = find_nul(dict(self))
        if where is not None:
            raise ValueError(f"{where}: text cannot contain NUL (\\u0000) characters")
        return self


def _integer_field(annotation: Any) -> bool:
    """``annotation`` takes integers and no other numbers (``int``, ``int | None``, ``str | int``)."""
    options = get_args(annotation) or (annotation,)
    return int in options and float not in options and Decimal not in options


class Out(BaseModel):
    """Base of responses read from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """A page of results; pass ``next_cursor`` as ``cursor`` for the next page (null: no more)."""

    data: list[T]
    next_cursor: str | None = None


class Problem(BaseModel):
    """Every error (RFC 9457 ``application/problem+json``): ``code`` is stable, ``detail`` is for people.

    Some codes add members: ``errors`` (validation_error, spec_invalid), ``field``, ``retry_after_s``
    (rate_limited, unavailable), ``run_id`` (idempotency_conflict), ``state`` (conflict)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="urn:midwatch:error:<code>")
    title: str
    status: int
    code: str = Field(description="stable machine-readable error code")
    detail: str
