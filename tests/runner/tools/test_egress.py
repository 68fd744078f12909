"""SSRF-safe egress: scope, private/metadata addresses, DNS pinning, redirects, size and time caps."""

from __future__ import annotations

import httpx
import pytest

from runner.errors import StepFailed
from runner.sandbox_upstream import FaultyUpstream, oversized, redirect, reset, slow
from runner.tools.egress import EgressBlocked, EgressClient, EgressPolicy, check_address
from runner.tools.validate import validate_response

PUBLIC_IP = "93.184.216.34"


def _client(upstream: FaultyUpstream, *extra_hosts: str, resolver=None, **policy: object) -> EgressClient:
    return EgressClient(EgressPolicy(allowed_hosts=[upstream.netloc, *extra_hosts], allow_loopback=True,
                                     **policy), resolver=resolver)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", [
    "10.1.2.3", "172.16.0.1", "192.168.1.5", "127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0",
    "0.1.2.3", "224.0.0.1", "240.0.0.1", "100.64.0.1", "fc00::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
    "2002:7f00:1::", "64:ff9b::a00:1",
])
def test_internal_addresses_are_refused_by_default(address: str) -> None:
    assert check_address(address) is not None
    assert check_address(PUBLIC_IP) is None


@pytest.mark.parametrize("address", [
    "169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254", "100.100.100.200"])
def test_metadata_addresses_are_refused_even_with_allow_loopback(address: str) -> None:
    assert "cloud metadata address" in str(check_address(address, allow_loopback=True))


def test_private_ip_hosts_are_blocked_even_when_allowed() -> None:
    policy = EgressPolicy(allowed_hosts=["10.0.0.5", "internal.example.com"], allow_loopback=True)
    client = EgressClient(policy, resolver=lambda host, port: ["192.168.0.10"])
    with pytest.raises(EgressBlocked, match=r"10\.0\.0\.5.*private"):
        client.request("GET", "http://10.0.0.5/")
    with pytest.raises(EgressBlocked, match=r"resolves to 192\.168\.0\.10, a private address") as info:
        client.request("GET", "http://internal.example.com/")
    assert info.value.category == "scope"


