"""A secret rotated while a 200-item batch runs: stage the new value, the upstream switches to it, then
promote it — and not one item fails (a 401 with ``current`` is retried once with ``pending``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runner.sandbox_upstream import FaultyUpstream, require_bearer
from tests.chaos.conftest import wait_progress
from tests.conftest import Harness

pytestmark = [pytest.mark.chaos, pytest.mark.postgres, pytest.mark.redis]

OLD = "crm-token-OLD-7f3a9c1e"
NEW = "crm-token-NEW-b52d08aa"
ITEMS = 200


def _spec(up: FaultyUpstream) -> str:
    return f"""\
apiVersion: midwatch/v1
name: syncer
scope: {{tools: [crm.get_item], egress: ["{up.netloc}"], secrets: [crm_token]}}
input: {{items: true}}
steps:
  - id: fetch
    tool: crm.get_item
    args: {{n: "{{{{ item.n }}}}"}}
"""


def test_a_secret_rotated_mid_batch_fails_no_item(make_harness: Callable[..., Harness], upstream: FaultyUpstream,
                                                  tmp_path: Path) -> None:
    upstream.script("/crm/items/*", [require_bearer({"ok": True}, delay_s=0.01)])
    upstream.accept_tokens(OLD)
    h = make_harness(db="postgres", broker="redis", worker=None)
    h.spawn("worker", log=tmp_path / "worker.log")
    tenant = h.onboard()
    r = h.client.post("/v1/secrets", json={"name": "crm_token", "value": OLD, "grace_seconds": 600},
                      headers=tenant.headers)
    assert r.status_code == 201, r.text
    r = h.client.put("/v1/tools/crm.get_item", headers=tenant.headers, json={
        "method": "GET", "url": f"{upstream.url}/crm/items/{{{{ args.n }}}}", "timeout_s": 5,
        "auth": {"type": "bearer", "secret": "crm_token"},
        "retry": {"max_attempts": 2, "base_delay_s": 0.05, "max_delay_s": 0.1}})
    assert r.status_code == 201, r.text
    h.put_agent(tenant, _spec(upstream))
    run = h.submit(tenant, "syncer", {"items": [{"n": i} for i in range(ITEMS)]})

    # 1. stage the new value: current (old) keeps working
    wait_progress(h, tenant, run["id"], 40)
    r = h.client.post("/v1/secrets/crm_token/rotate", json={"value": NEW}, headers=tenant.headers)
    assert r.status_code == 201 and r.json()["pending_version"] == 2, r.text
    # 2. the upstream switches to the new token: every call with current (old) gets a 401, retried with pending
    at_flip = wait_progress(h, tenant, run["id"], 70)["items_done"]
    upstream.accept_tokens(NEW)
    # 3. promote once items have gone through the 401 → pending path: new is current, old previous (grace)
    wait_progress(h, tenant, run["id"], at_flip + 30)
    r = h.client.post("/v1/secrets/crm_token/promote", headers=tenant.headers)
    assert r.status_code == 200, r.text
    meta = r.json()
    assert (meta["current_version"], meta["previous_version"], meta["pending_version"]) == (2, 1, None), meta
    promoted_at = len(upstream.requests)

    done = h.wait_run(tenant, run["id"], timeout=60)
    items = h.client.get(f"/v1/runs/{run['id']}/items?limit=500", headers=tenant.headers).json()["data"]
    failed = [i for i in items if i["state"] != "done"]
    assert not failed, (f"{len(failed)} item(s) failed; first: {failed[0]}; its events: "
                        f"{[e for e in h.events(tenant, run['id']) if e.get('item_index') == failed[0]['item_index']]}")
    assert done["state"] == "succeeded" and done["items_done"] == ITEMS, done

    # the upstream answered every item with 200, and the rotation really happened mid-batch
    assert {p.rsplit("/", 1)[1] for p in upstream.authorized} == {str(i) for i in range(ITEMS)}
    sent = [r.headers.get("authorization") for r in upstream.requests if r.path.startswith("/crm/items/")]
    retried = [i for i in range(1, len(sent)) if sent[i - 1] == f"Bearer {OLD}" and sent[i] == f"Bearer {NEW}"]
    assert len(retried) >= 10, "the flip did not land mid-batch (no 401 → pending retries)"
    after_promote = [r.headers.get("authorization") for r in upstream.requests[promoted_at + 5:]]
    assert after_promote and set(after_promote) == {f"Bearer {NEW}"}, "after promote, current is not the new value"
