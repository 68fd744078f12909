"""Token and cost accounting that matches what providers charge.

Before a call, the budget holds the call's worst case: :func:`estimate_input_tokens` (from the
request's real size: every message, tool call and result, every tool's name, description and
argument schema, the output schema) plus ``max_tokens``. After the call, the provider's reported
:class:`~runner.providers.base.Usage` is priced by :meth:`ModelConfig.cost
<runner.providers.remote.ModelConfig.cost>` (cached input at ``price_cached_in_per_mtok`` when set)
and the hold is reconciled to it.

The estimate is deliberately high: one token per :data:`BYTES_PER_TOKEN` UTF-8 bytes (real
tokenizers average 3-4 bytes per token on English and JSON; byte-level BPE never exceeds one token
per byte, and dense digits or CJK text come close to two), plus per-message framing and the
prompt the providers add when tools are offered. Over-reserving briefly holds budget that is
released at settlement; under-reserving could let a call overspend a limit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from runner.providers.base import ModelRequest
from runner.providers.remote import ModelConfig

__all__ = ["BYTES_PER_TOKEN", "Reservation", "estimate_input_tokens", "reservation_for", "worst_case"]

BYTES_PER_TOKEN = 2
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators per message
TOOL_OVERHEAD_TOKENS = 16  # framing per tool definition
TOOLS_PROMPT_TOKENS = 600  # the system prompt a provider adds when tools are offered (Anthropic: ~350)
BASE_TOKENS = 16
_MTOK = Decimal(1_000_000)


def _size(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                                                           default=str)
    return len(text.encode("utf-8"))


def estimate_input_tokens(request: ModelRequest) -> int:
    """A conservative upper estimate of the input tokens ``request`` will be billed for."""
    size = 0
    for message in request.messages:
        size += _size(message.content)
        for call in message.tool_calls:
            size += _size(call.name) + _size(call.arguments_json()) + _size(call.id)
        if message.tool_call_id:
            size += _size(message.tool_call_id)
    tools = list(request.tools)
    for tool in tools:
        size += _size(tool.name) + _size(tool.description) + _size(dict(tool.parameters))
    if request.output_schema is not None:
        size += _size(request.output_schema)
    tokens = math.ceil(size / BYTES_PER_TOKEN) + BASE_TOKENS
    tokens += MESSAGE_OVERHEAD_TOKENS * len(request.messages)
    structured_tool = 1 if request.output_schema is not None else 0  # Anthropic's output tool
    if tools or structured_tool:
        tokens += TOOLS_PROMPT_TOKENS + TOOL_OVERHEAD_TOKENS * (len(tools) + structured_tool)
    return tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    """The worst case of one call: what to hold against the budgets before making it."""

    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None  # None: the model is unpriced

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def worst_case(request: ModelRequest, price: tuple[Decimal, Decimal] | None) -> Reservation:
    """The worst case of ``request`` at ``price`` (USD per million input, output tokens; None: unpriced).

    Input is priced at the full input price (a cache hit is never assumed).
    """
    input_tokens = estimate_input_tokens(request)
    output_tokens = request.max_tokens
    if price is None:
        return Reservation(input_tokens, output_tokens, None)
    return Reservation(input_tokens, output_tokens, (input_tokens * price[0] + output_tokens * price[1]) / _MTOK)


def reservation_for(request: ModelRequest, config: ModelConfig | None = None) -> Reservation:
    """:func:`worst_case` at ``config``'s prices; ``config`` None (the built-in sandbox) costs nothing."""
    if config is None:
        return worst_case(request, (Decimal(0), Decimal(0)))
    if config.price_in_per_mtok is None or config.price_out_per_mtok is None:
        return worst_case(request, None)
    return worst_case(request, (config.price_in_per_mtok, config.price_out_per_mtok))