def test_metadata_ip_and_name_are_blocked_even_with_allow_loopback_and_an_allow_entry() -> None:
    client = EgressClient(EgressPolicy(allowed_hosts=["169.254.169.254", "metadata.google.internal"],
                                       allow_loopback=True), resolver=lambda host, port: ["169.254.169.254"])
    with pytest.raises(EgressBlocked, match="metadata"):
        client.request("GET", "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(EgressBlocked, match="metadata service"):
        client.request("GET", "http://metadata.google.internal/computeMetadata/v1/")


def test_hosts_outside_the_scope_and_wrong_ports_and_schemes_are_blocked(upstream: FaultyUpstream) -> None:
    client = _client(upstream, "*.example.com")
    with pytest.raises(EgressBlocked, match="not in the allowed hosts"):
        client.request("GET", "http://evil.test/")
    with pytest.raises(EgressBlocked, match="not in the allowed hosts"):
        client.request("GET", "http://example.com/")  # the wildcard does not cover the apex
    with pytest.raises(EgressBlocked, match="not in the allowed hosts"):
        client.request("GET", "https://api.example.com:8443/")  # no port in the entry: default port only
    with pytest.raises(EgressBlocked, match="scheme"):
        client.request("GET", "file:///etc/passwd")
    assert upstream.requests == []


def test_dns_is_resolved_once_and_the_connection_is_pinned_to_the_checked_address() -> None:
    """DNS rebinding: the second answer (127.0.0.1) is never asked for, let alone used."""
    answers = [[PUBLIC_IP], ["127.0.0.1"]]
    asked: list[str] = []
    seen: list[httpx.Request] = []

    def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[len(asked) - 1]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = EgressClient(EgressPolicy(allowed_hosts=["api.example.com"]), resolver=resolver,
                          transport=httpx.MockTransport(handler))
    response = client.request("GET", "https://api.example.com/v1/items?page=2")
    assert response.status == 200 and response.ip == PUBLIC_IP
    assert asked == ["api.example.com"]
    assert seen[0].url.host == PUBLIC_IP and seen[0].url.path == "/v1/items"
    assert seen[0].headers["host"] == "api.example.com"
    assert seen[0].extensions["sni_hostname"] == "api.example.com"
    assert response.url == "https://api.example.com/v1/items?page=2"


def test_a_resolver_answering_a_private_or_mixed_set_of_addresses_is_blocked() -> None:
    client = EgressClient(EgressPolicy(allowed_hosts=["api.example.com"]),
                          resolver=lambda host, port: [PUBLIC_IP, "10.0.0.7"])
    with pytest.raises(EgressBlocked, match=r"10\.0\.0\.7"):
        client.request("GET", "https://api.example.com/")


def test_a_named_host_reaches_the_pinned_loopback_upstream_with_its_host_header(
        upstream: FaultyUpstream) -> None:
    client = EgressClient(EgressPolicy(allowed_hosts=[f"api.test:{upstream.port}"], allow_loopback=True),
                          resolver=lambda host, port: ["127.0.0.1"])
    assert client.request("GET", f"http://api.test:{upstream.port}/x").status == 200
    assert upstream.requests[0].headers["host"] == f"api.test:{upstream.port}"


def test_a_redirect_to_the_metadata_ip_is_blocked(upstream: FaultyUpstream) -> None:
    upstream.script("/go", [redirect("http://169.254.169.254/latest/meta-data/iam/")])
    client = _client(upstream, "169.254.169.254")
    with pytest.raises(EgressBlocked, match="metadata"):
        client.request("GET", upstream.url + "/go")
    assert len(upstream.requests) == 1


def test_a_redirect_to_a_host_outside_the_scope_is_blocked(upstream: FaultyUpstream) -> None:
    upstream.script("/go", [redirect("https://attacker.test/steal")])
    with pytest.raises(EgressBlocked, match=r"attacker\.test"):
        _client(upstream).request("GET", upstream.url + "/go")


def test_redirects_are_followed_within_scope_and_credentials_dropped_across_origins(
        upstream: FaultyUpstream) -> None:
    other = f"other.test:{upstream.port}"
    upstream.script("/a", [redirect(f"http://{other}/b", 307)])
    client = _client(upstream, other, resolver=lambda host, port: ["127.0.0.1"])
    response = client.request("POST", upstream.url + "/a", json={"x": 1},
                              headers={"Authorization": "Bearer abcdefgh123", "X-Api-Key": "k",
                                       "Idempotency-Key": "run-1"})
    assert response.status == 200 and response.redirects == (upstream.url + "/a",)
    first, second = upstream.requests
    assert first.headers["authorization"] == "Bearer abcdefgh123"
    assert "authorization" not in second.headers and "x-api-key" not in second.headers
    assert second.headers["idempotency-key"] == "run-1"
    assert second.method == "POST" and second.json() == {"x": 1}


def test_redirect_loops_stop_at_max_redirects(upstream: FaultyUpstream) -> None:
    upstream.script("/loop", [redirect("/loop")])
    with pytest.raises(StepFailed, match="more than 2 redirects"):
        _client(upstream, max_redirects=2).request("GET", upstream.url + "/loop")
    assert len(upstream.requests) == 3


def test_an_oversized_body_is_capped_and_rejected_as_too_large(upstream: FaultyUpstream) -> None:
    upstream.script("/big", [oversized(200_000)])
    response = _client(upstream, max_response_bytes=10_000).request("GET", upstream.url + "/big")
    assert response.truncated and len(response.body) == 10_000
    with pytest.raises(StepFailed, match="too large") as info:
        validate_response(response)
    assert info.value.category == "dependency"


def test_a_slow_upstream_times_out_as_a_dependency_failure(upstream: FaultyUpstream) -> None:
    upstream.script("/slow", [slow(5)])
    with pytest.raises(StepFailed, match=r"timeout after 0\.3s") as info:
        _client(upstream).request("GET", upstream.url + "/slow", timeout_s=0.3)
    assert info.value.category == "dependency" and info.value.details["retryable"]


def test_a_connection_reset_is_a_retryable_dependency_failure(upstream: FaultyUpstream) -> None:
    upstream.script("/reset", [reset()])
    with pytest.raises(StepFailed, match="connection") as info:
        _client(upstream).request("GET", upstream.url + "/reset")
    assert info.value.category == "dependency" and info.value.details["retryable"]
