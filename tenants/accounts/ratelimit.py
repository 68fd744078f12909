"""Per-key request limits (fixed one-minute windows) and failed-authentication throttling, without a
database write per request.

Two counters with one interface (:class:`Counter`):

- :class:`RedisCounter` (used whenever the deployment has Redis: ``MIDWATCH_REDIS_URL``, or a Redis
  broker): never over the limit across any number of API replicas. Each hit takes the next position in
  the key's window with ``INCRBY`` (and ``EXPIRE``, one pipelined round trip) and is admitted while its
  position is within the limit. A key with a high limit claims positions in blocks (``limit // 1000``,
  at most :data:`MAX_BLOCK`) and counts the block down in memory: one round trip per block, not per
  request. A replica's unused positions are never given to another, so a key may be refused at most
  ``block - 1`` requests (0.1 % of its limit) early per replica; it is never admitted over its limit.
  Limits up to 1,999 a minute claim one position at a time.
- :class:`BatchedCounter` (no Redis, e.g. PostgreSQL + RabbitMQ, and the embedded default): each process
  counts in memory and, about once a second, adds its counts to the shared row in ``api_key_windows``
  and reads the total back. Exact within one process; across replicas a key can go over its limit by at
  most what the other replicas admitted since their last flush (about one second of their traffic).
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tenants.accounts.repository import AccountsPlatformRepository
from tenants.kit.db import unit_of_work
from tenants.kit.ids import utcnow
from tenants.kit.logging import get_logger

__all__ = ["MAX_BLOCK", "RATE_WINDOW_SECONDS", "BatchedCounter", "Counter", "Limiter", "RedisCounter", "Verdict"]

RATE_WINDOW_SECONDS = 60
FLUSH_EVERY_S = 1.0
MAX_BLOCK = 100  # positions a replica claims from Redis at once, for a key limited to 100,000 a minute or more
log = get_logger("ratelimit")


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: int  # seconds until the window resets (0 when allowed)


class Counter(Protocol):
    """Counts hits of a name in one-minute windows; returns the count including this hit."""

    def hit(self, name: str, window_start: int, block: int = 1) -> int:
        """Count a hit (``block``: how many counts the counter may claim from a shared store at once)."""

    def hit_local(self, name: str, window_start: int) -> int | None:
        """Count a hit without a round trip, or None (nothing counted) when that needs one."""

    def peek(self, name: str, window_start: int) -> int: ...

    def close(self) -> None: ...


class RedisCounter:
    """Never over the limit across replicas: a hit's count is its position in the key's window, claimed
    from Redis one at a time or in blocks (see the module docstring)."""

    def __init__(self, client: Any, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self._lock = threading.Lock()
        self._claimed: dict[tuple[str, int], tuple[int, int]] = {}  # (name, window) -> (next, last) position

    def _key(self, name: str, window_start: int) -> str:
        return f"{self._namespace}:rl:{name}:{window_start}"

    def hit_local(self, name: str, window_start: int) -> int | None:
        key = (name, window_start)
        with self._lock:
            claimed = self._claimed.get(key)
            if claimed is None:
                return None
            position, last = claimed
            if position == last:
                del self._claimed[key]
            else:
                self._claimed[key] = (position + 1, last)
            return position

    def hit(self, name: str, window_start: int, block: int = 1) -> int:
        position = self.hit_local(name, window_start)
        if position is not None:
            return position
        pipe = self._client.pipeline(transaction=False)
        pipe.incrby(self._key(name, window_start), block)
        pipe.expire(self._key(name, window_start), RATE_WINDOW_SECONDS * 2)
        total, _ = pipe.execute()
        first = int(total) - block + 1
        if block > 1:
            with self._lock:
                for old in [k for k in self._claimed if k[1] < window_start]:
                    del self._claimed[old]
                self._claimed[(name, window_start)] = (first + 1, int(total))
        return first

    def peek(self, name: str, window_start: int) -> int:
        return int(self._client.get(self._key(name, window_start)) or 0)

    def close(self) -> None:
        self._client.close()


class BatchedCounter:
    """In-memory counts flushed to the database about once a second (see the module docstring).

    Only names that look like API key ids (``key_...``) are shared through the database; other names
    (failed authentications per client address) stay per process.
    """

    def __init__(self, flush_every_s: float = FLUSH_EVERY_S) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, int], int] = defaultdict(int)  # not yet flushed
        self._shared: dict[tuple[str, int], int] = {}  # the database's total at our last flush
        self._local: dict[tuple[str, int], int] = defaultdict(int)  # process-only names
        self._flush_every_s = flush_every_s
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def hit(self, name: str, window_start: int, block: int = 1) -> int:
        key = (name, window_start)
        with self._lock:
            if not name.startswith("key_"):
                self._local[key] += 1
                self._forget_old(window_start)
                return self._local[key]
            self._pending[key] += 1
            count = self._pending[key] + self._shared.get(key, 0)
        self._ensure_flusher()
        return count

    def hit_local(self, name: str, window_start: int) -> int | None:
        return self.hit(name, window_start)  # always in memory

    def peek(self, name: str, window_start: int) -> int:
        key = (name, window_start)
        with self._lock:
            return self._local.get(key, 0) + self._pending.get(key, 0) + self._shared.get(key, 0)

    def _forget_old(self, window_start: int) -> None:
        for store in (self._local, self._shared):
            for key in [k for k in store if k[1] < window_start]:
                del store[key]

    def _ensure_flusher(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="midwatch-ratelimit", daemon=True)
                    self._thread.start()

    def close(self) -> None:
        """Stop flushing (the process is switching databases or shutting down)."""
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._flush_every_s):
            try:
                self.flush()
            except Exception:  # a later flush retries; counting goes on in memory
                log.warning("rate_limit_flush_failed", exc_info=True)

    def flush(self) -> None:
        """Add this process's counts to the shared rows and learn every replica's totals."""
        with self._lock:
            pending, self._pending = dict(self._pending), defaultdict(int)
        if not pending:
            return
        try:
            with unit_of_work() as session:
                repo = AccountsPlatformRepository(session)
                totals = {key: repo.add_requests(key[0], key[1], n) for key, n in sorted(pending.items())}
        except BaseException:
            with self._lock:  # keep the counts for the next flush
                for key, n in pending.items():
                    self._pending[key] += n
            raise
        with self._lock:
            self._shared.update(totals)
            self._forget_old(max(k[1] for k in totals))


class Limiter:
    """Per-key limits and per-address failed-authentication throttling over one :class:`Counter`."""

    def __init__(self, counter: Counter, clock: Callable[[], datetime] | None = None) -> None:
        self.counter = counter
        self._clock = clock

    def _window(self) -> tuple[int, float]:
        epoch = (self._clock or utcnow)().timestamp()
        return int(epoch // RATE_WINDOW_SECONDS) * RATE_WINDOW_SECONDS, epoch

    def _verdict(self, count: int, limit: int, window_start: int, epoch: float) -> Verdict:
        if count <= limit:
            return Verdict(True, 0)
        return Verdict(False, max(1, math.ceil(window_start + RATE_WINDOW_SECONDS - epoch)))

    def request(self, key_id: str, limit: int) -> Verdict:
        """Count one request of an API key against ``limit`` per minute."""
        window_start, epoch = self._window()
        block = max(1, min(MAX_BLOCK, limit // 1000))
        return self._verdict(self.counter.hit(key_id, window_start, block), limit, window_start, epoch)

    def request_local(self, key_id: str, limit: int) -> Verdict | None:
        """:meth:`request` without a round trip, or None (nothing counted) when counting needs one."""
        window_start, epoch = self._window()
        count = self.counter.hit_local(key_id, window_start)
        return None if count is None else self._verdict(count, limit, window_start, epoch)

    def failures_exceeded(self, address: str, limit: int) -> Verdict:
        """Whether ``address`` already failed authentication ``limit`` times this minute (no hit counted)."""
        window_start, epoch = self._window()
        return self._verdict(self.counter.peek(f"authfail:{address}", window_start) + 1, limit, window_start, epoch)

    def failed(self, address: str) -> None:
        """Count one failed authentication from ``address``."""
        self.counter.hit(f"authfail:{address}", self._window()[0])
