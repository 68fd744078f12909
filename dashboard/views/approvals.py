"""Approvals & escalations: what waits for a human?"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui

st.title("Approvals & escalations")
e = data.escalations(data.db_key())
now = e.now
ui.live_note(now, data.LIVE_TTL_S)
soonest = min((a.expires_at for a in e.pending), default=None)
oldest = min((r.updated_at for r in e.escalated + e.waiting_approval), default=None)
c = st.columns(4)
c[0].metric("Pending approvals", f"{e.pending_total:,}", border=True,
            help="approval requests waiting for the routed role")
c[1].metric("Next expiry", ui.left(soonest, now) if soonest else "—", border=True,
            help="when the soonest pending approval times out and its on_timeout applies")
c[2].metric("Escalated runs", len(e.escalated), border=True, help="need a human, then `POST /v1/runs/{id}/resume`")
c[3].metric("Oldest waiting", ui.ago(oldest, now) if oldest else "—", border=True,
            help="the longest any escalated or approval-waiting run has waited")

st.subheader("Approval queue (soonest expiry first)")
if e.pending:
    st.dataframe(pd.DataFrame([{
        "expires": ui.left(a.expires_at, now), "age": ui.ago(a.created_at, now), "tenant": a.tenant,
        "agent": a.agent_name, "action": a.action, "route": a.route, "on timeout": a.on_timeout, "step": a.step_id,
        "rule": a.rule, "run": a.run_id, "approval": a.id} for a in e.pending]),
        hide_index=True, width="stretch", key="apr_pending",
        column_config={"rule": st.column_config.TextColumn(width="medium")})
    if e.pending_total > len(e.pending):
        st.caption(f"Showing the {len(e.pending)} soonest to expire of {e.pending_total:,} pending approvals.")
else:
    st.success("No approvals pending.")

st.subheader("Escalated items (oldest first)")
if e.items:
    base = data.api_base()
    ui.table([{
        "waiting": ui.ago(i.since, now), "tenant": i.tenant, "agent": i.agent_name, "category": i.category or "",
        "reason": i.reason or "", "run": i.run_id, "item": i.item_index,
        "act": f"POST {base}/v1/runs/{i.run_id}/items/{i.item_index}/skip|fail"} for i in e.items], key="esc_items")
else:
    st.success("No escalated items.")

left, right = st.columns(2)
with left:
    st.subheader("Escalated runs")
    if e.escalated:
        ui.table([{"waiting": ui.ago(r.updated_at, now), "tenant": r.tenant, "agent": r.agent_name,
                                    "category": r.failure_category or "", "reason": r.reason or "", "run": r.id}
                                   for r in e.escalated], key="esc_table")
    else:
        st.success("No escalated runs.")
with right:
    st.subheader("Runs waiting for approval")
    if e.waiting_approval:
        st.dataframe(pd.DataFrame([{"waiting": ui.ago(r.updated_at, now), "tenant": r.tenant, "agent": r.agent_name,
                                    "run": r.id, "items": f"{r.items_done}/{r.items_total}"}
                                   for r in e.waiting_approval]),
                     hide_index=True, width="stretch", key="wait_table")
    else:
        st.success("No runs waiting for approval.")

st.subheader("Decided or expired in the last 24 h")
if e.decided:
    st.dataframe(pd.DataFrame([{
        "decided": ui.ago(a.decided_at, now), "outcome": a.state, "tenant": a.tenant, "agent": a.agent_name,
        "action": a.action, "route": a.route, "by": a.decided_by or ("timeout: " + a.on_timeout),
        "comment": a.comment or "", "waited": ui.duration((a.decided_at - a.created_at).total_seconds())
        if a.decided_at else "—", "run": a.run_id} for a in e.decided]),
        hide_index=True, width="stretch", key="apr_decided")
else:
    st.caption("No approvals decided in the last 24 h.")
ui.api_note("Approve or reject through `POST /v1/approvals/{id}/approve|reject`; resolve escalated items through "
            "`POST /v1/runs/{id}/items/{index}/skip|fail`.")
