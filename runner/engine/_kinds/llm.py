"""The ``llm`` kind: ask the step's model (its fallbacks on dependency failures) and validate the answer.

An invalid answer is retried ``on_invalid.retry`` times with the violation fed back to the model;
then ``on_invalid.then`` decides: ``fallback`` tries the next model of the chain the same way,
``escalate`` or ``fail`` stop the item.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from runner.engine._kinds import PendingAction, StepContext, StepOutcome
from runner.engine._kinds.tool import render_or_fail
from runner.engine._models import LlmLog, ModelParams, ask_models
from runner.engine._registry import LlmReservation
from runner.engine._validate import validate_output
from runner.errors import StepFailed
from runner.providers.base import Message, ModelResponse
from runner.spec import Step

__all__ = ["LlmKind"]


def _parse_model_output(step: Step, text: str) -> Any:
    if step.output_schema is None:
        return {"text": text}
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise StepFailed("validation", f"model output is not JSON: {exc.msg} at {exc.pos}") from exc


class LlmKind:
    """``llm: {model, prompt, ...}``."""

    def pending_action(self, ctx: StepContext) -> PendingAction:
        llm = ctx.step.llm
        assert llm is not None
        return PendingAction(f"llm:{llm.model}", {"prompt": str(render_or_fail(llm.prompt, ctx.context, "prompt"))})

    def run(self, ctx: StepContext, pending: PendingAction) -> StepOutcome:
        step = ctx.step
        llm = step.llm
        assert llm is not None
        prompt = str(pending.args["prompt"])
        system = render_or_fail(llm.system, ctx.context, "system") if llm.system else None
        chain = [llm.model, *llm.fallbacks]
        params = ModelParams(llm.max_tokens, llm.temperature, dict(llm.sandbox or {}), step.output_schema)
        log = LlmLog()
        recorded = [0]  # answered calls, each charged to the ledger and the run in one commit

        def settle(hold: LlmReservation, response: ModelResponse, alias: str) -> Decimal:
            recorded[0] += 1
            return ctx.services.record_model_turn(ctx, hold, response, None, {
                "kind": "llm.model_call", "chosen": alias, "considered": chain, "attempts": attempt,
                "why": f"model {alias!r} answered ({response.finish_reason})", "latency_ms": response.latency_ms,
                "verdicts": [{"check": "usage", "input_tokens": response.usage.input_tokens,
                              "output_tokens": response.usage.output_tokens}]}, 1)

        tries_per_model = 1 + step.on_invalid.retry
        models_to_try = len(chain) if step.on_invalid.then == "fallback" else 1
        attempt = 0
        last_error: StepFailed | None = None
        for first in range(models_to_try):
            feedback: str | None = None
            for _ in range(tries_per_model):
                attempt += 1
                try:
                    response, chosen, fallbacks = ask_models(ctx.toolbox, params, chain[first:],
                                                             _messages(system, prompt, feedback), attempt, log,
                                                             settle=settle)
                except StepFailed as failure:  # what was charged is on the run's counters already
                    failure.details.update(recorded_cost_usd=str(log.cost), recorded_llm_calls=recorded[0])
                    raise
                try:
                    output = _parse_model_output(step, response.text)
                    verdicts = validate_output(step, output, ctx.context)
                except StepFailed as exc:
                    last_error = exc
                    log.verdicts.extend(exc.details.get("verdicts", [{"check": "parse", "ok": False,
                                                                      "message": exc.reason}]))
                    feedback = exc.reason
                    continue
                why = f"model {chosen!r} answered"
                if fallbacks:
                    why += f" after {fallbacks} fallback(s)"
                if attempt > 1:
                    why += f"; valid on attempt {attempt}"
                return StepOutcome(output=output, considered=chain, chosen=chosen, why=why,
                                   verdicts=log.verdicts + log.usage + verdicts, attempts=attempt,
                                   llm_calls=log.calls, cost_usd=log.cost, input_hash_source=prompt,
                                   recorded_cost_usd=log.cost, recorded_llm_calls=recorded[0])
        assert last_error is not None
        then = step.on_invalid.then
        raise StepFailed("validation", f"{last_error.reason} (after {attempt} attempt(s))",
                         action="fail" if then == "fail" else "escalate", attempts=attempt,
                         details={"verdicts": log.verdicts + log.usage, "llm_calls": log.calls,
                                  "cost_usd": str(log.cost), "recorded_cost_usd": str(log.cost),
                                  "recorded_llm_calls": recorded[0]})


def _messages(system: Any, prompt: str, feedback: str | None) -> list[Message]:
    """One attempt's conversation: the system message, the prompt, and why the previous answer was rejected."""
    messages = [Message.system(str(system))] if system else []
    messages.append(Message.user(prompt))
    if feedback:
        messages.append(Message.user(f"Your previous answer was rejected: {feedback}. Answer again."))
    return messages
