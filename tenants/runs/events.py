"""The decision log's hash chain: each event's hash covers its content and the previous hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tenants.kit.ids import canonical_json

__all__ = ["GENESIS", "HASHED_FIELDS", "ChainVerdict", "event_hash", "verify_chain"]

GENESIS = "0" * 64
HASHED_FIELDS = (
    "run_id", "seq", "kind", "item_index", "step_index", "step_id", "considered", "chosen", "why",
    "verdicts", "failure_category", "cost_usd", "latency_ms", "input_hash", "output_hash", "created_at",
)


def _normal(value: Any) -> Any:
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


def verify_chain(events: Iterable[Mapping[str, Any]]) -> ChainVerdict:
    """Recompute the chain; report the first event whose hash or link does not match."""
    prev = GENESIS
    count = 0
    expected_seq = 1
    for ev in events:
        count += 1
        seq = int(ev["seq"])
        if seq != expected_seq:
            return ChainVerdict(False, count, seq, f"sequence gap: expected {expected_seq}, found {seq}")
        if ev["prev_hash"] != prev:
            return ChainVerdict(False, count, seq, "previous-hash link broken")
        if event_hash(prev, ev) != ev["hash"]:
            return ChainVerdict(False, count, seq, "event content does not match its hash")
        prev = str(ev["hash"])
        expected_seq += 1
    return ChainVerdict(True, count)
