"""The demo tenant and agent that ``midwatch up --demo`` creates (idempotently)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from runner.spec import load_spec, parse_spec
from tenants.accounts.repository import AccountsPlatformRepository
from tenants.accounts.service import onboard_tenant
from tenants.agents.service import store_version
from tenants.kit.db import unit_of_work
from tenants.runs.service import submit_run

__all__ = ["DEMO_SPEC", "ensure_demo"]

DEMO_SPEC = """\
apiVersion: midwatch/v1
name: invoice-followup
description: "Chase overdue invoices politely (sandbox tools and model: no network needed)."
objective:
  success_criteria: every overdue invoice gets exactly one reminder or an escalation
  slo: {success_rate: 0.95}
scope:
  tools: [sandbox.echo, sandbox.record]
autonomy:
  max_steps: 5
  max_llm_calls: 4
  max_duration_s: 600
input:
  items: true
  schema:
    type: object
    required: [invoice_id, email, amount]
    properties:
      invoice_id: {type: string}
      email: {type: string}
      amount: {type: number}
steps:
  - id: fetch
    tool: sandbox.echo
    args: {invoice_id: "{{ item.invoice_id }}", email: "{{ item.email }}", amount: "{{ item.amount }}"}
    output_schema: {type: object, required: [invoice_id, email, amount]}
  - id: draft
    llm:
      model: sandbox
      prompt: "Write a short, polite reminder to {{ steps.fetch.output.email }} about invoice {{ item.invoice_id }}."
    rules: ["size(output.text) < 2000", "!output.text.contains('password')"]
    on_invalid: {retry: 2, then: escalate}
  - id: send
    tool: sandbox.record
    args: {to: "{{ steps.fetch.output.email }}", body: "{{ steps.draft.output.text }}"}
"""


DEMO_ITEMS = [
    {"invoice_id": "INV-1001", "email": "ann@example.com", "amount": 120},
    {"invoice_id": "INV-1002", "email": "bob@example.com", "amount": 80.5},
    {"invoice_id": "INV-1003", "email": "carol@example.com", "amount": 2400},
]


def ensure_demo(data_dir: Path, new_operator_key: str | None) -> dict[str, Any]:
    """Create the demo tenant (once) and store the demo agent; return the demo credentials.

    The demo admin key is kept in ``<data_dir>/demo-credentials.json`` (mode 0600) so a restart
    of the embedded demo can print it again; production never writes keys to disk.
    """
    creds_path = data_dir / "demo-credentials.json"
    creds: dict[str, Any] = json.loads(creds_path.read_text()) if creds_path.exists() else {}
    parsed = parse_spec(DEMO_SPEC)
    spec = load_spec(DEMO_SPEC)
    with unit_of_work() as session:
        tenant = AccountsPlatformRepository(session).tenant_by_name("demo")
        first_start = tenant is None
        if tenant is None:
            tenant, issued = onboard_tenant(session, "demo", "Demo Company")
            creds = {"tenant": "demo", "tenant_id": tenant.id, "admin_key": issued.plaintext}
        stored = store_version(session, tenant.id, spec.name, spec.model_dump(mode="json", by_alias=True),
                               [w.model_dump() for w in parsed.warnings])
        if first_start:  # one real run, so the dashboard has live data from the first minute
            submit_run(session, tenant.id, stored.version, spec.name, None, DEMO_ITEMS, "demo-first-start")
    if new_operator_key:
        creds["operator_key"] = new_operator_key
    if creds:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(creds_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(creds, fh)
    return creds
