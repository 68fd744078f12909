"""The decision log's hash chain: each event's hash covers its content and the previous hash; the run's head
(seq, hash) is sealed (tenants.audit.seals)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tenants.audit.seals import seal_problem
from tenants.kit.ids import canonical_json

__all__ = ["GENESIS", "HASHED_FIELDS", "ChainVerdict", "event_hash", "verify_chain"]

GENESIS = "0" * 64
HASHED_FIELDS = (
    "run_id", "seq", "kind", "item_index", "step_index", "step_id", "considered", "chosen", "why",
    "verdicts", "failure_category", "cost_usd", "latency_ms", "input_hash", "output_hash", "created_at",
)


_PLAIN = frozenset({str, int, bool, dict, list, type(None)})


def _normal(value: Any) -> Any:
    if type(value) in _PLAIN:  # none of them has isoformat; asked first because a failed hasattr is slow
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if value is None or isinstance(value, str | int | bool | dict | list):
        return value
    return str(value)  # Decimal and friends: fixed text


def event_hash(prev_hash: str, event: Mapping[str, Any]) -> str:
    """SHA-256 over the previous hash and the event's hashed fields."""
    body = {name: _normal(event.get(name)) for name in HASHED_FIELDS}
    if body["cost_usd"] is not None:
        body["cost_usd"] = f"{float(body['cost_usd']):.8f}"
    if body["latency_ms"] is not None:
        body["latency_ms"] = f"{float(body['latency_ms']):.3f}"
    return hashlib.sha256((prev_hash + canonical_json(body)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainVerdict:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str = ""


def _links(events: Iterable[Mapping[str, Any]], head_seq: int | None) -> tuple[ChainVerdict | None, int, str | None]:
    """Recompute seqs, links and hashes: (the first break or None, events read, the hash at ``head_seq``)."""
    prev, count, expected_seq = GENESIS, 0, 1
    at_head = GENESIS if head_seq == 0 else None
    for ev in events:
        count += 1
        seq = int(ev["seq"])
        if seq != expected_seq:
            return ChainVerdict(False, count, seq, f"sequence gap: expected {expected_seq}, found {seq}"), count, None
        if ev["prev_hash"] != prev:
            return ChainVerdict(False, count, seq, "previous-hash link broken"), count, None
        if event_hash(prev, ev) != ev["hash"]:
            return ChainVerdict(False, count, seq, "event content does not match its hash"), count, None
        prev = str(ev["hash"])
        if seq == head_seq:
            at_head = prev
        expected_seq += 1
    return None, count, at_head


def verify_chain(events: Iterable[Mapping[str, Any]], head: tuple[int, str | None, str | None] | None = None,
                 chain: str = "") -> ChainVerdict:
    """Recompute the chain; report the first event whose hash or link does not match.

    With ``head`` (the run's stored seq, hash and seal, and ``chain`` its name, ``seals.run_chain``) the
    chain must also reach that head, and the head's seal must hold: deleting the newest events (or all of
    them), or moving the head back to match, is caught too (tenants.audit.seals). Without it, only the
    links are checked (a read model's quick look)."""
    broken, count, at_head = _links(events, None if head is None else head[0])
    if broken is not None:
        return broken
    if head is None:
        return ChainVerdict(True, count)
    head_seq, head_hash, seal = head[0], head[1] or GENESIS, head[2]
    if count < head_seq:
        return ChainVerdict(False, count, count + 1,
                            f"chain truncated: the head is at seq {head_seq}, the last event is {count}")
    if at_head != head_hash:
        return ChainVerdict(False, count, head_seq or None, "the event at the head's seq does not match the head")
    problem = seal_problem("run", chain, head_seq, head_hash, seal)
    return ChainVerdict(True, count) if problem is None else ChainVerdict(False, count, head_seq + 1, problem)
