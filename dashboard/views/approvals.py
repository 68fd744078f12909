"""Approvals & escalations: what waits for a human?"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import streamlit as st

from dashboard import data, ui

st.title("Approvals & escalations")
e = data.escalations(data.db_key())
now = datetime.now(UTC)
oldest = min((r.updated_at for r in e.escalated + e.waiting_approval), default=None)
c = st.columns(3)
c[0].metric("Escalated runs", len(e.escalated), border=True, help="need a human, then `POST /v1/runs/{id}/resume`")
c[1].metric("Waiting for approval", len(e.waiting_approval), border=True)
c[2].metric("Oldest waiting", ui.ago(oldest, now) if oldest else "—", border=True)

st.subheader("Escalated runs (oldest first)")
if e.escalated:
    base = data.api_base()
    st.dataframe(pd.DataFrame([{"waiting": ui.ago(r.updated_at, now), "tenant": r.tenant, "agent": r.agent_name,
                                "category": r.failure_category or "", "reason": r.reason or "", "run": r.id,
                                "resume": f"POST {base}/v1/runs/{r.id}/resume"} for r in e.escalated]),
                 hide_index=True, width="stretch", key="esc_table",
                 column_config={"reason": st.column_config.TextColumn(width="large")})
else:
    st.success("No escalated runs.")

st.subheader("Runs waiting for approval")
if e.waiting_approval:
    st.dataframe(pd.DataFrame([{"waiting": ui.ago(r.updated_at, now), "tenant": r.tenant, "agent": r.agent_name,
                                "run": r.id, "items": f"{r.items_done}/{r.items_total}"} for r in e.waiting_approval]),
                 hide_index=True, width="stretch", key="wait_table")
else:
    st.success("No runs waiting for approval.")

st.subheader("Approval queue (route, expiry)")
if e.approvals.configured and e.approvals.rows:
    st.dataframe(pd.DataFrame(list(e.approvals.rows)), hide_index=True, width="stretch")
else:
    ui.not_configured("Approvals", e.approvals.note)
ui.api_note("Approve or reject through `POST /v1/approvals/{id}/approve|reject`.")
