"""The ``overhead`` baseline: the same runs x steps through plain Dramatiq actors, no checkpoints.

Run as ``dramatiq benchmarks.plain_dramatiq`` (the benchmark starts it); counts finished runs in Redis.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

TAG = os.environ.get("PLAIN_BENCH_TAG", "plain")
URL = os.environ.get("PLAIN_BENCH_REDIS", "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=URL, namespace=TAG)
dramatiq.set_broker(broker)
_client = redis.Redis.from_url(URL)


def _noop(i: int) -> int:
    return i


@dramatiq.actor(queue_name=TAG, max_retries=0)
def plain_run(steps: int) -> None:
    """A run without checkpoints: call ``steps`` no-op steps, then count the run as done."""
    for i in range(steps):
        _noop(i)
    _client.incr(f"{TAG}:done")


def enqueue_all(runs: int, steps: int) -> None:
    """Submit ``runs`` messages at once."""
    for _ in range(runs):
        plain_run.send(steps)
