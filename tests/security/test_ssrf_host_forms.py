"""Hosts a tenant points Midwatch at (issue 16, item 8): IPv4 literals in octal, hex or integer form are
read as the addresses they are and refused where private, loopback or metadata, at upload and at call time;
tools, webhooks and model base URLs aimed at internal addresses are a 422 at upload in production settings;
``[::1]`` is allowed in demo mode exactly like ``127.0.0.1``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from runner.sandbox_upstream import FaultyUpstream, ok
from runner.tools.egress import EgressBlocked, EgressClient, EgressPolicy
from tenants.kit.addresses import check_host, parse_ip_host
from tests.conftest import Harness

PRODUCTION = {"MIDWATCH_ALLOW_LOOPBACK_EGRESS": "false"}


@pytest.mark.parametrize(("host", "address"), [
    ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("127.1", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"), ("0251.0376.0251.0376", "169.254.169.254"), ("017700000001", "127.0.0.1"),
    ("10.0.0.010", "10.0.0.8"),
])
def test_every_ipv4_form_a_resolver_accepts_is_read_as_its_address(host: str, address: str) -> None:
    parsed = parse_ip_host(host)
    assert parsed is not None and str(parsed[0]) == address and parsed[1] is False
    assert "written in another form" in str(check_host(host, allow_loopback=True))
    assert parse_ip_host("127.0.0.1") is not None and parse_ip_host("api.example.com") is None
    assert parse_ip_host("1.2.3.4.5") is None and parse_ip_host("08.1") is None


@pytest.mark.parametrize("url", ["http://0177.0.0.1:{port}/x", "http://0x7f.1:{port}/x", "http://2130706433:{port}/x"])
def test_the_egress_client_refuses_odd_forms_as_scope_not_as_an_internal_error(url: str) -> None:
    client = EgressClient(EgressPolicy(allowed_hosts=["0177.0.0.1:9", "0x7f.1:9", "2130706433:9"],
                                       allow_loopback=True), resolver=lambda host, port: ["127.0.0.1"])
    with pytest.raises(EgressBlocked) as caught:
        client.request("GET", url.format(port=9))
    assert caught.value.category == "scope"


@pytest.fixture
def production(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness(worker=None, extra=PRODUCTION)


@pytest.mark.parametrize("url", [
    "http://0177.0.0.1/x", "http://0x7f.1/x", "http://2130706433/x", "http://127.0.0.1:8900/x",
    "http://localhost/x", "http://[::1]:8900/x", "http://169.254.169.254/latest", "http://metadata.google.internal/x",
    "http://10.0.0.5/x", "http://192.168.1.1/x", "http://[::ffff:10.0.0.1]/x", "http://0251.0376.0251.0376/",
])
def test_internal_targets_are_refused_at_upload_in_production_settings(production: Harness, url: str) -> None:
    tenant = production.onboard()
    tool = production.client.put("/v1/tools/crm.get", headers=tenant.headers, json={"url": url})
    assert tool.status_code == 422 and tool.json()["code"] == "validation_error", tool.text
    assert tool.json()["errors"][0]["path"] == "url"
    oauth = production.client.put("/v1/tools/crm.get", headers=tenant.headers, json={
        "url": "https://api.example.com/x",
        "auth": {"type": "oauth2_client_credentials", "token_url": url, "client_id_secret": "a",
                 "client_secret_secret": "b"}})
    assert oauth.status_code == 422 and oauth.json()["errors"][0]["path"] == "auth.token_url", oauth.text
    model = production.client.put("/v1/models/m", headers=tenant.headers, json={
        "provider": "openai", "base_url": url, "model": "x", "api_key_secret": "k"})
    assert model.status_code == 422 and model.json()["errors"][0]["path"] == "base_url", model.text
    hook = production.client.post("/v1/webhooks", headers=tenant.headers, json={"url": url, "events": ["run.failed"]})
    assert hook.status_code == 422, hook.text
    public = production.client.put("/v1/tools/crm.get", headers=tenant.headers,
                                   json={"url": "https://api.example.com/x"})
    assert public.status_code == 201, public.text


@pytest.fixture
def upstream_v6() -> Iterator[FaultyUpstream]:
    with FaultyUpstream(host="::1") as up:
        yield up


def test_ipv6_loopback_works_in_demo_mode_like_ipv4_loopback(harness: Harness, upstream: FaultyUpstream,
                                                             upstream_v6: FaultyUpstream) -> None:
    tenant = harness.onboard()
    for up, name in ((upstream, "v4.get"), (upstream_v6, "v6.get")):
        up.script("/ping", [ok({"pong": True})])
        r = harness.client.put(f"/v1/tools/{name}", headers=tenant.headers, json={"url": f"{up.url}/ping"})
        assert r.status_code == 201, r.text
    odd = harness.client.put("/v1/tools/odd.get", headers=tenant.headers,
                             json={"url": f"http://0177.0.0.1:{upstream.port}/ping"})
    assert odd.status_code == 422 and "write it as 127.0.0.1" in odd.text, odd.text
    harness.put_agent(tenant, f"""\
apiVersion: midwatch/v1
name: loops
scope: {{tools: [v4.get, v6.get], egress: ["{upstream.netloc}", "{upstream_v6.netloc}"]}}
steps:
  - {{id: four, tool: v4.get}}
  - {{id: six, tool: v6.get}}
""")
    run = harness.submit(tenant, "loops", {"input": None})
    assert harness.wait_run(tenant, run["id"])["state"] == "succeeded"
    assert len(upstream.requests_to("/ping")) == 1 and len(upstream_v6.requests_to("/ping")) == 1
