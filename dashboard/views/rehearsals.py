"""Rehearsals: did each agent version survive its 3 a.m. rehearsal, and what would make it better?"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import data, ui
from tenants.kit.db import read_only
from tenants.rehearsals import service


@st.cache_data(ttl=data.LIVE_TTL_S, show_spinner=False)
def _history(db: str) -> list[dict[str, Any]]:
    with read_only() as session:
        return [{"id": r.id, "tenant": tenant, "agent": r.agent_name, "version": r.agent_version,
                 "source": r.source, "profile": r.profile, "seed": int(r.seed), "items": r.items, "repeat": r.repeat,
                 "state": r.state, "verdict": r.verdict, "measured": r.measured, "projected": r.projected,
                 "slo": r.slo, "pass_k": r.pass_k, "duplicates": r.duplicates, "recovery_s": r.recovery_s,
                 "error": r.error, "created_at": r.created_at, "requested_by": r.requested_by}
                for r, tenant in service.history(session)]


@st.cache_data(ttl=data.SLOW_TTL_S, show_spinner=False)
def _report(db: str, rehearsal_id: str) -> dict[str, Any] | None:
    with read_only() as session:
        found = service.report_of(session, rehearsal_id)
        return dict(found) if isinstance(found, dict) else None


def _version(row: dict[str, Any]) -> str:
    return f"v{row['version']}" if row["version"] is not None else "file"


def _outcome(row: dict[str, Any]) -> str:
    if row["state"] != "finished":
        return str(row["state"])
    return "PASS" if row["verdict"] == "pass" else "FAIL"


st.title("Rehearsals")
st.caption("Each rehearsal ran an agent version in a throwaway space against a seeded bad night (429 storms, HTML "
           "error pages, expired tokens, wrong model answers, its worker killed mid-batch). Measured = items that "
           "succeeded in every step without accepting a known-wrong answer; projected = product of the per-step "
           "rates. Rehearsal runs never appear in the other pages' figures.")
rows = _history(data.db_key())
tenants = sorted({r["tenant"] for r in rows})
tenant = st.selectbox("Tenant", ["All tenants", *tenants], key="rh_tenant")
shown = [r for r in rows if tenant in ("All tenants", r["tenant"])]
finished = [r for r in shown if r["state"] == "finished"]
c = st.columns(4)
c[0].metric("Rehearsals", len(shown), border=True)
c[1].metric("Passed", sum(1 for r in finished if r["verdict"] == "pass"), border=True)
c[2].metric("Failed", sum(1 for r in finished if r["verdict"] == "fail"), border=True)
c[3].metric("Duplicate side effects", sum(r["duplicates"] or 0 for r in finished), border=True,
            help="counted at the rehearsal's recording upstream: must be 0")

if not shown:
    st.info("No rehearsals yet: `midwatch rehearse AGENT` or `POST /v1/agents/{name}/rehearsals`.")
    st.stop()

st.subheader("Per agent version (latest rehearsal first)")
latest: dict[tuple[str, str, str], dict[str, Any]] = {}
counts: dict[tuple[str, str, str], int] = {}
for r in shown:  # newest first: the first row of a version is its latest rehearsal
    key = (r["tenant"], r["agent"], _version(r))
    latest.setdefault(key, r)
    counts[key] = counts.get(key, 0) + 1
st.dataframe(pd.DataFrame([{
    "tenant": t, "agent": a, "version": v, "rehearsals": counts[(t, a, v)], "latest": _outcome(r),
    "profile": r["profile"], "measured": ui.pct(r["measured"]), "SLO": ui.pct(r["slo"]),
    "pass^k": ui.pct(r["pass_k"]), "duplicates": r["duplicates"] if r["duplicates"] is not None else "—",
    "when": ui.ago(r["created_at"])} for (t, a, v), r in latest.items()]),
    hide_index=True, width="stretch", key="rh_versions")

st.subheader("History")
st.dataframe(pd.DataFrame([{
    "when": ui.ago(r["created_at"]), "tenant": r["tenant"], "agent": r["agent"], "version": _version(r),
    "outcome": _outcome(r), "profile": r["profile"], "seed": r["seed"],
    "items x repeat": f"{r['items']} x {r['repeat']}",
    "measured": ui.pct(r["measured"]), "projected": ui.pct(r["projected"]), "SLO": ui.pct(r["slo"]),
    "pass^k": ui.pct(r["pass_k"]), "duplicates": r["duplicates"] if r["duplicates"] is not None else "—",
    "recovery": ui.duration(r["recovery_s"]), "rehearsal": r["id"]} for r in shown]),
    hide_index=True, width="stretch", key="rh_history")

labels = {f"{r['tenant']} / {r['agent']} {_version(r)} · {r['profile']} · {_outcome(r)} · {r['id']}": r for r in shown}
choice = st.selectbox("Rehearsal", list(labels), key="rh_pick")
picked = labels[choice]
if picked["state"] == "error":
    st.error(f"Could not be carried out: {picked['error']}")
elif picked["state"] != "finished":
    st.info(f"This rehearsal is {picked['state']}.")
else:
    report = _report(data.db_key(), picked["id"])
    if report is not None:
        verdict = report["verdict"]
        (st.success if verdict["result"] == "pass" else st.error)(
            f"{verdict['result'].upper()}: " + "; ".join(verdict["reasons"]))
        f = report["figures"]
        m = st.columns(5)
        m[0].metric("Measured end-to-end", ui.pct(f["end_to_end"]["measured"]), border=True,
                    help=f"{f['end_to_end']['succeeded']} of {f['end_to_end']['tries']} tries")
        m[1].metric("Projected (∏ steps)", ui.pct(f["end_to_end"]["projected"]), border=True)
        m[2].metric("SLO", ui.pct(f["end_to_end"]["slo"]), border=True)
        m[3].metric(f"pass^{f['pass_k']['k']}", ui.pct(f["pass_k"]["value"]), border=True)
        m[4].metric("Recovery after kill -9", ui.duration(report["timings"].get("recovery_s")), border=True)
        st.markdown("**Changes that would most improve it**")
        if report["changes"]:
            st.dataframe(pd.DataFrame([{"change": c["change"], "evidence": c["evidence"]} for c in report["changes"]]),
                         hide_index=True, width="stretch", key="rh_changes")
        else:
            st.caption("None: nothing failed.")
        st.markdown("**Per step**")
        st.dataframe(pd.DataFrame([{
            "step": s["id"], "kind": s["kind"], "reached": s["reached"], "passed": s["passed"],
            "accepted wrong": s["accepted_wrong"], "success": ui.pct(s["success"]),
            "retries": ", ".join(f"{k} {v}" for k, v in s["retries"].items()) or "—",
            "failed": ", ".join(f"{k} {v}" for k, v in s["failed"].items()) or "—"} for s in f["steps"]]),
            hide_index=True, width="stretch", key="rh_steps")
        if f["escalations"]["by_reason"]:
            st.markdown("**Escalations and failures**")
            st.dataframe(pd.DataFrame([{"items": g["count"], "step": g["step"], "category": g["category"],
                                        "why": g["why"], "example": g["example"]}
                                       for g in f["escalations"]["by_reason"]]),
                         hide_index=True, width="stretch", key="rh_escalations")
