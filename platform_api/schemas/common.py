"""What every wire type shares: strict requests, explicit responses, pages, money, public text."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer, model_validator

from tenants.kit.errors import scrub_reason

__all__ = ["In", "Money", "Out", "Page", "PublicText", "find_nul"]

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

    @model_validator(mode="after")
    def _no_nul(self) -> In:
        where = find_nul(dict(self))
        if where is not None:
            raise ValueError(f"{where}: text cannot contain NUL (\\u0000) characters")
        return self


class Out(BaseModel):
    """Base of responses read from ORM rows."""

    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    """A page of results; pass ``next_cursor`` as ``cursor`` for the next page (null: no more)."""

    data: list[T]
    next_cursor: str | None = None
