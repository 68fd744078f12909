"""Tenants & budgets: who runs what, and what does it cost?"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui

st.title("Tenants & budgets")
tb = data.tenants_and_budgets(data.db_key())
c = st.columns(4)
c[0].metric("Tenants", len(tb.tenants), border=True)
c[1].metric("Suspended", sum(1 for t in tb.tenants if t.status != "active"), border=True)
c[2].metric("Spend 24 h", ui.money(sum(t.runs_24h.cost_usd for t in tb.tenants)), border=True)
c[3].metric("Spend 7 d", ui.money(sum(t.runs_7d.cost_usd for t in tb.tenants)), border=True)
st.dataframe(pd.DataFrame([{
    "tenant": t.name, "name": t.display_name, "status": t.status, "agents": t.agents, "active keys": t.active_keys,
    "runs 24 h": t.runs_24h.finished, "success 7 d": ui.pct(t.runs_7d.success_rate), "runs 7 d": t.runs_7d.finished,
    "spend 24 h": ui.money(t.runs_24h.cost_usd), "spend 7 d": ui.money(t.runs_7d.cost_usd),
    "onboarded": t.created_at.strftime("%Y-%m-%d")} for t in tb.tenants]),
    hide_index=True, width="stretch", key="tenants_table")
st.subheader("Budgets: limits, use, reservations, threshold events")
if tb.budgets.configured and tb.budgets.rows:
    st.dataframe(pd.DataFrame(list(tb.budgets.rows)), hide_index=True, width="stretch")
else:
    ui.not_configured("Budgets", tb.budgets.note)
ui.api_note("Onboard, suspend and resume tenants through `/v1/admin/tenants`; set budgets through `/v1/budgets`.")
