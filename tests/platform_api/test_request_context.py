"""Every API response carries an X-Request-Id (the caller's, if it is a plain token), and every log line of
the request carries that id and the tenant of the key that made it."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
import structlog

from tenants.kit.logging import configure_logging
from tests.conftest import Harness


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("debug", "json")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=stream))
    yield stream
    configure_logging("warning", "console")


def test_every_response_carries_a_request_id_even_a_404(harness: Harness) -> None:
    ids = set()
    for path in ("/healthz", "/v1/no-such-thing", "/v1/runs"):  # ok, unrouted 404, 401 before any handler
        r = harness.client.get(path)
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), (path, r.headers)
        ids.add(r.headers["x-request-id"])
    assert len(ids) == 3, "a new id per request"


def test_a_callers_request_id_is_kept_when_it_is_a_plain_token(harness: Harness) -> None:
    r = harness.client.get("/healthz", headers={"X-Request-Id": "lb-7f3a.91:ab_c-d"})
    assert r.headers["x-request-id"] == "lb-7f3a.91:ab_c-d"
    for forged in ("a b", "x" * 65, '"}{"level":"error', "ünïcode"):
        r = harness.client.get("/healthz", headers={"X-Request-Id": forged.encode()})
        assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), forged


def test_a_requests_log_lines_carry_its_id_and_tenant(harness: Harness, json_log: io.StringIO) -> None:
    tenant = harness.onboard()
    json_log.truncate(0)
    json_log.seek(0)
    r = harness.client.get("/v1/runs", headers={**tenant.headers, "X-Request-Id": "req-42"})
    assert r.status_code == 200
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    access = [line for line in lines if line["event"] == "http_request"]
    assert len(access) == 1, lines
    assert access[0]["request_id"] == "req-42" and access[0]["tenant_id"] == tenant.id
    assert access[0]["route"] == "/v1/runs" and access[0]["status"] == 200
