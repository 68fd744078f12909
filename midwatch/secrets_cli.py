"""``midwatch secrets ...`` commands (wired by midwatch.cli): master key rotation (secrets re-wrapped, chain heads
re-sealed)."""

from __future__ import annotations

import os
from pathlib import Path

from midwatch.audit_cli import print_head_report
from tenants.audit.service import record
from tenants.kit.db import unit_of_work
from tenants.kit.errors import MidwatchError
from tenants.kit.master_key import (
    MasterKey,
    embedded_key_path,
    load_master_key,
    master_key_source,
    parse_master_key,
    write_key_file,
)
from tenants.kit.settings import get_settings
from tenants.runs.heads import reseal_heads
from tenants.secrets.errors import MasterKeyUnavailable
from tenants.secrets.service import rotate_master_key

__all__ = ["NEW_KEY_ENV", "rotate_master_key_command"]

NEW_KEY_ENV = "MIDWATCH_NEW_MASTER_KEY"


def rotate_master_key_command(new_key_b64: str | None) -> int:
    """Re-wrap every secret's data key from the configured master key to a new one. Returns an exit code.

    The current key comes from settings (MIDWATCH_MASTER_KEY, _FILE, or the embedded key file); the
    new one from ``new_key_b64`` or MIDWATCH_NEW_MASTER_KEY. In the embedded mode the new key may be
    omitted (one is generated), and it is written to ``master.key.next`` before anything is re-wrapped,
    so it survives a crash mid-way; it replaces ``master.key`` once every version is re-wrapped and every
    chain head sealed under the old key is re-sealed under the new one (tenants.runs.heads).
    Stop workers while it runs: a process holding the old key cannot read re-wrapped versions.
    Safe to re-run with the same keys after a failure. Exit codes: 0 done, 1 failed, 2 usage.
    """
    settings = get_settings()
    source = master_key_source(settings)
    key_path = embedded_key_path(settings)
    next_path = key_path.with_name(key_path.name + ".next")
    if source == "embedded" and not key_path.exists():
        print(f"no master key yet ({key_path} does not exist): nothing to rotate")
        return 0
    supplied = new_key_b64 or os.environ.get(NEW_KEY_ENV)
    if not supplied and source != "embedded":
        print(f"error: give the new key as an argument or in {NEW_KEY_ENV} (base64 of 32 random bytes, "
              "e.g. `openssl rand -base64 32`)")
        return 2
    try:
        old = load_master_key(settings)
        new = (parse_master_key(supplied, "the new master key" if new_key_b64 else NEW_KEY_ENV) if supplied
               else None)
        if source == "embedded":
            new = _stage_embedded(next_path, new)
        assert new is not None
        print(f"re-wrapping data keys: {old.key_id} -> {new.key_id}")
        report = rotate_master_key(old, new)
    except MidwatchError as exc:
        print(f"error: {exc.detail}")
        print("versions re-wrapped before the error stay under the new key; fix the cause and run again "
              "with the same keys to finish")
        return 1
    print(f"re-wrapped {report.rewrapped} secret version(s)")
    for key_id, count in sorted(report.wrapped_by.items()):
        print(f"  {key_id}: {count} version(s)")
    if not report.complete:
        others = ", ".join(k for k in report.wrapped_by if k != new.key_id)
        print(f"error: versions are still wrapped by {others}, not by the configured key {old.key_id}: "
              "is MIDWATCH_MASTER_KEY the key this vault was encrypted with?")
        return 1
    _audit(old.key_id, new.key_id, report.rewrapped)  # sealed under the old key, then re-sealed below
    with unit_of_work() as session:
        heads = reseal_heads(session, old, new)
    print_head_report(heads, "chain heads re-sealed under the new key")
    if source == "embedded":
        os.replace(next_path, key_path)
        print(f"done: {key_path} now holds the new key {new.key_id}; restart Midwatch")
    else:
        where = "the file MIDWATCH_MASTER_KEY_FILE names" if source == "file" else "MIDWATCH_MASTER_KEY"
        print(f"done: put the new key ({new.key_id}) in {where} and restart every Midwatch process; "
              f"the old key ({old.key_id}) can no longer read any secret")
    return 0


def _audit(old_key_id: str, new_key_id: str, rewrapped: int) -> None:
    """Record the rotation on the platform audit chain (who: the shell; key ids only, never key material)."""
    with unit_of_work() as session:
        record(session, None, actor="cli", role="operator", action="master_key.rotated", target=new_key_id,
               details={"via": "midwatch secrets rotate-master-key", "rewrapped": rewrapped,
                        "before": {"master_key_id": old_key_id}, "after": {"master_key_id": new_key_id}})


def _stage_embedded(next_path: Path, supplied: MasterKey | None) -> MasterKey:
    """The embedded mode's new key, persisted to ``next_path`` (reused if an earlier run left it)."""
    if next_path.exists():
        staged = parse_master_key(next_path.read_bytes(), str(next_path))
        if supplied is not None and supplied.key_id != staged.key_id:
            raise MasterKeyUnavailable(f"{next_path} holds another new key ({staged.key_id}) from an interrupted "
                                       "rotation: finish that one first (run without a new key)")
        return staged
    new = supplied or MasterKey.generate()
    write_key_file(next_path, new)
    return new
