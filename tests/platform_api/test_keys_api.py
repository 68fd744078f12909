"""API keys: rotation with a grace period (tenant and operator keys) and per-key rate limits that hold
across API replicas (the counter lives in the database)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import Harness


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _key_row(h: Harness, headers: dict[str, str], key_id: str) -> dict[str, object]:
    keys = h.client.get("/v1/keys", headers=headers).json()["data"]
    return next(k for k in keys if k["id"] == key_id)


# ---- rotation ------------------------------------------------------------------------------------

def test_a_rotated_key_keeps_working_for_the_grace_then_only_the_new_one_does(harness: Harness) -> None:
    tenant = harness.onboard()
    old = harness.client.post("/v1/keys", json={"role": "viewer", "name": "ci bot"}, headers=tenant.headers).json()
    assert harness.client.get("/v1/runs", headers=_bearer(old["key"])).status_code == 200

    r = harness.client.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 1}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["id"] != old["id"] and new["key"] != old["key"]
    assert (new["role"], new["name"], new["expires_at"]) == ("viewer", "ci bot", None)

    listed = _key_row(harness, tenant.headers, old["id"])
    assert listed["expires_at"] is not None and listed["revoked_at"] is None
    assert listed["created_at"] and listed["last_used_at"]  # the old key was used above
    assert "key" not in listed  # a listing never shows a key
    for key in (old["key"], new["key"]):  # within the grace: both work
        assert harness.client.get("/v1/runs", headers=_bearer(key)).status_code == 200

    time.sleep(1.2)
    r = harness.client.get("/v1/runs", headers=_bearer(old["key"]))
    assert r.status_code == 401 and r.json()["code"] == "unauthorized", r.text
    assert harness.client.get("/v1/runs", headers=_bearer(new["key"])).status_code == 200


def test_rotation_defaults_to_an_hour_of_grace_and_zero_ends_the_old_key_at_once(harness: Harness) -> None:
    tenant = harness.onboard()
    admin_id = harness.client.get("/v1/keys", headers=tenant.headers).json()["data"][0]["id"]
    before = datetime.now(UTC)
    r = harness.client.post(f"/v1/keys/{admin_id}/rotate", headers=tenant.headers)  # no body: defaults
    assert r.status_code == 201, r.text
    new_admin = _bearer(r.json()["key"])
    expires = datetime.fromisoformat(str(_key_row(harness, new_admin, admin_id)["expires_at"]))
    assert timedelta(minutes=59) < expires - before < timedelta(minutes=61)

    r = harness.client.post(f"/v1/keys/{r.json()['id']}/rotate", json={"grace_seconds": 0}, headers=new_admin)
    assert r.status_code == 201, r.text
    assert harness.client.get("/v1/keys", headers=new_admin).status_code == 401
    assert harness.client.get("/v1/keys", headers=_bearer(r.json()["key"])).status_code == 200


def test_rotation_refuses_a_revoked_key_a_bad_grace_and_non_admins(harness: Harness) -> None:
    tenant = harness.onboard()
    viewer = harness.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()
    for grace in (-1, 7 * 86400 + 1, "60"):
        r = harness.client.post(f"/v1/keys/{viewer['id']}/rotate", json={"grace_seconds": grace},
                                headers=tenant.headers)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text
    r = harness.client.post(f"/v1/keys/{viewer['id']}/rotate", headers=_bearer(viewer["key"]))
    assert r.status_code == 403
    assert harness.client.delete(f"/v1/keys/{viewer['id']}", headers=tenant.headers).status_code == 204
    r = harness.client.post(f"/v1/keys/{viewer['id']}/rotate", headers=tenant.headers)
    assert r.status_code == 409 and r.json()["code"] == "conflict", r.text
    assert len(harness.client.get("/v1/keys", headers=tenant.headers).json()["data"]) == 2  # nothing issued


def test_a_key_in_its_grace_cannot_be_rotated_again_but_its_successor_can(harness: Harness) -> None:
    tenant = harness.onboard()
    old = harness.client.post("/v1/keys", json={"role": "approver"}, headers=tenant.headers).json()
    first = harness.client.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 600}, headers=tenant.headers)
    assert first.status_code == 201, first.text
    again = harness.client.post(f"/v1/keys/{old['id']}/rotate", json={"grace_seconds": 600}, headers=tenant.headers)
    assert again.status_code == 409 and again.json()["code"] == "key_already_rotated", again.text
    assert "rotated already" in again.json()["detail"]
    keys = harness.client.get("/v1/keys", headers=tenant.headers).json()["data"]
    assert sum(k["role"] == "approver" for k in keys) == 2, "the refused rotation still issued a key"
    successor = first.json()["id"]
    assert harness.client.post(f"/v1/keys/{successor}/rotate", headers=tenant.headers).status_code == 201

    r = harness.client.post("/v1/admin/keys/rotate", json={"grace_seconds": 600}, headers=harness.op_headers)
    assert r.status_code == 201, r.text
    twice = harness.client.post("/v1/admin/keys/rotate", json={"grace_seconds": 600}, headers=harness.op_headers)
    assert twice.status_code == 409 and twice.json()["code"] == "key_already_rotated", twice.text


def test_the_operator_key_rotates_without_downtime_and_a_restart_with_the_old_value_does_not_revive_it(
        harness: Harness) -> None:
    from tenants.accounts.service import ensure_operator_key
    from tenants.kit.db import unit_of_work

    old = harness.op_headers
    r = harness.client.post("/v1/admin/keys/rotate", json={"grace_seconds": 1}, headers=old)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["role"] == "operator" and body["key"].startswith("mw_op_")
    new = _bearer(body["key"])
    for headers in (old, new):
        assert harness.client.get("/v1/admin/tenants", headers=headers).status_code == 200
    time.sleep(1.2)
    assert harness.client.get("/v1/admin/tenants", headers=old).status_code == 401
    assert harness.client.get("/v1/admin/tenants", headers=new).status_code == 200

    # A process started with the stale MIDWATCH_OPERATOR_KEY neither revives it nor generates another key.
    with unit_of_work() as session:
        assert ensure_operator_key(session, harness.operator_key) is None
        assert ensure_operator_key(session, None) is None
    assert harness.client.get("/v1/admin/tenants", headers=old).status_code == 401
    r = harness.client.post("/v1/admin/tenants", json={"name": "after-rotation"}, headers=new)
    assert r.status_code == 201, r.text
    tenant_admin = _bearer(r.json()["admin_key"]["key"])
    assert harness.client.post("/v1/admin/keys/rotate", headers=tenant_admin).status_code == 403


# ---- rate limits ---------------------------------------------------------------------------------

class _Clock:
    """A settable ``utcnow`` for the accounts service (windows are wall-clock minutes)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_key_over_its_limit_gets_429_with_retry_after_until_the_window_resets(
        make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    h = make_harness(db=db, worker=None)
    tenant = h.onboard()
    limited = h.client.post("/v1/keys", json={"role": "viewer", "rate_limit_per_minute": 5},
                            headers=tenant.headers).json()
    assert limited["rate_limit_per_minute"] == 5
    other = h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()

    minute = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=5)
    clock = _Clock(minute + timedelta(seconds=50))  # 10 s before the window ends
    monkeypatch.setattr("tenants.accounts.ratelimit.utcnow", clock)

    assert [h.client.get("/v1/runs", headers=_bearer(limited["key"])).status_code for _ in range(5)] == [200] * 5
    r = h.client.get("/v1/runs", headers=_bearer(limited["key"]))
    assert r.status_code == 429, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "rate_limited" and r.headers["Retry-After"] == "10"
    assert h.client.get("/v1/runs", headers=_bearer(limited["key"])).status_code == 429  # still over
    # another key of the same tenant is not affected
    assert [h.client.get("/v1/runs", headers=_bearer(other["key"])).status_code for _ in range(8)] == [200] * 8

    clock.now = minute + timedelta(seconds=60)  # the next window
    assert [h.client.get("/v1/runs", headers=_bearer(limited["key"])).status_code for _ in range(5)] == [200] * 5
    assert h.client.get("/v1/runs", headers=_bearer(limited["key"])).status_code == 429


