"""A step's deadline (``Step.timeout_s``), seen by everything the step calls in the worker's thread.

The engine runs each step inside :func:`step_deadline`; HTTP tools and model calls take
:func:`bounded` of their own timeout as the request's timeout, ``sandbox.sleep`` sleeps no longer
than :func:`remaining`, and a step that runs out of time fails as ``dependency`` with
:func:`timed_out`'s reason. Without a ``timeout_s`` nothing is bounded here (each call keeps its own
timeout). A context variable rather than a parameter, so a tool or provider need not thread the
deadline through every layer between the engine and the socket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from runner.errors import StepFailed

__all__ = ["bounded", "remaining", "step_deadline", "timed_out"]


@dataclass(frozen=True, slots=True)
class _Deadline:
    step_id: str
    timeout_s: float
    at: float  # time.monotonic()


_CURRENT: ContextVar[_Deadline | None] = ContextVar("midwatch_step_deadline", default=None)


@contextmanager
def step_deadline(step_id: str, timeout_s: float | None) -> Iterator[None]:
    """Bound what runs inside to ``timeout_s`` seconds from now (no bound for None)."""
    token = _CURRENT.set(None if timeout_s is None else _Deadline(step_id, timeout_s, time.monotonic() + timeout_s))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def remaining() -> float | None:
    """Seconds left before the current step's deadline (0 when passed), None without one."""
    current = _CURRENT.get()
    return None if current is None else max(0.0, current.at - time.monotonic())


def timed_out() -> StepFailed:
    """The failure of a step that ran out of its ``timeout_s`` (not retried within the step)."""
    current = _CURRENT.get()
    what = f"step {current.step_id!r} exceeded its timeout_s={current.timeout_s:g}" if current else "step timed out"
    return StepFailed("dependency", what, details={"timeout_s": current.timeout_s if current else None,
                                                   "retryable": False, "timed_out": True})


def bounded(timeout_s: float) -> float:
    """``timeout_s`` capped by the time the step has left; raises :func:`timed_out` when none is left."""
    left = remaining()
    if left is None:
        return timeout_s
    if left <= 0:
        raise timed_out()
    return min(timeout_s, left)
