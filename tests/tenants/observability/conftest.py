"""Helpers for the observability tests: scrape a /metrics answer and parse it (never string-match it)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner.sandbox_upstream import FaultyUpstream
from tests.conftest import Harness, Tenant

Samples = dict[str, list[tuple[dict[str, str], float]]]

# An agent whose one model step always breaks its rule: every run of it escalates as ``validation``.
DRAFTER = """\
apiVersion: midwatch/v1
name: drafter
scope: {tools: [sandbox.echo]}
steps:
  - id: draft
    llm: {model: sandbox, prompt: "hi", sandbox: {answer: "too long to pass"}}
    rules: ["size(output.text) < 5"]
"""


def put_chaser(h: Harness, tenant: Tenant, up: FaultyUpstream, invoice: str = "{{ input.id }}") -> None:
    """The ``chaser`` agent: one step fetching ``/crm/invoices/<invoice>`` from ``up`` (3 attempts, short
    back-off), so a scripted 503 there shows as a retry."""
    r = h.client.put("/v1/tools/crm.get_invoice", headers=tenant.headers, json={
        "method": "GET", "url": f"{up.url}/crm/invoices/{{{{ args.id }}}}", "timeout_s": 2,
        "retry": {"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.1}})
    assert r.status_code == 201, r.text
    h.put_agent(tenant, f"""\
apiVersion: midwatch/v1
name: chaser
scope: {{tools: [crm.get_invoice], egress: ["{up.netloc}"]}}
steps:
  - {{id: fetch, tool: crm.get_invoice, args: {{id: "{invoice}"}}}}
""")


def parse(text: str) -> Samples:
    """{series name: [(labels, value), ...]} of a Prometheus text exposition."""
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name].append((dict(sample.labels), float(sample.value)))
    return dict(out)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (None if there is none)."""
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == want for k, want in labels.items())]
    assert len(found) <= 1, f"{name}{labels} is ambiguous: {samples.get(name)}"
    return found[0] if found else None


@pytest.fixture
def scrape_api() -> Any:
    """``scrape_api(harness)``: GET the API's /metrics and parse it."""
    from tenants.observability.exposition import reset_collector

    def scrape(harness: Any) -> Samples:
        reset_collector()  # a fresh snapshot: the cache is per process and outlives a test
        r = harness.client.get("/metrics")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        return parse(r.text)

    return scrape
