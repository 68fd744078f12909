"""Midwatch operator dashboard (Streamlit). Run: ``streamlit run dashboard/app.py`` (``midwatch dashboard``).

Sign-in with an operator API key (or the one-time ``?login=`` link of ``midwatch up --demo``), then
seven read-only pages. Every figure comes from ``tenants.reliability`` read models; actions link to the API.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from dashboard import data, ui
from dashboard.login import consume_login_token, sign_in
from tenants.kit.errors import MidwatchError

HERE = Path(__file__).resolve().parent
VIEWS = HERE / "views"

st.set_page_config(page_title="Midwatch — operator dashboard", page_icon=":material/radar:", layout="wide",
                   initial_sidebar_state="expanded")
st.set_option("client.toolbarMode", "viewer")  # no "Deploy" button: this is an operator tool, not a dev server
st.markdown("""<style>
  [data-testid="stMetric"] {background: #fafbfc; border: 1px solid #e3e6ea; border-radius: 8px; padding: 10px 14px;}
  [data-testid="stMetricValue"] {font-size: 1.7rem;}
  .block-container {padding-top: 2.2rem;}
</style>""", unsafe_allow_html=True)


def _sign_in_page() -> None:
    st.title(":material/radar: Midwatch")
    st.subheader("Operator sign-in")
    st.caption("The dashboard shows every tenant, so it needs an operator API key (role `operator`). "
               "It is kept in this browser session only.")
    with st.form("sign_in"):
        key = st.text_input("Operator API key", type="password", key="operator_key", placeholder="mw_op_…")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            st.session_state["operator"] = sign_in(key)
        except MidwatchError as exc:
            st.error(f"Sign-in refused: {exc.detail}")
        else:
            st.rerun()


def _try_login_link() -> None:
    token = st.query_params.get("login")
    if not token or "operator" in st.session_state:
        return
    operator = consume_login_token(str(token), os.environ.get("MIDWATCH_DASHBOARD_DEMO_KEY"))
    del st.query_params["login"]  # never leave the token in the address bar
    if operator is None:
        st.warning("That login link is invalid, expired or already used. Sign in with an operator key.")
        return
    st.session_state["operator"] = operator


_try_login_link()
if "operator" not in st.session_state:
    st.navigation([st.Page(_sign_in_page, title="Sign in", icon=":material/key:")], position="hidden").run()
else:
    pages = {
        "Now": [
            st.Page(VIEWS / "overview.py", title="Overview", icon=":material/monitoring:", default=True),
            st.Page(VIEWS / "approvals.py", title="Approvals & escalations", icon=":material/front_hand:"),
        ],
        "Investigate": [
            st.Page(VIEWS / "reliability.py", title="Reliability", icon=":material/insights:"),
            st.Page(VIEWS / "runs.py", title="Runs", icon=":material/search:"),
            st.Page(VIEWS / "rehearsals.py", title="Rehearsals", icon=":material/theater_comedy:"),
        ],
        "Govern": [
            st.Page(VIEWS / "security.py", title="Security posture", icon=":material/shield:"),
            st.Page(VIEWS / "tenants.py", title="Tenants & budgets", icon=":material/apartment:"),
        ],
    }
    with st.sidebar:
        st.markdown("### :material/radar: Midwatch")
        operator = st.session_state["operator"]
        st.caption(f"Signed in as operator `{operator.key_id}` ({operator.via}) · read-only")
        if st.button("Sign out", key="sign_out"):
            del st.session_state["operator"]
            st.rerun()
        fresh = data.freshness(data.db_key())  # on every page: are the derived figures moving?
        if fresh.stale:
            st.warning(f"Read models {ui.duration(fresh.lag_s)} behind: the deriver is down or lagging.",
                       icon=":material/history:")
        elif fresh.as_of is not None:
            st.caption(f"Read models derived up to {fresh.as_of:%H:%M:%S} UTC")
    st.navigation(pages).run()
