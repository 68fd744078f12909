"""The seeded fault schedule: which answer each request of the rehearsal gets.

A request is identified by its *call*: the repetition, the item, the step and the target (a tool or a model
alias), plus ``n``, the how-many-th request of that call it is (a retry, a validation retry, the next turn
of an agent step, or the re-send after the worker was killed). The answer is a pure function of
``(seed, call, n)``: a string-seeded ``random.Random`` per request (stable across processes and Python
versions), so the same seed gives the same schedule whatever the timing, the order in which the worker
takes runs, or the moment a process dies. Platform faults sit on seeded slots too: the worker is killed
while the first request of a chosen step, at or after a chosen item of the last repetition, is in flight.

Kinds (what the rehearsal upstream answers):

- tools: ``ok``, ``rate_limit`` (429 + Retry-After), ``unavailable`` (503), ``html`` (200 text/html),
  ``reset`` (connection reset, nothing done), ``reset_after_apply`` (done, then reset: an unknown
  outcome), ``truncated`` (half a JSON body, done), ``slow`` (latency spike), ``timeout`` (held past the
  tool's timeout, done), ``token_expiry`` (401 invalid_token), ``drift`` (a field renamed);
- models: ``ok``, ``unavailable``, ``rate_limit``, ``leak`` (a password in the text), ``rambling``
  (6,000 characters), ``empty``, ``off_schema`` (structured answer breaking the output schema), ``prose``
  (text where JSON was asked for), ``refusal``, ``truncated`` (an answer of about 1,200 tokens cut off by
  the step's ``max_tokens``; ``long`` when ``max_tokens`` leaves room for it, a verbose but fine answer),
  ``bad_tool_args`` (unparseable arguments of a tool call).

``leak``, ``rambling``, ``empty``, ``off_schema`` and ``prose`` are *known-wrong answers*: a step that
accepts one has let a wrong answer through (the report counts the item as failed).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from runner.rehearsal.profile import Profile
from runner.spec import AgentSpec, Step

__all__ = ["KNOWN_WRONG", "TRANSPORT", "CallKey", "KillSlot", "Schedule", "rng"]

KNOWN_WRONG = frozenset({"leak", "rambling", "empty", "off_schema", "prose"})
TRANSPORT = frozenset({"rate_limit", "unavailable"})  # faults a storm repeats
_TOOL_ORDER = ("rate_limit", "unavailable", "html", "reset", "reset_after_apply", "truncated", "slow",
               "token_expiry", "drift")
_MODEL_ORDER = ("unavailable", "rate_limit", "rule_breaking", "off_schema", "refusal", "truncated", "bad_tool_args")


def rng(seed: int, *parts: object) -> random.Random:
    """A generator for one decision, seeded by a string (sha512-based: the same in every process)."""
    return random.Random("|".join(str(p) for p in (seed, *parts)))


@dataclass(frozen=True, slots=True)
class CallKey:
    """One call of the rehearsal: repetition (1-based), item (0-based), step id and target (``tool:x`` /
    ``model:alias``)."""

    rep: int
    item: int
    step: str
    target: str


@dataclass(frozen=True, slots=True)
class KillSlot:
    """Kill the worker while the first request of ``step`` at item ``item_from`` or later of repetition ``rep``
    is in flight (the first such request that arrives; see :meth:`Schedule.is_kill_trigger`)."""

    rep: int
    item_from: int
    step: str


def kill_step(spec: AgentSpec, side_effects: set[str]) -> Step:
    """The step whose call is cut by the kill: the first side-effecting tool step (the hardest case), else
    the last tool step, else the first step."""
    tools = [s for s in spec.steps if s.tool is not None]
    for step in tools:
        if step.side_effect or (step.side_effect is None and step.tool in side_effects):
            return step
    return tools[-1] if tools else spec.steps[0]


class Schedule:
    """Decides every answer from the seed (see the module docstring)."""

    def __init__(self, seed: int, profile: Profile, spec: AgentSpec, *, items: int, repeat: int,
                 side_effects: set[str]) -> None:
        self.seed = seed
        self.profile = profile
        self.items = items
        self.repeat = repeat
        self.steps = {s.id: s for s in spec.steps}
        self.first_step = spec.steps[0].id
        self.kill: KillSlot | None = None
        if profile.platform.kill_worker or profile.platform.drop_queue:
            step = kill_step(spec, side_effects)
            low, high = items // 3, max(items // 3, (2 * items) // 3 - 1)
            self.kill = KillSlot(repeat, rng(seed, "kill").randint(low, high) if items > 1 else 0, step.id)
        tool_steps = [s.id for s in spec.steps if s.tool is not None]
        slots = [(r, i, s) for r in range(1, repeat + 1) for i in range(items) for s in tool_steps]
        pick = rng(seed, "timeouts")
        self.timeouts = frozenset(pick.sample(slots, min(profile.tools.timeouts, len(slots)))) if slots else frozenset()
        frm = profile.tools.drift_from
        self.drift_from = None if frm is None else int(frm * items * repeat)

    # ---- tools ----------------------------------------------------------------------------------
    def tool_fault(self, call: CallKey, n: int, *, has_auth: bool, can_drift: bool) -> str:
        """The fault kind of the ``n``-th request of a tool call."""
        kind = "ok"
        for m in range(1, n + 1):
            held = m == 1 and (call.rep, call.item, call.step) in self.timeouts
            kind = "timeout" if held else self._tool_draw(call, m, kind)
        if kind == "timeout":
            return kind
        if kind == "token_expiry" and not has_auth:
            kind = "ok"
        if kind == "drift" and not can_drift:
            kind = "ok"
        position = (call.rep - 1) * self.items + call.item
        if kind == "ok" and can_drift and self.drift_from is not None and position >= self.drift_from:
            kind = "drift"  # the upstream deployed a new version of its API for good
        return kind

    def _tool_draw(self, call: CallKey, n: int, previous: str) -> str:
        return self._draw("tool", self.profile.tools, _TOOL_ORDER, call, n, previous)

    def _draw(self, family: str, faults: object, order: Sequence[str], call: CallKey, n: int, previous: str) -> str:
        """The fault kind of the ``n``-th request: a transport fault may persist (a storm); otherwise one kind
        drawn by its probability in ``faults`` (scaled down on retries), or ``ok``."""
        draw = rng(self.seed, family, call.rep, call.item, call.step, call.target, n)
        u = draw.random()
        if n > 1 and previous in TRANSPORT and u < self.profile.tools.storm:
            return previous
        scale = 1.0 if n == 1 else self.profile.retry_factor
        u = draw.random()
        for kind in order:
            p = float(getattr(faults, kind)) * scale
            if u < p:
                return kind
            u -= p
        return "ok"

    # ---- models ---------------------------------------------------------------------------------
    def model_fault(self, call: CallKey, n: int, *, structured: bool, offers_tools: bool) -> str:
        """The fault kind of the ``n``-th request of a model call (``structured``: an output schema is asked
        for; ``offers_tools``: the request offers tools the model may call)."""
        kind = "ok"
        for m in range(1, n + 1):
            kind = self._model_draw(call, m, kind)
        draw = rng(self.seed, "model-variant", call.rep, call.item, call.step, call.target, n)
        if kind == "rule_breaking":
            kind = draw.choice(("leak", "rambling", "empty")) if not structured else "off_schema"
        elif kind == "off_schema":
            kind = draw.choice(("off_schema", "prose")) if structured else draw.choice(("leak", "rambling", "empty"))
        elif kind == "bad_tool_args" and not offers_tools:
            kind = "ok"
        return kind

    def _model_draw(self, call: CallKey, n: int, previous: str) -> str:
        return self._draw("model", self.profile.models, _MODEL_ORDER, call, n, previous)

    # ---- platform -------------------------------------------------------------------------------
    def is_kill_trigger(self, call: CallKey, n: int) -> bool:
        """Whether this request is one the kill slot waits for (the first such one fires it): the first request
        of the slot's step at its item or later; failing that (items that never get that far), the first
        request of the first step two items past the slot."""
        slot = self.kill
        if slot is None or n != 1 or call.rep != slot.rep:
            return False
        return ((call.step == slot.step and call.item >= slot.item_from)
                or (call.step == self.first_step and call.item >= slot.item_from + 2))
