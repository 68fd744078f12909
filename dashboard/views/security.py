"""Security posture: how exposed is each tenant?"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import data, ui

st.title("Security posture")
sp = data.security_posture(data.db_key())
postures = sp.tenants
if sp.now is not None:
    ui.live_note(sp.now, data.SLOW_TTL_S)
st.caption("Score starts at 100 and loses points for each finding: a broken audit chain, secrets overdue for "
           "rotation, blocked scope / egress attempts in the last 7 days, old or idle API keys, broad scopes, "
           "wildcard egress, broken decision-log chains. Audit chains are re-verified at most once a minute.")
c = st.columns(5)
c[0].metric("Lowest score", min((p.score for p in postures), default=100), border=True,
            help=f"{len(postures)} tenants; {sum(1 for p in postures if p.score < 80)} below 80")
c[1].metric("Secrets overdue", sum(p.overdue_secrets for p in postures), border=True,
            help="older than their rotation policy's max_age_days")
c[2].metric("Blocked 7 d", sum(sum(p.violations_7d.values()) for p in postures), border=True,
            help="attempts to use tools, hosts (egress) or secrets outside an agent's declared scope, last 7 days")
c[3].metric("Audit broken", sum(1 for p in postures if not p.audit.ok) + int(not sp.platform_audit.ok),
            border=True,
            help=f"audit chains failing verification (tenants and platform); platform: {sp.platform_audit.summary}")
c[4].metric("Run logs broken", sum(p.chains_broken for p in postures), border=True,
            help=f"decision-log hash chains of the latest runs: {sum(p.chains_checked for p in postures)} checked")
if not sp.platform_audit.ok:
    st.error(f"Platform audit chain (operator actions) {sp.platform_audit.summary}", icon=":material/gpp_bad:")
broken = [p for p in postures if not p.audit.ok]
if broken:
    st.error("Audit chain verification failed for " + ", ".join(f"{p.tenant} ({p.audit.summary})" for p in broken)
             + ": someone edited or deleted audit events. Investigate before trusting that tenant's history.",
             icon=":material/gpp_bad:")


def _kinds(v: dict[str, int]) -> str:
    """'3 egress, 1 tool' (hosts are egress attempts)."""
    return ", ".join(f"{n} {'egress' if kind == 'host' else kind}" for kind, n in sorted(v.items()) if n) or "0"


st.dataframe(pd.DataFrame([{
    "score": p.score, "tenant": p.tenant,
    "audit chain": p.audit.summary,
    "secrets": len(p.secrets), "overdue": p.overdue_secrets,
    "blocked 7 d": _kinds(p.violations_7d),
    "active keys": sum(1 for k in p.keys if not k.revoked),
    "oldest key": ui.duration(max((k.age_days for k in p.keys if not k.revoked), default=0) * 86400),
    "agents": len(p.scopes), "max tools": max((s.tools for s in p.scopes), default=0),
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
    (st.success if p.audit.ok else st.error)(f"Audit chain {p.audit.summary}")

    st.markdown("**Secrets: age and rotation** (metadata only; values are never read here)")
    if p.secrets:
        st.dataframe(pd.DataFrame([{
            "secret": s.name, "status": s.status, "age": f"{s.age_days} d",
            "max age": f"{s.max_age_days} d" if s.max_age_days else "—",
            "last rotated": ui.ago(s.last_rotated_at), "last used": ui.ago(s.last_used_at),
            "current": f"v{s.current_version}" if s.current_version else "—",
            "pending": f"v{s.pending_version}" if s.pending_version else "",
            "previous": f"v{s.previous_version}" if s.previous_version else ""} for s in p.secrets]),
            hide_index=True, width="stretch", key="sec_secrets")
    else:
        st.caption("This tenant stores no secrets.")

    st.markdown(f"**Blocked scope / egress attempts** (7 days: {_kinds(p.violations_7d)})")
    if p.latest_violations:
        ui.table([{
            "when": ui.ago(v.at), "kind": "egress" if v.kind == "host" else v.kind, "target": v.target,
            "agent": v.agent_name, "step": v.step_id, "reason": v.reason, "run": v.run_id}
            for v in p.latest_violations], key="sec_violations")
    else:
        st.caption("No blocked attempts in the last 7 days.")

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

st.subheader("Operator keys")
st.caption(f"Platform audit chain (onboard, suspend, resume): {sp.platform_audit.summary}")
st.dataframe(pd.DataFrame([{"prefix": k.prefix, "name": k.name, "age": ui.duration(k.age_days * 86400),
                            "last used": "never" if k.last_used_days is None
                            else ui.duration(k.last_used_days * 86400) + " ago",
                            "revoked": "yes" if k.revoked else ""} for k in sp.operator_keys]),
             hide_index=True, width="stretch", key="sec_ops")
ui.api_note("Rotate keys through `/v1/keys` (create the new key, then revoke the old one); rotate secrets through "
            "`/v1/secrets/{name}/rotate` then `/promote`; verify audit chains with `midwatch audit verify`.")
