"""A circuit breaker per (tenant, host): stop calling a dependency that keeps failing.

States::

    closed ──(failure_threshold failures within window_s, no success between)──▶ open
    open ──(open_for_s elapsed; next allow())──▶ half_open (up to half_open_max_probes requests)
    half_open ──probe succeeds──▶ closed        half_open ──probe fails──▶ open (again for open_for_s)

The machine is pure: :class:`CircuitBreaker` computes new :class:`BreakerState` values and a
:class:`BreakerStore` keeps them, applying each change atomically through ``update``.
:class:`InMemoryBreakerStore` serves one process; a database-backed store (``SELECT ... FOR
UPDATE`` in ``update``) shares state between workers. Times are epoch seconds (``time.time()``),
so stored states stay meaningful across processes.

A probe that never reports back (its worker died) stops counting after ``open_for_s``, so a
half-open breaker cannot get stuck.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "BreakerStore",
    "CircuitBreaker",
    "Decision",
    "InMemoryBreakerStore",
    "State",
    "breaker_key",
]

State = Literal["closed", "open", "half_open"]
T = TypeVar("T")


def breaker_key(tenant_id: str, host: str) -> str:
    """The store key of the breaker guarding ``host`` for ``tenant_id``."""
    return f"{tenant_id}|{host.lower()}"


class BreakerConfig(BaseModel):
    """When a breaker opens and how it probes its way closed again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=5, ge=1, le=1000)
    window_s: float = Field(default=60.0, gt=0)
    open_for_s: float = Field(default=30.0, gt=0)
    half_open_max_probes: int = Field(default=1, ge=1, le=100)


