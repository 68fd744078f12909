"""Runs: search, and one run's timeline (items, steps, retries, decisions, side effects, cost)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui
from tenants.runs.models import RUN_STATES

st.title("Runs")
tenants = {t.name: t.tenant_id for t in data.tenants_and_budgets(data.db_key()).tenants}
f = st.columns([2, 2, 2, 3])
tenant = f[0].selectbox("Tenant", ["All", *sorted(tenants)], key="runs_tenant")
agent = f[1].text_input("Agent", key="runs_agent", placeholder="e.g. invoice-followup")
state = f[2].selectbox("State", ["Any", *RUN_STATES], key="runs_state")
run_id = f[3].text_input("Run id", key="runs_id", value=st.query_params.get("run", ""), placeholder="run_…")
rows, read_at = data.search_runs(data.db_key(), tenants.get(tenant), agent.strip() or None,
                        None if state == "Any" else state, run_id.strip() or None, 100)
st.caption(f"{len(rows)} newest matching run(s) (at most 100).")
ui.live_note(read_at, data.LIVE_TTL_S, "every run, item, checkpoint and decision shown here")
st.dataframe(pd.DataFrame([{"run": r.id, "tenant": r.tenant, "agent": r.agent_name, "state": ui.state_badge(r.state),
                            "category": r.failure_category or "", "items": f"{r.items_done}/{r.items_total}",
                            "cost": ui.money(r.cost_usd), "created": r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                            "reason": r.reason or ""} for r in rows]),
             hide_index=True, width="stretch", key="runs_table")

if rows:
    picked = st.selectbox("Open run", [r.id for r in rows], key="runs_open")
    detail = data.run_detail(data.db_key(), picked)
    if detail is not None:
        r = detail.run
        st.subheader(f"Run {r.id}")
        st.caption(f"{r.tenant} / {r.agent_name} v{r.agent_version} · created {r.created_at:%Y-%m-%d %H:%M:%S} UTC")
        m = st.columns([1.6, 1, 1, 1, 1, 1])
        m[0].metric("State", ui.state_badge(r.state), border=True)
        m[1].metric("Items done", f"{r.items_done}/{r.items_total}", border=True)
        m[2].metric("Items failed", r.items_failed, border=True)
        m[3].metric("Retries", detail.retries, border=True)
        m[4].metric("Cost", ui.money(r.cost_usd), border=True)
        took = (r.finished_at - r.started_at).total_seconds() if r.finished_at and r.started_at else None
        m[5].metric("Duration", ui.duration(took), border=True)
        if r.reason:
            (st.warning if r.state == "escalated" else st.error)(f"**{r.failure_category or r.state}** — {r.reason}")
        if not detail.events:
            st.info(f"Decision log: {detail.chain_note}")
        else:
            (st.success if detail.chain_ok else st.error)(f"Decision log: {detail.chain_note}")
        tabs = st.tabs(["Timeline", "Items", "Checkpoints", "Side effects"])
        with tabs[0]:
            st.dataframe(pd.DataFrame([{**e, "at": e["at"].strftime("%H:%M:%S.%f")[:-3],
                                        "considered": ", ".join(map(str, e["considered"] or [])),
                                        "item": "" if e["item"] is None else e["item"]} for e in detail.events]),
                         hide_index=True, width="stretch", key="run_events",
                         column_config={"why": st.column_config.TextColumn(width="large")})
        with tabs[1]:
            st.dataframe(pd.DataFrame(list(detail.items)), hide_index=True, width="stretch", key="run_items")
        with tabs[2]:
            st.dataframe(pd.DataFrame(list(detail.checkpoints)), hide_index=True, width="stretch", key="run_cps")
        with tabs[3]:
            if detail.side_effects:
                st.dataframe(pd.DataFrame(list(detail.side_effects)), hide_index=True, width="stretch", key="run_fx")
            else:
                st.caption("No side-effecting calls in this run.")
        base = data.api_base()
        st.markdown("**Act through the API**")
        st.code(f"curl -H 'Authorization: Bearer $KEY' {base}/v1/runs/{r.id}/events\n"
                f"curl -X POST -H 'Authorization: Bearer $KEY' {base}/v1/runs/{r.id}/resume   # after escalation\n"
                f"curl -X POST -H 'Authorization: Bearer $KEY' {base}/v1/runs/{r.id}/cancel", language="bash")
