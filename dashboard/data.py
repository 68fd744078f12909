"""Cached reads for the pages: one read-only session per call, results cached for a short TTL.

The database URL is part of every cache key, so two databases never share cached figures.
"""

from __future__ import annotations

from datetime import datetime

import streamlit as st

from tenants.kit.db import read_only
from tenants.kit.ids import utcnow
from tenants.kit.settings import Settings, get_settings
from tenants.reliability import agent_reliability, run_search, tenants_budgets
from tenants.reliability import escalations as escalation_queries
from tenants.reliability import overview as overview_queries
from tenants.reliability import security_posture as posture_queries
from tenants.reliability.common import Freshness, RunRow
from tenants.reliability.common import freshness as freshness_query

__all__ = ["LIVE_TTL_S", "SLOW_TTL_S", "api_base", "db_key", "escalations", "failures_over_time", "freshness",
           "overview", "reliability", "run_detail", "search_runs", "security_posture", "tenants_and_budgets"]

LIVE_TTL_S = 15
SLOW_TTL_S = 60


def settings() -> Settings:
    return get_settings()


def db_key() -> str:
    """The cache key of the configured database."""
    return settings().sqlalchemy_url


def api_base() -> str:
    s = settings()
    return f"http://{s.host}:{s.port}"


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def overview(db: str) -> overview_queries.Overview:
    with read_only() as session:
        return overview_queries.overview(session)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def freshness(db: str) -> Freshness:
    """How current the read models are (the sidebar shows it on every page)."""
    with read_only() as session:
        return freshness_query(session)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def reliability(db: str, days: int) -> tuple[tuple[agent_reliability.AgentReliability, ...], Freshness]:
    """Every agent's reliability over ``days``, and the freshness of the read models it came from."""
    with read_only() as session:
        fresh = freshness_query(session)
        return agent_reliability.reliability(session, days=days), fresh


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def failures_over_time(db: str, hours: int, tenant_id: str | None, agent_name: str | None
                       ) -> tuple[agent_reliability.FailurePoint, ...]:
    with read_only() as session:
        return agent_reliability.failures_over_time(session, hours=hours, tenant_id=tenant_id, agent_name=agent_name)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def search_runs(db: str, tenant_id: str | None, agent_name: str | None, state: str | None, run_id: str | None,
                limit: int) -> tuple[tuple[RunRow, ...], datetime]:
    """The newest matching runs, and when they were read."""
    with read_only() as session:
        return run_search.search_runs(session, tenant_id=tenant_id, agent_name=agent_name, state=state,
                                      run_id=run_id, limit=limit), utcnow()


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def run_detail(db: str, run_id: str) -> run_search.RunDetail | None:
    with read_only() as session:
        return run_search.run_detail(session, run_id)


@st.cache_data(ttl=LIVE_TTL_S, show_spinner=False)
def escalations(db: str) -> escalation_queries.Escalations:
    with read_only() as session:
        return escalation_queries.escalations(session)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def security_posture(db: str) -> posture_queries.SecurityPosture:
    """Verifies every tenant's audit chain: cached for 60 s."""
    with read_only() as session:
        return posture_queries.security_posture(session)


@st.cache_data(ttl=SLOW_TTL_S, show_spinner=False)
def tenants_and_budgets(db: str) -> tenants_budgets.TenantsAndBudgets:
    with read_only() as session:
        return tenants_budgets.tenants_and_budgets(session)

