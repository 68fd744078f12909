"""Security posture: how exposed is each tenant?"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui

st.title("Security posture")
postures, operator_keys = data.security_posture(data.db_key())
st.caption("Score starts at 100 and loses points for each finding (old or idle keys, broad scopes, wildcard "
           "egress, broken decision-log chains). Panels whose tables have not landed are listed, not scored.")
c = st.columns(4)
c[0].metric("Tenants", len(postures), border=True)
c[1].metric("Lowest score", min((p.score for p in postures), default=100), border=True)
c[2].metric("Tenants below 80", sum(1 for p in postures if p.score < 80), border=True)
c[3].metric("Broken chains", sum(p.chains_broken for p in postures), border=True,
            help=f"decision-log hash chains of the latest runs: {sum(p.chains_checked for p in postures)} checked")

st.dataframe(pd.DataFrame([{
    "score": p.score, "tenant": p.tenant,
    "active keys": sum(1 for k in p.keys if not k.revoked),
    "oldest key": ui.duration(max((k.age_days for k in p.keys if not k.revoked), default=0) * 86400),
    "agents": len(p.scopes), "max tools": max((s.tools for s in p.scopes), default=0),
    "max hosts": max((s.egress for s in p.scopes), default=0),
    "chains": f"{p.chains_checked - p.chains_broken}/{p.chains_checked} ok",
    "reasons": "; ".join(p.reasons)} for p in postures]),
    hide_index=True, width="stretch", key="sec_table",
    column_config={"score": st.column_config.ProgressColumn(min_value=0, max_value=100, format="%d"),
                   "reasons": st.column_config.TextColumn(width="large")})

if postures:
    names = {p.tenant: p for p in postures}
    p = names[st.selectbox("Tenant", list(names), key="sec_tenant")]
    st.subheader(f"{p.tenant}: {p.score}/100")
    for reason in p.reasons:
        st.markdown(f"- {reason}")
    left, right = st.columns(2)
    with left:
        st.markdown("**API keys by age and last use**")
        st.dataframe(pd.DataFrame([{"prefix": k.prefix, "role": k.role, "age": ui.duration(k.age_days * 86400),
                                    "last used": "never" if k.last_used_days is None
                                    else ui.duration(k.last_used_days * 86400) + " ago",
                                    "revoked": "yes" if k.revoked else ""} for k in p.keys]),
                     hide_index=True, width="stretch", key="sec_keys")
    with right:
        st.markdown("**Scope breadth per agent**")
        st.dataframe(pd.DataFrame([{"agent": s.agent_name, "version": s.version, "tools": s.tools, "hosts": s.egress,
                                    "secrets": s.secrets, "approval rules": s.approvals,
                                    "wildcard egress": "YES" if s.wildcard_egress else ""} for s in p.scopes]),
                     hide_index=True, width="stretch", key="sec_scopes")
    for panel, title in ((p.secrets, "Secrets: age and rotation"), (p.violations, "Blocked scope / egress violations"),
                         (p.audit, "Audit chain verification")):
        if panel.configured:
            st.dataframe(pd.DataFrame(list(panel.rows)), hide_index=True, width="stretch")
        else:
            ui.not_configured(title, panel.note)

st.subheader("Operator keys")
st.dataframe(pd.DataFrame([{"prefix": k.prefix, "name": k.name, "age": ui.duration(k.age_days * 86400),
                            "last used": "never" if k.last_used_days is None
                            else ui.duration(k.last_used_days * 86400) + " ago",
                            "revoked": "yes" if k.revoked else ""} for k in operator_keys]),
             hide_index=True, width="stretch", key="sec_ops")
ui.api_note("Rotate keys through `/v1/keys` (create the new key, then revoke the old one).")