def test_the_platform_default_limit_applies_to_keys_without_their_own(make_harness: Callable[..., Harness],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    minute = datetime.now(UTC).replace(second=0, microsecond=0)
    monkeypatch.setattr("tenants.accounts.ratelimit.utcnow", _Clock(minute + timedelta(seconds=10)))  # one window
    h = make_harness(worker=None, extra={"MIDWATCH_RATE_LIMIT_PER_MINUTE": "3"})
    tenant = h.onboard()
    codes = [h.client.get("/v1/runs", headers=tenant.headers).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    # the operator key is a key like any other: onboarding used one of its 3 requests
    codes = [h.client.get("/v1/admin/tenants", headers=h.op_headers).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.redis
def test_with_redis_concurrent_requests_on_many_replicas_never_exceed_the_limit(redis_url: str) -> None:
    """20 requests at once, each through its own limiter (as on 20 API replicas) against a limit of 10."""
    import redis

    from tenants.accounts.ratelimit import Limiter, RedisCounter

    namespace = f"mwtest-rl-{secrets.token_hex(4)}"
    limiters = [Limiter(RedisCounter(redis.Redis.from_url(redis_url), namespace)) for _ in range(20)]
    results: list[bool] = []
    barrier = threading.Barrier(20)

    def request(limiter: Limiter) -> None:
        barrier.wait()
        results.append(limiter.request("key_abc", 10).allowed)

    threads = [threading.Thread(target=request, args=(limiter,)) for limiter in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 10 + [True] * 10


@pytest.mark.redis
def test_with_redis_a_high_limit_is_claimed_in_blocks_and_never_exceeded_across_replicas(redis_url: str) -> None:
    """A key limited to 5,000 a minute claims 5 positions per round trip (limit // 1000). Four replicas
    sending 2,000 requests each at once: never more than 5,000 admitted, at most 4 x 4 refused early
    (positions a replica claimed and did not use), and Redis saw one claim per 5 requests."""
    import redis

    from tenants.accounts.ratelimit import RATE_WINDOW_SECONDS, Limiter, RedisCounter

    namespace = f"mwtest-rl-{secrets.token_hex(4)}"
    client = redis.Redis.from_url(redis_url)
    window = int(time.time() // RATE_WINDOW_SECONDS) * RATE_WINDOW_SECONDS
    if time.time() - window > RATE_WINDOW_SECONDS - 5:  # too close to the minute's end: use the next one
        time.sleep(RATE_WINDOW_SECONDS - (time.time() - window) + 0.1)
    limiters = [Limiter(RedisCounter(redis.Redis.from_url(redis_url), namespace)) for _ in range(4)]
    admitted: list[int] = []
    local_answers: list[int] = []
    barrier = threading.Barrier(4)

    def replica(limiter: Limiter) -> None:
        barrier.wait()
        allowed = local = 0
        for _ in range(2000):
            verdict = limiter.request_local("key_abc", 5000)
            if verdict is None:
                verdict = limiter.request("key_abc", 5000)
            else:
                local += 1
            allowed += verdict.allowed
        admitted.append(allowed)
        local_answers.append(local)

    threads = [threading.Thread(target=replica, args=(limiter,)) for limiter in limiters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [int(v) for v in (client.get(k) for k in client.keys(f"{namespace}:rl:key_abc:*")) if v]
    assert len(claimed) == 1 and 8000 <= claimed[0] <= 8000 + 4 * 4  # every claim is a block of 5
    assert 5000 - 4 * 4 <= sum(admitted) <= 5000
    assert sum(local_answers) == 8000 - claimed[0] // 5  # 4 of every 5 requests took no round trip


def test_a_verified_key_is_admitted_on_the_event_loop_without_a_thread_hop(
        make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard asks a worker thread only when the answer needs the database or Redis: the first request of
    a key (verified in the database), not the next ones (cached key, count in memory without Redis)."""
    import anyio.to_thread

    h = make_harness(worker=None)
    tenant = h.onboard()
    viewer = h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["key"]
    hops: list[str] = []
    real = anyio.to_thread.run_sync

    async def counting(func: Callable[..., object], *args: object, **kwargs: object) -> object:
        hops.append(getattr(func, "__name__", "?"))
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    assert h.client.get("/v1/runs", headers=_bearer(viewer)).status_code == 200
    assert hops.count("_authenticated") == 1  # not seen before: verified on a worker thread
    assert [h.client.get("/v1/runs", headers=_bearer(viewer)).status_code for _ in range(3)] == [200] * 3
    assert hops.count("_authenticated") == 1  # cached and counted in memory: no hop
    assert h.client.get("/v1/runs", headers=_bearer("mw_adm_nosuchkey")).status_code == 401
    assert hops.count("_authenticated") == 2  # an unknown key is refused (and counted) on the worker thread


@pytest.mark.postgres
def test_without_redis_replicas_share_counts_through_the_database_within_one_flush(
        make_harness: Callable[..., Harness]) -> None:
    """Batched counters: exact within a process; across replicas a key goes over its limit by at most
    what another replica admitted before its next flush (here one request), never unboundedly."""
    from tenants.accounts.ratelimit import BatchedCounter, Limiter

    h = make_harness(db="postgres", worker=None)
    tenant = h.onboard()
    key_id = h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["id"]
    one, two = BatchedCounter(flush_every_s=3600), BatchedCounter(flush_every_s=3600)  # we flush by hand
    first, second = Limiter(one), Limiter(two)
    try:
        assert [first.request(key_id, 10).allowed for _ in range(11)] == [True] * 10 + [False]
        one.flush()
        assert second.request(key_id, 10).allowed  # not flushed yet: replica two does not know
        two.flush()  # ... and now it does: 12 counted in the database
        assert [second.request(key_id, 10).allowed for _ in range(5)] == [False] * 5
    finally:
        one.close()
        two.close()


def test_an_address_that_keeps_failing_authentication_is_throttled_and_valid_keys_elsewhere_are_not(
        make_harness: Callable[..., Harness]) -> None:
    h = make_harness(worker=None, extra={"MIDWATCH_AUTH_FAILURES_PER_MINUTE": "5"})
    tenant = h.onboard()
    viewer = h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()["key"]
    assert h.client.get("/v1/runs", headers=tenant.headers).status_code == 200  # a key in use
    codes = [h.client.get("/v1/runs", headers=_bearer(f"mw_adm_guess{i}")).status_code for i in range(7)]
    if codes[:5] != [401] * 5:  # the minute turned over between requests: one more window
        codes = [h.client.get("/v1/runs", headers=_bearer(f"mw_adm_again{i}")).status_code for i in range(7)]
    assert codes == [401] * 5 + [429, 429]
    r = h.client.get("/v1/runs", headers=_bearer("mw_adm_more"))
    assert r.json()["code"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
    # the key in use keeps working from the same address; a key not verified recently waits for the window
    assert h.client.get("/v1/runs", headers=tenant.headers).status_code == 200
    assert h.client.get("/v1/runs", headers=_bearer(viewer)).status_code == 429


@pytest.mark.parametrize("change", ["revoked", "suspended", "expired"])
def test_a_change_made_by_another_api_process_takes_effect_within_the_cache_bound(
        make_harness: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    """Verified keys are cached per process for AUTH_CACHE_S (5 s; 0.5 s here): a revocation, a tenant's
    suspension or the end of a rotation's grace written by ANOTHER process (straight into the database, so this
    process's cache is not cleared) is refused once the bound has passed, and not before."""
    from sqlalchemy import update

    from tenants.accounts.models import ApiKey, Tenant
    from tenants.accounts.service import KEYS
    from tenants.kit.db import unit_of_work

    h = make_harness(worker=None)
    monkeypatch.setattr(KEYS, "ttl_s", 0.5)
    tenant = h.onboard()
    viewer = h.client.post("/v1/keys", json={"role": "viewer"}, headers=tenant.headers).json()
    assert h.client.get("/v1/runs", headers=_bearer(viewer["key"])).status_code == 200  # verified and cached
    with unit_of_work() as session:
        if change == "revoked":
            session.execute(update(ApiKey).where(ApiKey.id == viewer["id"]).values(revoked_at=datetime.now(UTC)))
        elif change == "suspended":
            session.execute(update(Tenant).where(Tenant.id == tenant.id).values(status="suspended"))
        else:
            session.execute(update(ApiKey).where(ApiKey.id == viewer["id"])
                            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert h.client.get("/v1/runs", headers=_bearer(viewer["key"])).status_code == 200  # within the bound
    time.sleep(0.6)
    r = h.client.get("/v1/runs", headers=_bearer(viewer["key"]))
    assert r.status_code == (403 if change == "suspended" else 401), r.text
