"""Budgets: per-tenant (and per-agent) limits on money, tokens, LLM calls, runs and concurrency.

Every spend is reserved before it happens with one atomic conditional UPDATE, reconciled to the
actual amount afterwards, or released on failure. See :mod:`tenants.budgets.service` for the API
the engine calls, and its docstring for how the engine should use it.
"""
