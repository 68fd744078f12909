"""Sealed chain heads: what a database-only attacker cannot forge.

Every hash chain keeps its head — the newest (seq, hash) — in a row: a run's decision log in
``runs.event_seq`` / ``event_head``, a tenant's (or the platform's) audit trail in ``audit_heads``. The
hash chain alone shows an edited, inserted or reordered event, but whoever can write the database can
also delete the newest events (or all of them) and move the head back to match. The *seal* closes that:
an HMAC over (kind, chain, seq, hash) under a key derived from the secrets master key, which lives
outside the database (environment, mounted file, or the embedded data dir's ``master.key``). Verification
recomputes it, so a truncated chain or a rolled-back head no longer verifies, without any lock shared
between chains (each head is sealed by whoever already writes it, in the same statement).

A writer extends a chain only from a head whose seal holds; when it does not (the head was forged, or
sealed under another master key), the new head carries the marker ``broken:<seq>`` instead of a seal, so
the next legitimate write cannot launder the tampering: the chain keeps failing verification.

What a seal cannot show: an attacker who kept an earlier copy of a head row *with its seal* (a backup) and
restores it together with the events up to it. Comparing heads with a copy kept outside the database
(the run webhooks, an export) covers that.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from typing import Literal

from tenants.kit.ids import canonical_json
from tenants.kit.master_key import MasterKey, get_master_key

__all__ = ["BROKEN", "ChainKind", "broken_marker", "run_chain", "seal", "seal_problem"]

ChainKind = Literal["run", "audit"]
BROKEN = "broken:"  # the marker prefix of a head extended from a head whose seal did not hold
_LABEL = b"chain-heads/v1"
_KEY_ID = re.compile(r"mk_[0-9a-f]{16}")
_macs: dict[str, hmac.HMAC] = {}
_keys_lock = threading.Lock()


def _mac(master: MasterKey) -> hmac.HMAC:
    """A fresh HMAC under the master key's sealing key: a copy of one keyed once per key (every step seals
    its run's head, and keying an HMAC costs as much as the rest of the seal)."""
    prototype = _macs.get(master.key_id)
    if prototype is None:
        with _keys_lock:
            prototype = _macs.setdefault(master.key_id, hmac.new(master.derive(_LABEL), digestmod=hashlib.sha256))
    return prototype.copy()


def seal(kind: ChainKind, chain: str, seq: int, head: str, *, master: MasterKey | None = None) -> str:
    """The seal of ``chain``'s head (seq, hash): ``<master key id>:<hex HMAC>``."""
    master = master or get_master_key()
    mac = _mac(master)
    mac.update(canonical_json(["midwatch/chain-head/v1", kind, chain, int(seq), head]).encode())
    return f"{master.key_id}:{mac.hexdigest()}"


def seal_problem(kind: ChainKind, chain: str, seq: int, head: str, stored: str | None, *,
                 master: MasterKey | None = None) -> str | None:
    """None when ``stored`` is the valid seal of the head, else why not (in words for the operator)."""
    master = master or get_master_key()
    if not stored:
        return "the chain head is not sealed"
    if stored.startswith(BROKEN):
        at = stored[len(BROKEN):]
        return (f"the chain was extended from a head whose seal did not hold (at seq {at if at.isdigit() else '?'}):"
                " the log was altered before that")
    key_id, _, _mac = stored.partition(":")
    if key_id != master.key_id:
        shown = key_id if _KEY_ID.fullmatch(key_id) else "an unknown key"  # the column is attacker-writable
        return (f"the chain head is sealed under master key {shown}, not this process's {master.key_id} "
                "(forged, or a master key rotation did not finish)")
    if not hmac.compare_digest(stored, seal(kind, chain, seq, head, master=master)):
        return "the chain head's seal does not match it (the head was moved or forged)"
    return None


def broken_marker(kind: ChainKind, chain: str, previous: tuple[int, str, str | None], *,
                  master: MasterKey | None = None) -> str | None:
    """Before extending a chain from ``previous`` (seq, hash, its stored seal): None when that seal holds (seal
    the new heads), else the marker every new head must carry instead, ``broken:<seq>`` (see the module
    docstring)."""
    prev_seq, prev_head, prev_seal = previous
    if prev_seal is not None and prev_seal.startswith(BROKEN):
        return prev_seal
    if seal_problem(kind, chain, prev_seq, prev_head, prev_seal, master=master) is not None:
        return f"{BROKEN}{prev_seq}"
    return None


def run_chain(tenant_id: str, run_id: str) -> str:
    """The chain name a run's decision log is sealed under."""
    return f"{tenant_id}/{run_id}"