@dataclass(frozen=True, slots=True)
class BreakerState:
    """The stored state of one breaker. ``failure_times`` keeps at most ``failure_threshold`` entries."""

    state: State = "closed"
    failure_times: tuple[float, ...] = ()
    opened_at: float | None = None
    probes_in_flight: int = 0
    probe_started_at: float | None = None
    last_reason: str | None = None

    @property
    def failures(self) -> int:
        """Failures counted in the current window."""
        return len(self.failure_times)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for a database column or the API)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BreakerState:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**data, "failure_times": tuple(data.get("failure_times", ()))})


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request may go out now; when not, why and when the breaker will probe."""

    allowed: bool
    state: State
    reason: str
    retry_at: float | None = None  # epoch seconds of the next probe (open breakers only)
    probe: bool = False  # this request is a half-open probe


class BreakerStore(Protocol):
    """Keeps breaker states. ``update`` must apply ``fn`` atomically per key."""

    def get(self, key: str) -> BreakerState:
        """The state for ``key`` (a fresh closed state when unknown)."""
        ...

    def put(self, key: str, state: BreakerState) -> None:
        """Overwrite the state for ``key`` (operator reset)."""
        ...

    def update(self, key: str, fn: Callable[[BreakerState], tuple[BreakerState, T]]) -> T:
        """Replace the state with ``fn(state)[0]`` atomically; return ``fn(state)[1]``."""
        ...


class InMemoryBreakerStore:
    """A thread-safe in-process :class:`BreakerStore`."""

    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> BreakerState:
        """The state for ``key`` (a fresh closed state when unknown)."""
        with self._lock:
            return self._states.get(key, BreakerState())

    def put(self, key: str, state: BreakerState) -> None:
        """Overwrite the state for ``key``."""
        with self._lock:
            self._states[key] = state

    def update(self, key: str, fn: Callable[[BreakerState], tuple[BreakerState, T]]) -> T:
        """Apply ``fn`` to the state for ``key`` under the store's lock."""
        with self._lock:
            new, result = fn(self._states.get(key, BreakerState()))
            self._states[key] = new
            return result

    def keys(self) -> list[str]:
        """Every key with a stored state."""
        with self._lock:
            return list(self._states)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class CircuitBreaker:
    """The breaker state machine over a :class:`BreakerStore` (see the module docstring)."""

    def __init__(self, config: BreakerConfig | None = None, store: BreakerStore | None = None) -> None:
        self.config = config or BreakerConfig()
        self.store: BreakerStore = store or InMemoryBreakerStore()

    def allow(self, key: str, now: float) -> Decision:
        """May a request to ``key`` go out at ``now``? Claims a probe slot when half-open."""
        return self.store.update(key, lambda s: self._allow(key, s, now))

    def _allow(self, key: str, s: BreakerState, now: float) -> tuple[BreakerState, Decision]:
        cfg = self.config
        if s.state == "closed":
            return s, Decision(True, "closed", "closed")
        opened_at = s.opened_at if s.opened_at is not None else now
        probe_at = opened_at + cfg.open_for_s
        if s.state == "open" and now < probe_at:
            reason = (f"circuit open for {key}: {s.failures} failures within {cfg.window_s:g}s"
                      f"{f' (last: {s.last_reason})' if s.last_reason else ''}; failing fast until the "
                      f"next probe at {_iso(probe_at)} (in {probe_at - now:.0f}s)")
            return s, Decision(False, "open", reason, retry_at=probe_at)
        # open and due, or half-open: hand out probe slots; a probe silent for open_for_s is stale.
        in_flight = s.probes_in_flight
        if in_flight and s.probe_started_at is not None and now - s.probe_started_at >= cfg.open_for_s:
            in_flight = 0
        if in_flight >= cfg.half_open_max_probes:
            retry_at = (s.probe_started_at or now) + cfg.open_for_s
            reason = (f"circuit half-open for {key}: {in_flight} probe(s) in flight; "
                      f"failing fast until they report (at the latest {_iso(retry_at)})")
            return s, Decision(False, "half_open", reason, retry_at=retry_at)
        new = replace(s, state="half_open", probes_in_flight=in_flight + 1, probe_started_at=now)
        return new, Decision(True, "half_open", f"circuit half-open for {key}: probe request", probe=True)

    def record_success(self, key: str, now: float) -> None:
        """A request got a healthy answer: a half-open breaker closes, failures are forgotten."""
        def fn(s: BreakerState) -> tuple[BreakerState, None]:
            if s.state == "open":
                return s, None  # a straggler from before the breaker opened proves nothing
            return BreakerState(), None
        self.store.update(key, fn)

    def record_failure(self, key: str, now: float, reason: str | None = None) -> None:
        """A request failed in a way that suggests the dependency is unhealthy."""
        cfg = self.config

        def fn(s: BreakerState) -> tuple[BreakerState, None]:
            if s.state == "half_open":
                return BreakerState("open", s.failure_times, now, 0, None, reason or s.last_reason), None
            if s.state == "open":
                return replace(s, last_reason=reason or s.last_reason), None
            recent = (*tuple(t for t in s.failure_times if now - t <= cfg.window_s), now)
            recent = recent[-cfg.failure_threshold:]
            if len(recent) >= cfg.failure_threshold:
                return BreakerState("open", recent, now, 0, None, reason), None
            return replace(s, failure_times=recent, last_reason=reason), None
        self.store.update(key, fn)

    def snapshot(self, key: str, now: float) -> dict[str, Any]:
        """The breaker's state as the API shows it (``next_probe_at`` for open breakers)."""
        s = self.store.get(key)
        shown: State = s.state
        next_probe = None
        if s.state == "open" and s.opened_at is not None:
            next_probe = s.opened_at + self.config.open_for_s
            if now >= next_probe:
                shown = "half_open"
        return {"key": key, "state": shown, "failures": s.failures,
                "opened_at": _iso(s.opened_at) if s.opened_at is not None else None,
                "next_probe_at": _iso(next_probe) if next_probe is not None else None,
                "probes_in_flight": s.probes_in_flight, "last_reason": s.last_reason}

    def reset(self, key: str) -> None:
        """Close the breaker (operator action)."""
        self.store.put(key, BreakerState())
