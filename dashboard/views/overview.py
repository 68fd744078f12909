"""Overview: is anything broken right now?"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard import data, ui
from tenants.reliability.overview import Overview, TenantBurn
from tenants.reliability.queues import QUEUE_ALERT_AFTER_S, TIME_TO_START_MINUTES, TenantQueue

st.title("Overview")


@st.fragment(run_every="30s")
def body() -> None:
    o = data.overview(data.db_key())
    _headline(o)
    _queues(o)
    left, right = st.columns([3, 2])
    with left:
        _runs_per_hour(o)
    with right:
        st.subheader("Spend per tenant")
        spend = pd.DataFrame([{"tenant": s.tenant, "runs 24 h": s.runs_24h, "spend 24 h": ui.money(s.cost_24h),
                               "spend 7 d": ui.money(s.cost_7d)} for s in o.spend])
        st.dataframe(spend, hide_index=True, width="stretch", key="ov_spend")
    _budget_burn(o)
    _latest_failures(o)
    ui.api_note("Resume, cancel and approve through the API (`POST /v1/runs/{id}/resume`).")


def _headline(o: Overview) -> None:
    ui.freshness_note(o.freshness, derived="success rates, runs per hour, spend, latest failures, time-to-start",
                      live="running, stuck, waiting, queues, approvals, budget burn")
    st.caption("Refreshes every 30 s · success rate = succeeded ÷ finished (cancelled runs excluded)")
    c = st.columns(4)
    c[0].metric("Success 24 h", ui.pct(o.last_24h.success_rate), border=True,
                help=f"{o.last_24h.succeeded:,} of {o.last_24h.decided:,} finished runs")
    c[1].metric("Success 7 d", ui.pct(o.last_7d.success_rate), border=True,
                help=f"{o.last_7d.succeeded:,} of {o.last_7d.decided:,} finished runs")
    c[2].metric("Finished 24 h", f"{o.last_24h.finished:,}", border=True)
    c[3].metric("Not succeeded 24 h", f"{o.last_24h.not_succeeded:,}", border=True,
                help="failed, escalated or budget-exhausted")
    c2 = st.columns(6)
    c2[0].metric("Running", f"{o.live.get('running', 0):,}", border=True)
    c2[1].metric("Queued", f"{sum(q.depth for q in o.queues):,}", border=True,
                 help="runs due now, waiting for a worker or for a concurrency slot (the Queues table)")
    c2[2].metric("Stuck", f"{o.live.get('stuck', 0):,}", border=True,
                 help="running with an expired lease, or handed back and not picked up for 2 min")
    c2[3].metric("Waiting approval", f"{o.live.get('waiting_approval', 0):,}", border=True, help="runs")
    c2[4].metric("Pending approvals", f"{o.pending_approvals:,}", border=True,
                 help="approval requests waiting for the routed role (Approvals & escalations page)")
    c2[5].metric("Escalated", f"{o.live.get('escalated', 0):,}", border=True, help="waiting for a human to resume")
    if o.live.get("stuck", 0):
        st.error(f"{o.live['stuck']} run(s) are stuck: their worker's lease expired. The sweeper should re-enqueue "
                 "them within seconds; if this number stays, check workers and the broker.", icon=":material/error:")


def _queues(o: Overview) -> None:
    st.subheader("Queues: tenants with work waiting")
    st.caption(f"Live. **waiting**: runs due now that start as soon as a worker is free; **at cap**: due runs held "
               "by the tenant's (or an agent's) `concurrent_runs` limit; **oldest waiting**: how long the "
               "longest-waiting due run has waited since it became runnable (submitted, handed back between time "
               f"slices, or due after a back-off). Derived: **time-to-start** p50 / p95 = `started_at - created_at` of "
               f"the runs that first started in the last {TIME_TO_START_MINUTES} min (within 5 %).")
    if not o.queues:
        st.success("No tenant has work waiting: every runnable run has a worker.", icon=":material/check_circle:")
        return
    late = [q for q in o.queues if q.overdue]
    if late:
        st.warning(f"{len(late)} tenant(s) have a run waiting longer than {ui.duration(QUEUE_ALERT_AFTER_S)}: "
                   + ", ".join(f"{q.tenant} ({ui.duration(q.oldest_waiting_s)}{', at its cap' if q.capped else ''})"
                               for q in late), icon=":material/hourglass_top:")
    ui.table([_queue_row(q) for q in o.queues], key="ov_queues", wide=())


def _queue_row(q: TenantQueue) -> dict[str, object]:
    held = "at cap" if q.capped and not q.waiting else ("partly at cap" if q.capped else "")
    status = f"WAITING > {ui.duration(QUEUE_ALERT_AFTER_S)}" if q.overdue else "ok"
    return {"tenant": q.tenant, "status": f"{status}, {held}" if held else status, "waiting": q.waiting,
            "at cap": q.capped, "oldest waiting": ui.duration(q.oldest_waiting_s),
            "running / cap": f"{q.running} / {q.cap}" if q.cap is not None else f"{q.running} / no cap",
            "time-to-start p50": ui.duration(q.start_p50_s), "time-to-start p95": ui.duration(q.start_p95_s),
            f"started {TIME_TO_START_MINUTES} min": q.started}


def _runs_per_hour(o: Overview) -> None:
    st.subheader("Runs per hour (24 h)")
    outcomes = ("succeeded", "failed", "escalated", "budget_exhausted", "cancelled")
    rows = [{"hour": h, "outcome": name, "runs": getattr(cnt, name)} for h, cnt in o.hourly for name in outcomes]
    frame = pd.DataFrame(rows)
    colors = ui.STATE_COLORS
    domain = ["succeeded", "failed", "escalated", "budget_exhausted", "cancelled"]
    chart = alt.Chart(frame).mark_bar().encode(
        x=alt.X("hour:T", title=None, axis=alt.Axis(format="%H:%M")),
        y=alt.Y("sum(runs):Q", title="finished runs"),
        color=alt.Color("outcome:N", scale=alt.Scale(domain=domain, range=[colors[d] for d in domain]),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["hour:T", "outcome:N", "runs:Q"],
    ).properties(height=280)
    st.altair_chart(chart, width="stretch")


def _budget_burn(o: Overview) -> None:
    st.subheader("Budget burn per tenant (this period)")
    if o.budgets:
        near = [b for b in o.budgets if b.peak is not None and (b.peak.committed_rate or 0) >= 0.8]
        if near:
            st.warning(f"{len(near)} tenant(s) at 80 % or more of a budget: "
                       + ", ".join(f"{b.tenant} ({ui.METRIC_LABELS[b.peak.metric]} {ui.pct(b.peak.committed_rate, 0)})"
                                   for b in near if b.peak), icon=":material/savings:")

        def cell(b: TenantBurn, metric: str) -> str:
            u = b.by_metric.get(metric)
            return "no limit" if u is None else ui.use(metric, u.used, u.limit, u.period, u.used_rate)

        burn = pd.DataFrame([{
            "tenant": b.tenant,
            "peak": round((b.peak.committed_rate or 0) * 100, 1) if b.peak else 0.0,
            "money": cell(b, "cost_usd"), "tokens": cell(b, "tokens"), "LLM calls": cell(b, "llm_calls"),
            "runs": cell(b, "runs")} for b in o.budgets])
        st.dataframe(burn, hide_index=True, width="stretch", key="ov_burn", column_config={
            "peak": st.column_config.ProgressColumn("peak (used + reserved)", min_value=0, max_value=100,
                                                    format="%.0f%%")})
    else:
        st.info("No tenant has a budget limit yet: set them with `PUT /v1/admin/tenants/{name}/budgets`.",
                icon=":material/savings:")


def _latest_failures(o: Overview) -> None:
    st.subheader("Latest failures")
    if not o.latest_failures:
        st.success("No failed or escalated runs recorded.")
    else:
        ui.table([{"when": ui.ago(f.at, o.now), "tenant": f.tenant, "agent": f.agent_name,
                               "state": ui.state_badge(f.state), "category": f.category, "reason": f.reason,
                   "run": f.run_id} for f in o.latest_failures])


body()
