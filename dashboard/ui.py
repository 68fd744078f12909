"""Formatting and small shared widgets for the pages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import streamlit as st

from tenants.reliability.common import Freshness

__all__ = ["STATE_COLORS", "ago", "amount", "api_note", "at", "duration", "freshness_note", "left", "live_note",
           "money", "pct", "stale_warning", "state_badge", "use"]

STATE_COLORS = {
    "succeeded": "#2e7d32", "failed": "#c62828", "escalated": "#ef6c00", "budget_exhausted": "#6a1b9a",
    "cancelled": "#9e9e9e", "running": "#1565c0", "queued": "#78909c", "waiting_approval": "#f9a825",
}
CATEGORY_COLORS = {
    "dependency": "#e53935", "auth": "#8e24aa", "validation": "#fb8c00", "budget": "#6d4c41", "scope": "#3949ab",
    "approval": "#fdd835", "state": "#00897b", "internal": "#546e7a",
}


def pct(rate: float | None, digits: int = 1) -> str:
    """70.0% (or an em dash when nothing was measured)."""
    return "—" if rate is None else f"{rate * 100:.{digits}f}%"


def money(value: Decimal | float | None) -> str:
    return "—" if value is None else f"${float(value):,.2f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def ago(then: datetime | None, now: datetime | None = None) -> str:
    if then is None:
        return "never"
    now = now or datetime.now(UTC)
    return duration(max(0.0, (now - then).total_seconds())) + " ago"


def state_badge(state: str) -> str:
    """The state as operators read it in tables (plain text: headless browsers and terminals lack emoji fonts)."""
    return state.replace("_", " ")


def left(then: datetime | None, now: datetime | None = None) -> str:
    """Time left until ``then`` ("12.0 min left"), or how long ago it passed ("expired 3.0 min ago")."""
    if then is None:
        return "—"
    now = now or datetime.now(UTC)
    seconds = (then - now).total_seconds()
    return f"{duration(seconds)} left" if seconds >= 0 else f"expired {duration(-seconds)} ago"


METRIC_LABELS = {"cost_usd": "money", "tokens": "tokens", "llm_calls": "LLM calls", "runs": "runs",
                 "concurrent_runs": "concurrent runs"}


def amount(metric: str, value: Decimal | float | None) -> str:
    """A budget amount in its metric's unit: $8.00 for money, 12,000 for counters."""
    if value is None:
        return "—"
    return money(value) if metric == "cost_usd" else f"{float(value):,.0f}"


def use(metric: str, used: Decimal, limit: Decimal, period: str, rate: float | None) -> str:
    """'$8.00 of $10.00 / day (80%)'."""
    per = "" if period == "none" else f" / {period}"
    return f"{amount(metric, used)} of {amount(metric, limit)}{per} ({pct(rate, 0)})"


def api_note(text: str) -> None:
    st.caption(f"Read-only dashboard. {text}")


def table(rows: list[dict[str, Any]], key: str | None = None, wide: tuple[str, ...] = ("reason",)) -> None:
    """A full-width table of ``rows`` without the index; the ``wide`` text columns get the most room."""
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key=key,
                 column_config={c: st.column_config.TextColumn(width="large") for c in wide})


def at(when: datetime) -> str:
    """A UTC time as the pages print it: 2026-11-25 03:12:09 UTC."""
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def live_note(read_at: datetime, every_s: int, what: str = "every figure on this page") -> None:
    """The freshness line of a page whose figures are read from the base tables (no read models)."""
    st.caption(f"Live: {what} is read from the database, as of {at(read_at)} (re-read at most every {every_s} s).")


def freshness_note(f: Freshness, derived: str, live: str | None = None) -> None:
    """A page's freshness line, saying which figures are live (as of the read) and which are derived from the
    decision log (as of the read models), and the stale warning when the derived ones trail by over 2 min."""
    parts = [] if live is None else [f"**Live** ({live}): as of {at(f.read_at)}"]
    if f.as_of is None:
        parts.append(f"**Derived** ({derived}): no decision events yet")
    else:
        pending = ("every event derived" if not f.underived
                   else f"{f.underived_text} newer event(s) not derived yet")
        parts.append(f"**Derived** ({derived}): decision log up to {at(f.as_of)}, {pending}")
    st.caption(" · ".join(parts))
    if f.stale:
        stale_warning(f)


def stale_warning(f: Freshness) -> None:
    """The banner an operator must not miss: derived figures are stale because the deriver is down or behind."""
    ran = ("The read-model deriver has never run." if f.derived_at is None
           else f"The read-model deriver last ran {ago(f.derived_at, f.read_at)}.")
    waiting = (f" {f.underived_text} decision event(s) written since are not derived yet (the oldest "
               f"{ago(f.oldest_underived_at, f.read_at)})." if f.underived else "")
    st.warning(
        f"**Derived figures are stale: {duration(f.lag_s)} behind.** They include decision events up to "
        f"{at(f.as_of) if f.as_of else 'none'} only.{waiting} {ran} It runs inside `midwatch scheduler` (and "
        "`midwatch up`) about once a second; while it is down, success rates, runs per hour, spend, failures "
        "and time-to-start stop moving. Check the scheduler (`midwatch status`). Live figures stay current.",
        icon=":material/history:")
