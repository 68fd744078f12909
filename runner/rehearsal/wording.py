"""How the rehearsal report words what happened: percentages, and failure reasons grouped into kinds.

Shared by the figures (:mod:`runner.rehearsal.report`), the suggested changes
(:mod:`runner.rehearsal.advice`) and the terminal table (:mod:`runner.rehearsal.table`).
"""

from __future__ import annotations

__all__ = ["pct", "reason_kind"]

_KINDS = (("unknown_outcome", "unknown outcome of a side effect"),
          ("outcome unknown", "unknown outcome of a side effect"),
          ("refused", "the model refused"), ("before finishing", "cut off by max_tokens"),
          ("gave up after", "gave up after its retries"), ("not found in", "a field it reads is missing"),
          ("autonomy bound", "an autonomy bound"), ("401", "401 from the API"), ("403", "403 from the API"),
          ("does not match", "the answer broke a schema"), ("schema", "the answer broke a schema"),
          ("rule", "the answer broke a rule"), ("not JSON", "the answer was not JSON"),
          ("got text/html", "an HTML page where JSON was expected"), ("timeout", "timed out"),
          ("reset by peer", "connection reset"), ("mid-body", "a truncated answer"), ("circuit", "circuit open"))


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal (``—`` when there is none)."""
    return "—" if value is None else f"{value * 100:.1f}%"


def reason_kind(reason: str) -> str:
    """What kind of failure a (cleaned) reason describes, in a few words (``other`` when none fits)."""
    for needle, kind in _KINDS:
        if needle in reason:
            return kind
    return "other"
