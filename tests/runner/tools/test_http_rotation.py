"""A static secret in the middle of a staged rotation: a 401 with ``current`` is retried once with the
other value — pending, or the new current when the promotion happened during the failed attempt."""

from __future__ import annotations

from typing import Any

import pytest

from runner.errors import StepFailed
from runner.sandbox_upstream import FaultyUpstream, require_bearer
from runner.tools.base import ToolCall
from runner.tools.breaker import CircuitBreaker, breaker_key
from runner.tools.egress import EgressClient, EgressPolicy
from runner.tools.http import HttpTool
from runner.tools.http_definition import ToolDefinition

OLD, NEW = "rotation-old-value-1", "rotation-new-value-2"


class Vault:
    """current / pending / previous of one secret, like the secrets service keeps them."""

    def __init__(self) -> None:
        self.current, self.pending, self.previous = OLD, NEW, None
        self.promote_after_first_read = False
        self.reads = 0

    def promote(self) -> None:
        self.previous, self.current, self.pending = self.current, self.pending or self.current, None

    def secret(self, name: str) -> str:
        self.reads += 1
        value = self.current
        if self.promote_after_first_read and self.reads == 1:
            self.promote()  # someone promotes while our first request is in flight
        return value

    def alternate(self, name: str) -> str | None:
        return self.pending or self.previous


def _tool(up: FaultyUpstream, vault: Vault, alternate: bool = True) -> HttpTool:
    definition = ToolDefinition.model_validate({
        "name": "crm.get_item", "url": up.url + "/items/1", "auth": {"type": "bearer", "secret": "crm_token"},
        "retry": {"max_attempts": 1}})
    client = EgressClient(EgressPolicy(allowed_hosts=[up.netloc], allow_loopback=True))
    return HttpTool(definition, client, vault.secret, CircuitBreaker(), breaker_key("acme", definition.host),
                    alternate_secret=vault.alternate if alternate else None)


def _call() -> ToolCall:
    return ToolCall(tenant_id="acme", run_id="run-1", item_index=0, step_id="fetch", args={}, idempotency_key=None)


def _sent(up: FaultyUpstream) -> list[Any]:
    return [r.headers.get("authorization") for r in up.requests]


def test_a_401_with_current_is_retried_once_with_pending(upstream: FaultyUpstream) -> None:
    upstream.script("/items/*", [require_bearer({"ok": True})])
    upstream.accept_tokens(NEW)
    tool = _tool(upstream, Vault())
    assert tool.call(_call()) == {"ok": True}
    assert _sent(upstream) == [f"Bearer {OLD}", f"Bearer {NEW}"]
    assert [a.decided for a in tool.attempts] == ["refresh_auth", "ok"]


def test_a_promotion_during_the_failed_attempt_retries_with_the_new_current(upstream: FaultyUpstream) -> None:
    """Pending is gone and previous is the value just refused: the retry must use the new current."""
    upstream.script("/items/*", [require_bearer({"ok": True})])
    upstream.accept_tokens(NEW)
    vault = Vault()
    vault.promote_after_first_read = True
    tool = _tool(upstream, vault)
    assert tool.call(_call()) == {"ok": True}
    assert _sent(upstream) == [f"Bearer {OLD}", f"Bearer {NEW}"]


def test_without_another_value_a_401_escalates_after_one_request(upstream: FaultyUpstream) -> None:
    upstream.script("/items/*", [require_bearer({"ok": True})])
    upstream.accept_tokens("something-else-entirely")
    vault = Vault()
    vault.pending = None
    tool = _tool(upstream, vault)
    with pytest.raises(StepFailed) as caught:
        tool.call(_call())
    assert caught.value.category == "auth" and caught.value.action == "escalate"
    assert "crm_token" in caught.value.reason and OLD not in str(caught.value.details)
    assert _sent(upstream) == [f"Bearer {OLD}"]
