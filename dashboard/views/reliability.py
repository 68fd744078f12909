"""Reliability: which tenant's agents are unreliable, and why?"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data, ui

st.title("Reliability")
WINDOWS = {"24 h": 1, "7 d": 7, "14 d": 14}
f1, f2 = st.columns([1, 3])
window = f1.selectbox("Window", list(WINDOWS), index=1, key="rel_window")
days = WINDOWS[window]
agents, fresh = data.reliability(data.db_key(), days)
tenant_names = sorted({a.tenant for a in agents})
tenant = f2.selectbox("Tenant", ["All tenants", *tenant_names], key="rel_tenant")
shown = [a for a in agents if tenant in ("All tenants", a.tenant)]
ui.freshness_note(fresh, derived="every figure on this page")
st.caption("Measured = succeeded ÷ finished runs (cancelled excluded). Projected = product of the measured "
           "per-step success rates. SLO from the agent's latest spec (`objective.slo.success_rate`).")

below = [a for a in shown if a.meets_slo is False]
c = st.columns(4)
c[0].metric("Agents", len(shown), border=True)
c[1].metric("Below SLO", len(below), border=True)
c[2].metric("Open incidents", sum(1 for a in shown if a.open_incident_since), border=True,
            help="agents whose last outcome was a failure, not yet followed by a success")
mttrs = [a.mttr_s for a in shown if a.mttr_s is not None]
c[3].metric("MTTR (median agent)", ui.duration(sorted(mttrs)[len(mttrs) // 2] if mttrs else None), border=True,
            help="time from an agent's first failure to its next success")

table = pd.DataFrame([{
    "status": "BELOW SLO" if a.meets_slo is False else ("meets SLO" if a.meets_slo else "no runs"),
    "tenant": a.tenant, "agent": a.agent_name, "runs": a.counts.finished, "failed": a.counts.not_succeeded,
    "measured": ui.pct(a.measured), "projected": ui.pct(a.projected), "SLO": ui.pct(a.slo),
    "steps": len(a.steps), "retries": a.retries, "MTTR": ui.duration(a.mttr_s),
    "open incident": ui.ago(a.open_incident_since) if a.open_incident_since else "—",
} for a in sorted(shown, key=lambda a: (a.meets_slo is not False, a.measured or 0))])
st.dataframe(table, hide_index=True, width="stretch", key="rel_table")

if shown:
    labels = {f"{a.tenant} / {a.agent_name}": a for a in shown}
    choice = st.selectbox("Agent", list(labels), key="rel_agent")
    a = labels[choice]
    st.subheader(f"{a.tenant} / {a.agent_name}" + (f" · v{a.version}" if a.version else ""))
    m = st.columns(5)
    m[0].metric("Measured end-to-end", ui.pct(a.measured), border=True,
                help=f"{a.counts.succeeded:,} of {a.counts.decided:,} finished runs")
    m[1].metric("Projected (∏ steps)", ui.pct(a.projected), border=True)
    m[2].metric("SLO", ui.pct(a.slo), border=True)
    m[3].metric("Retries", f"{a.retries:,}", border=True)
    m[4].metric("MTTR", ui.duration(a.mttr_s), border=True, help=f"{a.incidents} closed incident(s)")
    left, right = st.columns(2)
    with left:
        st.markdown("**Per-step success**")
        steps = pd.DataFrame([{"step": s.step_id, "outcomes": s.outcomes, "success": ui.pct(s.success_rate, 2),
                               "failed": s.failed, "retries": s.retries,
                               "avg latency": f"{s.latency_ms_avg:,.0f} ms" if s.latency_ms_avg is not None else "—",
                               "max latency": f"{s.latency_ms_max:,.0f} ms"} for s in a.steps])
        st.dataframe(steps, hide_index=True, width="stretch", key="rel_steps")
    with right:
        st.markdown("**Failures by category over time**")
        points = data.failures_over_time(data.db_key(), days * 24, a.tenant_id, a.agent_name)
        if points:
            frame = pd.DataFrame([{"hour": p.hour, "category": p.category, "runs": p.count} for p in points])
            cats = list(ui.CATEGORY_COLORS)
            st.altair_chart(alt.Chart(frame).mark_bar().encode(
                x=alt.X("hour:T", title=None), y=alt.Y("sum(runs):Q", title="failed runs"),
                color=alt.Color("category:N", scale=alt.Scale(domain=cats, range=list(ui.CATEGORY_COLORS.values())),
                                legend=alt.Legend(orient="bottom", title=None)),
                tooltip=["hour:T", "category:N", "runs:Q"]).properties(height=240), width="stretch")
        else:
            st.success("No failures in this window.")

st.subheader("Failures by category, all shown agents")
points = data.failures_over_time(data.db_key(), days * 24, None if tenant == "All tenants" else shown[0].tenant_id
                                 if shown else None, None)
if points:
    frame = pd.DataFrame([{"hour": p.hour, "category": p.category, "runs": p.count} for p in points])
    totals = frame.groupby("category")["runs"].sum().sort_values(ascending=False)
    st.caption(" · ".join(f"{cat} {int(n):,}" for cat, n in totals.items()))
    st.altair_chart(alt.Chart(frame).mark_area().encode(
        x=alt.X("hour:T", title=None), y=alt.Y("sum(runs):Q", stack=True, title="failed runs"),
        color=alt.Color("category:N", scale=alt.Scale(domain=list(ui.CATEGORY_COLORS),
                                                      range=list(ui.CATEGORY_COLORS.values())),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["hour:T", "category:N", "sum(runs):Q"]).properties(height=220), width="stretch")

st.subheader("Slowest steps")
slow = sorted(((a, s) for a in shown for s in a.steps if s.latency_ms_avg is not None),
              key=lambda pair: -(pair[1].latency_ms_avg or 0))[:10]
st.dataframe(pd.DataFrame([{"tenant": a.tenant, "agent": a.agent_name, "step": s.step_id,
                            "avg latency": f"{s.latency_ms_avg:,.0f} ms", "max latency": f"{s.latency_ms_max:,.0f} ms",
                            "outcomes": s.outcomes, "retries": s.retries} for a, s in slow]),
             hide_index=True, width="stretch", key="rel_slow")
