"""Tenants & budgets: who runs what, what does it cost, and how close is each tenant to its limits?"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui
from tenants.reliability.queues import TIME_TO_START_MINUTES, TenantQueue

st.title("Tenants & budgets")
tb = data.tenants_and_budgets(data.db_key())
now = tb.now
ui.freshness_note(tb.freshness, derived="runs, success, spend, time-to-start",
                  live="queues, limits, use, reservations, slots, webhooks")
c = st.columns(5)
c[0].metric("Tenants", len(tb.tenants), border=True,
            help=f"{sum(1 for t in tb.tenants if t.status != 'active')} suspended")
c[1].metric("Spend 24 h", ui.money(sum(t.runs_24h.cost_usd for t in tb.tenants)), border=True)
c[2].metric("Spend 7 d", ui.money(sum(t.runs_7d.cost_usd for t in tb.tenants)), border=True)
c[3].metric("Limits at 80 %+", sum(1 for u in tb.budgets if (u.committed_rate or 0) >= 0.8), border=True,
            help="limits whose used + reserved amount is at least 80 % of the limit this period")
c[4].metric("Open reservations", f"{tb.reservations_total:,}", border=True,
            help="amounts held for model calls in flight (settled or released after the call)")


def _peak(rate: float | None) -> float | None:
    return None if rate is None else round(rate * 100, 1)


def _queue(q: TenantQueue | None) -> dict[str, object]:
    q = q or TenantQueue("", "")
    return {"waiting": q.waiting, "at cap": q.capped, "oldest waiting": ui.duration(q.oldest_waiting_s),
            "time-to-start p50": ui.duration(q.start_p50_s), "time-to-start p95": ui.duration(q.start_p95_s),
            f"started {TIME_TO_START_MINUTES} min": q.started}


st.caption(f"**waiting**: runs due now that start as soon as a worker is free; **at cap**: due runs held by a "
           "`concurrent_runs` limit; **oldest waiting**: the longest-waiting due run's time since it became "
           "runnable (all live). **time-to-start** p50 / p95: `started_at - created_at` of the runs that first "
           f"started in the last {TIME_TO_START_MINUTES} min (derived, within 5 %).")
st.dataframe(pd.DataFrame([{
    "tenant": t.name, "name": t.display_name, "status": t.status, **_queue(t.queue), "agents": t.agents,
    "active keys": t.active_keys,
    "runs 24 h": t.runs_24h.finished, "success 7 d": ui.pct(t.runs_7d.success_rate), "runs 7 d": t.runs_7d.finished,
    "spend 24 h": ui.money(t.runs_24h.cost_usd), "spend 7 d": ui.money(t.runs_7d.cost_usd),
    "limits": t.limits, "budget peak": _peak(t.budget_peak), "reservations": t.open_reservations,
    "running slots": t.slots_held, "webhooks failed": t.webhooks_failed, "webhooks pending": t.webhooks_pending,
    "onboarded": t.created_at.strftime("%Y-%m-%d")} for t in tb.tenants]),
    hide_index=True, width="stretch", key="tenants_table",
    column_config={"budget peak": st.column_config.ProgressColumn(
        "budget peak", min_value=0, max_value=100, format="%.0f%%",
        help="highest used + reserved share of any limit this period")})

st.subheader("Budgets: limits, use, reservations, threshold events")
if tb.budgets:
    st.dataframe(pd.DataFrame([{
        "tenant": u.tenant, "agent": "all agents" if u.agent == "*" else u.agent,
        "metric": ui.METRIC_LABELS.get(u.metric, u.metric), "period": u.period,
        "limit": ui.amount(u.metric, u.limit), "used": ui.amount(u.metric, u.used),
        "reserved": ui.amount(u.metric, u.reserved), "used %": ui.pct(u.used_rate, 0),
        "committed": _peak(u.committed_rate), "remaining": ui.amount(u.metric, u.remaining),
        "overspend": ui.amount(u.metric, u.overspend) if u.overspend else "",
        "resets": ui.left(u.period_end, now).replace(" left", "") if u.period_end else "—",
        "timezone": u.timezone} for u in tb.budgets]),
        hide_index=True, width="stretch", key="budgets_table",
        column_config={"committed": st.column_config.ProgressColumn(
            "used + reserved", min_value=0, max_value=100, format="%.0f%%")})
else:
    st.info("No budget limits configured yet.", icon=":material/savings:")

left, right = st.columns(2)
with left:
    st.markdown(f"**Open reservations** ({tb.reservations_total:,})")
    if tb.reservations:
        st.dataframe(pd.DataFrame([{
            "tenant": r.tenant, "agent": "all agents" if r.agent == "*" else r.agent,
            "metric": ui.METRIC_LABELS.get(r.metric, r.metric), "held": ui.amount(r.metric, r.amount),
            "age": ui.ago(r.created_at, now), "expires": ui.left(r.expires_at, now), "run": r.run_id or ""}
            for r in tb.reservations]), hide_index=True, width="stretch", key="reservations_table")
    else:
        st.caption("Nothing held right now.")
with right:
    st.markdown("**Threshold events (50 / 80 / 100 %)**")
    if tb.events:
        st.dataframe(pd.DataFrame([{
            "when": ui.ago(e.created_at, now), "tenant": e.tenant, "threshold": f"{e.threshold}%",
            "metric": ui.METRIC_LABELS.get(e.metric, e.metric), "period": f"{e.period} from {e.period_start:%m-%d}",
            "at": f"{ui.amount(e.metric, e.committed)} of {ui.amount(e.metric, e.limit)}",
            "agent": "all agents" if e.agent == "*" else e.agent} for e in tb.events]),
            hide_index=True, width="stretch", key="events_table")
    else:
        st.caption("No limit has crossed 50 % yet.")
ui.api_note("Onboard, suspend and resume tenants through `/v1/admin/tenants`; set limits through "
            "`PUT /v1/admin/tenants/{name}/budgets`.")
