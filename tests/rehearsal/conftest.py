"""The rehearsal's test tenant: a fragile and a hardened spec of the same agent, its tools pointing at a
"production" upstream, and a real secret — none of which a rehearsal may touch.

``refunds`` fetches an order (``crm.get_order``, bearer ``crm_token``), drafts a message with the model,
and sends it (``mail.send``, a side effect). Fragile: no retries on the lookup, no rules on the draft, a
non-idempotent send. Hardened: five attempts, a response schema, rules and an idempotent send.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.sandbox_upstream import FaultyUpstream
from tests.conftest import Harness, Tenant, api_harness

REAL_SECRET = "REAL-crm-token-do-not-touch-7f3a"
FAST_PLATFORM = {"MIDWATCH_LEASE_SECONDS": "1", "MIDWATCH_SWEEP_INTERVAL_SECONDS": "0.2",
                 "MIDWATCH_WAKE_GRACE_SECONDS": "2"}
# A short, hard night for tests: no Retry-After waits, faults often enough that a fragile spec shows them, no
# faults a spec cannot answer (refusals, answers cut off), the worker killed mid-batch.
TEST_PROFILE: dict[str, Any] = {
    "extends": "realistic", "name": "test-night",
    "tools": {"retry_after_s": 0, "rate_limit": 0.07, "unavailable": 0.06, "html": 0.03, "reset": 0.0,
              "reset_after_apply": 0.06, "truncated": 0.03, "slow": 0.0, "token_expiry": 0.0, "drift": 0.0,
              "storm": 0.15},
    "models": {"unavailable": 0.03, "rate_limit": 0.0, "rule_breaking": 0.25, "off_schema": 0.0, "refusal": 0.0,
               "truncated": 0.0, "bad_tool_args": 0.0},
}

SPEC = """\
apiVersion: midwatch/v1
name: refunds
objective: {{slo: {{success_rate: 0.9, pass_k: {{k: 2, min: 0.75}}}}}}
scope: {{tools: [crm.get_order, mail.send], egress: ["{netloc}"], secrets: [crm_token]}}
input:
  items: true
  schema: {{type: object, required: [order_id], properties: {{order_id: {{type: string}}}}}}
steps:
  - id: fetch
    tool: crm.get_order
    args: {{id: "{{{{ item.order_id }}}}"}}
  - id: draft
    llm: {{model: sandbox, prompt: "Tell {{{{ steps.fetch.output.email }}}} their refund is on its way"}}
{rules}  - id: send
    tool: mail.send
    args: {{to: "{{{{ steps.fetch.output.email }}}}", body: "{{{{ steps.draft.output.text }}}}"}}
"""
RULES = """\
    rules: ["size(output.text) > 0", "size(output.text) < 2000", "!output.text.contains('password')"]
    on_invalid: {retry: 2, then: escalate}
"""


def spec(production: FaultyUpstream, *, hardened: bool) -> str:
    return SPEC.format(netloc=production.netloc, rules=RULES if hardened else "")


def tools(production: FaultyUpstream, *, hardened: bool) -> dict[str, dict[str, Any]]:
    lookup: dict[str, Any] = {
        "method": "GET", "url": f"{production.url}/orders/{{{{ args.id }}}}",
        "auth": {"type": "bearer", "secret": "crm_token"},
        "retry": {"max_attempts": 5 if hardened else 1, "base_delay_s": 0.01, "max_delay_s": 0.05}}
    if hardened:
        lookup["response_schema"] = {"type": "object", "required": ["email", "amount"],
                                     "properties": {"email": {"type": "string", "format": "email"},
                                                    "amount": {"type": "number", "minimum": 1, "maximum": 500}}}
    send = {"method": "POST", "url": f"{production.url}/mail", "side_effect": True, "idempotent": hardened,
            "retry": {"max_attempts": 4, "base_delay_s": 0.01, "max_delay_s": 0.05}}
    return {"crm.get_order": lookup, "mail.send": send}


def put_agent(h: Harness, tenant: Tenant, production: FaultyUpstream, *, hardened: bool) -> int:
    """Store the tools and the spec; the stored version number."""
    for name, definition in tools(production, hardened=hardened).items():
        r = h.client.put(f"/v1/tools/{name}", json=definition, headers=tenant.headers)
        assert r.status_code in (200, 201), r.text
    return int(h.put_agent(tenant, spec(production, hardened=hardened))["version"]["version"])


def put_real_secret(h: Harness, tenant: Tenant) -> None:
    r = h.client.post("/v1/secrets", json={"name": "crm_token", "value": REAL_SECRET}, headers=tenant.headers)
    assert r.status_code == 201, r.text


# ---- one embedded installation shared by a module's tests (a rehearsal costs seconds) ---------------------


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The embedded default (SQLite, in-process broker, no worker threads: rehearsals bring their own) with its
    API, for the whole module."""
    data = tmp_path_factory.mktemp("rehearse") / "data"
    env = {"MIDWATCH_DATA_DIR": str(data), "MIDWATCH_OPERATOR_KEY": f"mw_op_test_{secrets.token_urlsafe(24)}",
           "MIDWATCH_LOG_LEVEL": "warning", "MIDWATCH_HEALTH_PORT": "0", "MIDWATCH_ALLOW_LOOPBACK_EGRESS": "true",
           "MIDWATCH_RATE_LIMIT_PER_MINUTE": "1000000", **FAST_PLATFORM}
    with pytest.MonkeyPatch.context() as mp, api_harness(mp, env) as harness:
        yield harness
    assert os.environ.get("MIDWATCH_DATA_DIR") != str(data)  # the environment is the next test's again


def data_dir(h: Harness) -> Path:
    """The installation's data directory."""
    return Path(h.env["MIDWATCH_DATA_DIR"])
