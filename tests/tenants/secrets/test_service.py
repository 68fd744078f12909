"""The vault on a real database (SQLite and PostgreSQL): staged rotation, grace, deletion, isolation,
integrity of stored rows, master key rotation, the scheduler's queries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from tenants.kit.db import unit_of_work
from tenants.kit.errors import Conflict, InvalidInput
from tenants.kit.ids import utcnow
from tenants.kit.master_key import MasterKey, get_master_key
from tenants.secrets import service
from tenants.secrets.errors import DecryptionFailed, MasterKeyMismatch, SecretNotFound
from tenants.secrets.models import MasterKeyRecord, Secret, SecretVersion
from tests.tenants.secrets.conftest import new_tenant


def _resolve(tenant_id: str, name: str, which: service.Which = "current", **kw: object) -> str:
    with unit_of_work() as session:
        return service.resolve(session, tenant_id, name, which, **kw)  # type: ignore[arg-type]


def _versions(tenant_id: str, name: str) -> dict[int, SecretVersion]:
    with unit_of_work() as session:
        secret_ids = select(Secret.id).where(Secret.tenant_id == tenant_id, Secret.name == name)
        rows = session.scalars(select(SecretVersion).where(SecretVersion.secret_id.in_(secret_ids))).all()
        return {v.version: v for v in rows}


def test_a_created_secret_resolves_and_its_metadata_has_no_value(tenant_id: str, plaintext: str) -> None:
    with unit_of_work() as session:
        meta = service.create_secret(session, tenant_id, "crm_token", plaintext, max_age_days=30)
    assert meta.current_version == 1 and meta.pending_version is None and meta.rotation_due is False
    assert plaintext not in repr(meta)
    assert _resolve(tenant_id, "crm_token") == plaintext
    stored = _versions(tenant_id, "crm_token")[1]
    assert stored.ciphertext is not None and plaintext.encode() not in stored.ciphertext
    assert stored.master_key_id == get_master_key().key_id
    with unit_of_work() as session:
        assert session.get(MasterKeyRecord, get_master_key().key_id) is not None


def test_staged_rotation_pending_then_current_then_previous_until_the_grace_ends(tenant_id: str) -> None:
    t0 = utcnow()
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "value-one", grace_seconds=600, now=t0)
    with unit_of_work() as session:
        meta = service.rotate_secret(session, tenant_id, "api", "value-two", now=t0)
    assert (meta.current_version, meta.pending_version) == (1, 2)
    # in-flight work keeps using current; the verifier can read pending
    assert _resolve(tenant_id, "api") == "value-one"
    assert _resolve(tenant_id, "api", "pending") == "value-two"
    with pytest.raises(SecretNotFound, match="no previous version"):
        _resolve(tenant_id, "api", "previous")

    t1 = t0 + timedelta(days=3)
    with unit_of_work() as session:
        meta = service.promote_secret(session, tenant_id, "api", expected_version=2, now=t1)
    assert (meta.current_version, meta.pending_version, meta.previous_version) == (2, None, 1)
    assert meta.previous_expires_at == t1 + timedelta(seconds=600) and meta.last_rotated_at == t1
    assert _resolve(tenant_id, "api", now=t1) == "value-two"
    assert _resolve(tenant_id, "api", "previous", now=t1 + timedelta(seconds=599)) == "value-one"
    with pytest.raises(SecretNotFound, match="grace period"):
        _resolve(tenant_id, "api", "previous", now=t1 + timedelta(seconds=600))

    # the sweeper retires the expired previous and wipes it
    with unit_of_work() as session:
        assert service.retire_expired(session, now=t1 + timedelta(seconds=601)) >= 1
    old = _versions(tenant_id, "api")[1]
    assert old.state == "retired" and old.ciphertext is None and old.wrapped_key is None


def test_a_second_promote_retires_the_older_previous(tenant_id: str) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "v-one")
        service.rotate_secret(session, tenant_id, "api", "v-two")
        service.promote_secret(session, tenant_id, "api")
        service.rotate_secret(session, tenant_id, "api", "v-three")
        meta = service.promote_secret(session, tenant_id, "api")
    assert (meta.current_version, meta.previous_version) == (3, 2)
    assert {v: r.state for v, r in _versions(tenant_id, "api").items()} == {1: "retired", 2: "previous", 3: "current"}
    assert _resolve(tenant_id, "api", "previous") == "v-two"


def test_rotating_twice_replaces_the_pending_value_and_promote_checks_the_version(tenant_id: str) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "v-one")
        service.rotate_secret(session, tenant_id, "api", "typo-value")
        meta = service.rotate_secret(session, tenant_id, "api", "v-fixed")
    assert meta.pending_version == 3
    assert _versions(tenant_id, "api")[2].state == "retired"
    assert _resolve(tenant_id, "api", "pending") == "v-fixed"
    with pytest.raises(Conflict, match="pending version is 3, not 2"), unit_of_work() as session:
        service.promote_secret(session, tenant_id, "api", expected_version=2)
    with unit_of_work() as session:
        service.promote_secret(session, tenant_id, "api", expected_version=3)
    with pytest.raises(Conflict, match="no pending version"), unit_of_work() as session:
        service.promote_secret(session, tenant_id, "api")


def test_zero_grace_retires_the_old_value_at_promotion(tenant_id: str) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "v-one", grace_seconds=0)
        service.rotate_secret(session, tenant_id, "api", "v-two")
        service.promote_secret(session, tenant_id, "api")
    with pytest.raises(SecretNotFound):
        _resolve(tenant_id, "api", "previous")
    assert _versions(tenant_id, "api")[1].ciphertext is None


def test_delete_wipes_every_value_and_frees_the_name(tenant_id: str) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "v-one")
        service.rotate_secret(session, tenant_id, "api", "v-two")
        service.delete_secret(session, tenant_id, "api")
    assert all(v.ciphertext is None and v.nonce is None and v.wrapped_key is None and v.state == "retired"
               for v in _versions(tenant_id, "api").values())
    with pytest.raises(SecretNotFound):
        _resolve(tenant_id, "api")
    with unit_of_work() as session:
        assert service.list_secrets(session, tenant_id) == []
        service.create_secret(session, tenant_id, "api", "v-new")
    assert _resolve(tenant_id, "api") == "v-new"


def test_names_are_unique_per_tenant_and_invisible_to_other_tenants(tenant_id: str) -> None:
    other = new_tenant()
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "mine-1234")
    with pytest.raises(Conflict), unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "again-1234")
    with pytest.raises(SecretNotFound):
        _resolve(other, "api")
    with unit_of_work() as session:
        assert service.list_secrets(session, other) == []
        service.create_secret(session, other, "api", "theirs-1234")  # same name, other tenant: fine
    assert _resolve(tenant_id, "api") == "mine-1234" and _resolve(other, "api") == "theirs-1234"


@pytest.mark.parametrize(("name", "value", "policy"), [
    ("9starts-with-digit", "v", {}),
    ("has space", "v", {}),
    ("has#hash", "v", {}),
    ("ok", "", {}),
    ("ok", "v", {"max_age_days": 0}),
    ("ok", "v", {"grace_seconds": -1}),
])
def test_bad_names_values_and_policies_are_refused(tenant_id: str, name: str, value: str,
                                                   policy: dict[str, int]) -> None:
    with pytest.raises(InvalidInput), unit_of_work() as session:
        service.create_secret(session, tenant_id, name, value, **policy)


def test_a_ciphertext_swapped_between_rows_fails_to_decrypt(tenant_id: str) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "alpha", "alpha-value")
        service.create_secret(session, tenant_id, "beta", "beta-value")
    alpha = _versions(tenant_id, "alpha")[1]
    with unit_of_work() as session:
        session.execute(update(SecretVersion).where(SecretVersion.id == _versions(tenant_id, "beta")[1].id)
                        .values(ciphertext=alpha.ciphertext, nonce=alpha.nonce, wrapped_key=alpha.wrapped_key))
    with pytest.raises(DecryptionFailed, match="'beta'"):
        _resolve(tenant_id, "beta")


def test_a_tampered_stored_ciphertext_fails_to_decrypt(tenant_id: str) -> None:
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "alpha", "alpha-value")
    row = _versions(tenant_id, "alpha")[1]
    assert row.ciphertext is not None
    with unit_of_work() as session:
        session.execute(update(SecretVersion).where(SecretVersion.id == row.id)
                        .values(ciphertext=bytes([row.ciphertext[0] ^ 1]) + row.ciphertext[1:]))
    with pytest.raises(DecryptionFailed, match="integrity"):
        _resolve(tenant_id, "alpha")


def test_last_used_is_recorded_at_most_once_a_minute(tenant_id: str) -> None:
    t0 = utcnow()
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "api", "v-one", now=t0)
    _resolve(tenant_id, "api", now=t0 + timedelta(seconds=1))
    _resolve(tenant_id, "api", now=t0 + timedelta(seconds=30))
    with unit_of_work() as session:
        assert service.secret_metadata(session, tenant_id, "api").last_used_at == t0 + timedelta(seconds=1)
    _resolve(tenant_id, "api", now=t0 + timedelta(seconds=62))
    with unit_of_work() as session:
        assert service.secret_metadata(session, tenant_id, "api").last_used_at == t0 + timedelta(seconds=62)


def test_secrets_older_than_their_policy_are_due_for_rotation_until_promoted(tenant_id: str) -> None:
    t0 = utcnow()
    with unit_of_work() as session:
        service.create_secret(session, tenant_id, "old", "v-one", max_age_days=30, now=t0)
        service.create_secret(session, tenant_id, "no_policy", "v-one", now=t0)
    later = t0 + timedelta(days=31)
    with unit_of_work() as session:
        due = [d for d in service.due_for_rotation(session, later) if d.tenant_id == tenant_id]
        assert [(d.name, d.age_days, d.max_age_days) for d in due] == [("old", 31, 30)]
        meta = service.secret_metadata(session, tenant_id, "old", now=later)
        assert meta.rotation_due is True and meta.age_days == 31
        service.rotate_secret(session, tenant_id, "old", "v-two", now=later)
        service.promote_secret(session, tenant_id, "old", now=later)
    with unit_of_work() as session:
        assert [d for d in service.due_for_rotation(session, later) if d.tenant_id == tenant_id] == []


def test_master_key_rotation_rewraps_everything_and_only_the_new_key_reads(tenant_id: str) -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    with unit_of_work() as session:
        for i in range(5):
            service.create_secret(session, tenant_id, f"s{i}", f"value-{i}", master=old)
        service.rotate_secret(session, tenant_id, "s0", "value-0-next", master=old)
        service.delete_secret(session, tenant_id, "s4")  # wiped: nothing to re-wrap
    report = service.rotate_master_key(old, new, batch_size=2)
    assert report.rewrapped == 5 and report.wrapped_by.get(old.key_id) is None
    assert report.wrapped_by[new.key_id] >= 5
    assert [_resolve(tenant_id, f"s{i}", master=new) for i in range(4)] == [f"value-{i}" for i in range(4)]
    assert _resolve(tenant_id, "s0", "pending", master=new) == "value-0-next"
    with pytest.raises(MasterKeyMismatch, match=new.key_id):
        _resolve(tenant_id, "s1", master=old)
    with unit_of_work() as session:
        record = session.get(MasterKeyRecord, old.key_id)
        assert record is not None and record.retired_at is not None
    # running it again (a resumed rotation) finds nothing left to do
    assert service.rotate_master_key(old, new).rewrapped == 0


def test_rotating_to_the_same_master_key_is_refused() -> None:
    key = MasterKey.generate()
    with pytest.raises(InvalidInput, match="current one"):
        service.rotate_master_key(key, MasterKey(key.key))
