"""The budget reservation before a call comes from the request's real size: messages and tool schemas."""

from __future__ import annotations

import json
from decimal import Decimal

from runner.providers.accounting import estimate_input_tokens, reservation_for
from runner.providers.base import Message, ModelRequest, ToolCallRequest, ToolSpec
from runner.providers.remote import ModelConfig

BIG_SCHEMA = {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "d" * 80}
                                               for i in range(40)}}


def _request(**fields: object) -> ModelRequest:
    base: dict[str, object] = {"model": "m", "messages": [Message.user("Check the order.")]}
    return ModelRequest(**{**base, **fields})  # type: ignore[arg-type]


def test_tool_schemas_and_tool_traffic_count_toward_the_estimate() -> None:
    plain = estimate_input_tokens(_request())
    with_tools = estimate_input_tokens(_request(tools=[ToolSpec("crm.lookup", "Look up.", BIG_SCHEMA)]))
    schema_bytes = len(json.dumps(BIG_SCHEMA))
    assert with_tools - plain >= schema_bytes // 4, "the tool schema was not counted"
    call = ToolCallRequest.parse("call_1", "crm.lookup", json.dumps({"q": "x" * 3000}))
    history = _request(messages=[Message.user("go"), Message.assistant("", [call]),
                                 Message.tool_result(call, {"rows": ["y" * 3000]})])
    assert estimate_input_tokens(history) >= 6000 // 4


def test_the_estimate_stays_above_what_dense_text_really_costs() -> None:
    # digits and CJK are the densest text for real tokenizers: about one token per 2-3 bytes
    for text in ["1234567890 " * 500, "注文番号を確認してください" * 200]:
        request = _request(messages=[Message.user(text)])
        assert estimate_input_tokens(request) >= len(text.encode()) // 3


def test_the_reservation_prices_estimated_input_plus_max_tokens() -> None:
    config = ModelConfig(alias="m", provider="sandbox", price_in_per_mtok=Decimal(2), price_out_per_mtok=Decimal(8))
    request = _request(max_tokens=500, output_schema={"type": "object"})
    held = reservation_for(request, config)
    assert held.input_tokens == estimate_input_tokens(request) and held.output_tokens == 500
    assert held.cost_usd == (held.input_tokens * Decimal(2) + 500 * Decimal(8)) / Decimal(1_000_000)
    unpriced = ModelConfig(alias="m", provider="sandbox")
    assert reservation_for(request, unpriced).cost_usd is None
    assert reservation_for(request).cost_usd == 0 and reservation_for(request).tokens == held.tokens
