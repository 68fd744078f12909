"""How a model's answer ended, as a failure the engine can act on.

Providers return every answer they got, with its normalised ``finish_reason`` (and its usage and
cost, which were spent either way). The engine settles the call's cost first, then asks
:func:`finish_failure` whether the answer is usable:

============== ============ ========================== ==========================================
finish_reason  category     ``details["reason_code"]`` meaning
============== ============ ========================== ==========================================
stop           (none)                                  a complete answer
tool_calls     (none)                                  the model wants tools called
length         validation   ``model_output_truncated`` ``max_tokens`` cut the answer (or its calls)
refusal        validation   ``model_refused``          the model declined; the refusal text is kept
content_filter validation   ``model_content_filtered`` the provider's filter removed the answer
other          validation   ``model_stopped``          only when nothing usable came back
============== ============ ========================== ==========================================

Each escalates (a human must change the prompt, the limit or the model) and is not retryable
(the same request would end the same way).
"""

from __future__ import annotations

from runner.errors import StepFailed
from runner.providers.base import ModelResponse

__all__ = ["REASON_CODES", "finish_failure", "raise_for_finish"]

REASON_CODES = {"length": "model_output_truncated", "refusal": "model_refused",
                "content_filter": "model_content_filtered", "other": "model_stopped"}
_SHOWN = 300


def finish_failure(response: ModelResponse, alias: str, *, max_tokens: int | None = None) -> StepFailed | None:
    """The failure ``response``'s ending amounts to, or None when the answer is usable."""
    finish = response.finish_reason
    raw = response.raw_finish_reason or finish
    if finish == "tool_calls" and not response.tool_calls and not response.text:
        reason = f"model {alias!r} signalled tool calls ({raw!r}) but sent none"
        finish = "other"
    elif finish in ("stop", "tool_calls"):
        return None
    elif finish == "length":
        limit = f"max_tokens={max_tokens}" if max_tokens is not None else "its output token limit"
        reason = (f"model {alias!r} hit {limit} before finishing ({raw!r}); the answer is cut off: "
                  "raise max_tokens or ask for less")
    elif finish == "refusal":
        reason = f"model {alias!r} refused to answer: {(response.refusal or '').strip()[:_SHOWN]}"
    elif finish == "content_filter":
        reason = f"model {alias!r}: the provider's content filter withheld the answer ({raw!r})"
    elif response.text or response.tool_calls:
        return None  # an unusual stop reason with a usable answer
    else:
        reason = f"model {alias!r} stopped ({raw!r}) without an answer"
    return StepFailed("validation", reason, action="escalate",
                      details={"reason_code": REASON_CODES[finish], "finish_reason": finish,
                               "raw_finish_reason": response.raw_finish_reason, "model": alias,
                               "retryable": False})


def raise_for_finish(response: ModelResponse, alias: str, *, max_tokens: int | None = None) -> None:
    """Raise :func:`finish_failure`'s StepFailed, if any."""
    failure = finish_failure(response, alias, max_tokens=max_tokens)
    if failure is not None:
        raise failure
