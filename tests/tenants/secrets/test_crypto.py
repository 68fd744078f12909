"""The AES-GCM envelope: round trip, integrity, binding to the row, the master key."""

from __future__ import annotations

import dataclasses

import pytest

from tenants.kit.master_key import MasterKey
from tenants.secrets.crypto import Sealed, associated_data, open_value, rewrap, seal_value
from tenants.secrets.errors import DecryptionFailed, MasterKeyMismatch

AAD = associated_data("tnt_a", "sec_1", "crm_token", 1)


def test_a_sealed_value_opens_to_the_same_plaintext_and_is_not_stored_in_clear() -> None:
    master = MasterKey.generate()
    sealed = seal_value("hunter2-é-token", master, AAD)
    assert b"hunter2" not in sealed.ciphertext and b"hunter2" not in sealed.wrapped_key
    assert sealed.master_key_id == master.key_id and len(sealed.nonce) == 12
    assert open_value(sealed, master, AAD, "v1") == "hunter2-é-token"


def test_every_version_gets_its_own_data_key_and_nonce() -> None:
    master = MasterKey.generate()
    a, b = seal_value("same", master, AAD), seal_value("same", master, AAD)
    assert a.ciphertext != b.ciphertext and a.wrapped_key != b.wrapped_key and a.nonce != b.nonce


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "wrapped_key"])
def test_a_flipped_bit_anywhere_fails_the_integrity_check(field: str) -> None:
    master = MasterKey.generate()
    sealed = seal_value("value-1234", master, AAD)
    blob = bytearray(getattr(sealed, field))
    blob[-1] ^= 0x01
    with pytest.raises(DecryptionFailed, match="integrity"):
        open_value(dataclasses.replace(sealed, **{field: bytes(blob)}), master, AAD, "v1")


@pytest.mark.parametrize("elsewhere", [
    associated_data("tnt_b", "sec_1", "crm_token", 1),  # another tenant
    associated_data("tnt_a", "sec_2", "crm_token", 1),  # another secret
    associated_data("tnt_a", "sec_1", "mail_token", 1),  # another name
    associated_data("tnt_a", "sec_1", "crm_token", 2),  # another version
])
def test_a_ciphertext_moved_to_another_row_does_not_decrypt(elsewhere: bytes) -> None:
    master = MasterKey.generate()
    sealed = seal_value("value-1234", master, AAD)
    with pytest.raises(DecryptionFailed):
        open_value(sealed, master, elsewhere, "moved")


def test_the_wrong_master_key_fails_clearly_naming_both_key_ids() -> None:
    right, wrong = MasterKey.generate(), MasterKey.generate()
    sealed = seal_value("value-1234", right, AAD)
    with pytest.raises(MasterKeyMismatch) as info:
        open_value(sealed, wrong, AAD, "secret 'crm_token'")
    assert right.key_id in info.value.detail and wrong.key_id in info.value.detail
    assert "MIDWATCH_MASTER_KEY" in info.value.detail


def test_a_wrong_key_claiming_the_right_key_id_still_fails_the_integrity_check() -> None:
    right, wrong = MasterKey.generate(), MasterKey.generate()
    sealed = seal_value("value-1234", right, AAD)
    forged = Sealed(sealed.ciphertext, sealed.nonce, sealed.wrapped_key, master_key_id=wrong.key_id)
    with pytest.raises(DecryptionFailed):
        open_value(forged, wrong, AAD, "v1")


def test_rewrap_moves_the_data_key_to_the_new_master_key_without_touching_the_value() -> None:
    old, new = MasterKey.generate(), MasterKey.generate()
    sealed = seal_value("value-1234", old, AAD)
    moved = rewrap(sealed, old, new, AAD, "v1")
    assert moved.ciphertext == sealed.ciphertext and moved.master_key_id == new.key_id
    assert open_value(moved, new, AAD, "v1") == "value-1234"
    with pytest.raises(MasterKeyMismatch):
        open_value(moved, old, AAD, "v1")


def test_a_master_key_never_shows_in_its_repr_and_its_id_is_stable() -> None:
    key = MasterKey.generate()
    assert key.to_b64() not in repr(key) and key.key.hex() not in repr(key)
    assert MasterKey(key.key).key_id == key.key_id and key.key_id.startswith("mk_")
