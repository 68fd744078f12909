"""Helpers for the observability tests: scrape a /metrics answer and parse it (never string-match it)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[str, list[tuple[dict[str, str], float]]]


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
