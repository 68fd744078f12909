"""GET /v1/models/{alias} exists as the README says (issue 16, item 8), for every tenant role, 404 otherwise;
and every plain ``METHOD /path`` the README's API table lists is a real route."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import Harness

ROOT = Path(__file__).resolve().parents[2]


def test_a_model_alias_is_readable_by_every_tenant_role_and_unknown_ones_are_404(harness: Harness) -> None:
    tenant, other = harness.onboard(), harness.onboard()
    r = harness.client.put("/v1/models/fast", headers=tenant.headers,
                           json={"provider": "sandbox", "price_in_per_mtok": "1", "price_out_per_mtok": "2"})
    assert r.status_code == 201, r.text
    viewer = harness.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["key"]
    got = harness.client.get("/v1/models/fast", headers={"Authorization": f"Bearer {viewer}"})
    assert got.status_code == 200, got.text
    assert got.json()["alias"] == "fast" and got.json()["config"]["provider"] == "sandbox"
    assert harness.client.get("/v1/models/slow", headers=tenant.headers).status_code == 404
    assert harness.client.get("/v1/models/fast", headers=other.headers).status_code == 404
    assert harness.client.get("/v1/models/fast", headers=harness.op_headers).status_code == 403


def _normalise(path: str) -> str:
    return re.sub(r"\{[^}:]+(?::[^}]+)?\}", "{}", path.rstrip("/") or "/")


def test_every_plain_endpoint_the_readme_lists_exists(harness: Harness) -> None:
    app = harness.client.app
    routes = {(method, _normalise(route.path)) for route in app.routes
              for method in getattr(route, "methods", ())}
    table = ROOT.joinpath("README.md").read_text().split("## API overview", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"`((?:GET|PUT|POST|DELETE|PATCH)(?:/(?:GET|PUT|POST|DELETE|PATCH))*) (/[^`\s|\[]+)`", table)
    assert len(listed) > 10
    missing = [f"{m} {p}" for methods, p in listed for m in methods.split("/") if (m, _normalise(p)) not in routes]
    assert missing == [], f"the README lists endpoints that do not exist: {missing}"
