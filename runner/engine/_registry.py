"""Where an execution finds its tools, models, breakers and secrets — all inside the agent's scope.

A :class:`Toolbox` is built per execution slice from the pinned spec: one egress client limited
to ``scope.egress``, a secret resolver limited to ``scope.secrets``, circuit breakers whose state
is shared by every worker through the database, and the tenant's tool/model definitions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from runner.catalog import BreakerConfig, BreakerState, ModelConfig, ToolDefinition
from runner.errors import StepFailed
from runner.providers.accounting import worst_case
from runner.providers.base import ModelRequest, Provider
from runner.providers.factory import build_provider
from runner.providers.sandbox import SandboxModel
from runner.spec import AgentSpec
from runner.tools.base import Tool
from runner.tools.breaker import CircuitBreaker
from runner.tools.egress import EgressClient, EgressPolicy
from runner.tools.http import HttpTool, TokenCache
from runner.tools.sandbox import BUILTIN_TOOLS
from tenants.budgets.service import check_priced, reconcile, release, reserve_many
from tenants.catalog.repository import CatalogRepository
from tenants.kit.db import Session, unit_of_work
from tenants.kit.errors import BudgetExhausted
from tenants.kit.ids import new_id, sha256_hex, utcnow
from tenants.kit.logging import ValueMask
from tenants.kit.settings import Settings

__all__ = ["AlternateLookup", "DbBreakerStore", "SecretLookup", "Toolbox", "set_secret_lookup"]

T = TypeVar("T")
MILLION = Decimal(1_000_000)
SecretLookup = Callable[[str, str], str]  # (tenant_id, name) -> plaintext
AlternateLookup = Callable[[str, str], str | None]  # (tenant_id, name) -> pending/previous value, if any
_TOKENS = TokenCache()  # OAuth access tokens, per tenant and tool, shared by the process
_SANDBOX = SandboxModel()
_secret_lookup: SecretLookup | None = None
_alternate_lookup: AlternateLookup | None = None


def set_secret_lookup(lookup: SecretLookup | None, alternate: AlternateLookup | None = None) -> None:
    """Install how this process resolves secrets (the keyring backend, at start-up)."""
    global _secret_lookup, _alternate_lookup
    _secret_lookup = lookup
    _alternate_lookup = alternate


class DbBreakerStore:
    """A :class:`~runner.tools.breaker.BreakerStore` in the database, so all workers share a breaker.

    The common case — a closed breaker with no recent failures — is answered from a one-second
    in-process cache and changes nothing, so a healthy dependency costs no database round trip per
    call; any change of state goes through a locked read-modify-write in the database.
    """

    _healthy: ClassVar[dict[tuple[str, str], float]] = {}  # (tenant, host) -> when last seen healthy
    _lock: ClassVar[threading.Lock] = threading.Lock()
    HEALTHY_TTL_S = 1.0

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id

    @staticmethod
    def _host(key: str) -> str:
        return key.split("|", 1)[-1]

    def _known_healthy(self, host: str) -> bool:
        with self._lock:
            seen = self._healthy.get((self.tenant_id, host))
        return seen is not None and time.monotonic() - seen < self.HEALTHY_TTL_S

    def _remember(self, host: str, state: BreakerState) -> None:
        with self._lock:
            if state.state == "closed" and not state.failure_times:
                self._healthy[(self.tenant_id, host)] = time.monotonic()
            else:
                self._healthy.pop((self.tenant_id, host), None)

    def get(self, key: str) -> BreakerState:
        with unit_of_work() as session:
            row = CatalogRepository(session, self.tenant_id).breaker(self._host(key))
        return BreakerState.from_dict(row) if row else BreakerState()

    def put(self, key: str, state: BreakerState) -> None:
        with unit_of_work() as session:
            CatalogRepository(session, self.tenant_id).save_breaker(self._host(key), state.to_dict(), utcnow())
        self._remember(self._host(key), state)

    def update(self, key: str, fn: Callable[[BreakerState], tuple[BreakerState, T]]) -> T:
        host = self._host(key)
        if self._known_healthy(host):
            new, result = fn(BreakerState())
            if new == BreakerState():
                return result
        with unit_of_work() as session:
            repo = CatalogRepository(session, self.tenant_id)
            current_row = repo.breaker(host)
            current = BreakerState.from_dict(current_row) if current_row else BreakerState()
            new, result = fn(current)
            if new == current:
                self._remember(host, current)
                return result
            now = utcnow()
            repo.ensure_breaker(host, BreakerState().to_dict(), now)
            locked = repo.breaker_for_update(host)
            new, result = fn(BreakerState.from_dict(locked) if locked else BreakerState())
            repo.save_breaker(host, new.to_dict(), now)
        self._remember(host, new)
        return result


@dataclass(slots=True)
class LlmReservation:
    """A budget hold for one model call (None id: nothing to hold, no budgets configured)."""

    id: str
    alias: str
    price_in: Decimal
    price_out: Decimal


class Toolbox:
    """The tools, models and secrets one execution may use, resolved lazily and cached per slice."""

    def __init__(self, settings: Settings, tenant_id: str, spec: AgentSpec) -> None:
        self.tenant_id = tenant_id
        self.spec = spec
        self._policy = EgressPolicy(allowed_hosts=list(spec.scope.egress),
                                    allow_loopback=settings.allow_loopback_egress)
        self._client: EgressClient | None = None
        self.breaker = CircuitBreaker(BreakerConfig(), DbBreakerStore(tenant_id))
        self._tools: dict[str, HttpTool] = {}
        self._models: dict[str, Provider] = {}
        self._prices: dict[str, tuple[Decimal, Decimal] | None] = {"sandbox": (Decimal(0), Decimal(0))}
        self.run_id = ""
        self.agent_name = ""
        self.spent = Decimal(0)  # the run's cost so far (for autonomy.max_cost_usd)
        # Every secret value resolved for this run (and OAuth tokens its tools send): masked by value in what
        # the run stores, templates, records or returns (see mask).
        self.mask = ValueMask()
        self._lock = threading.Lock()

    @property
    def client(self) -> EgressClient:
        """The egress client, built on first use (its TLS context is costly; built-in tools never need it)."""
        if self._client is None:
            self._client = EgressClient(self._policy)
        return self._client

    def secret(self, name: str) -> str:
        """A secret's current value, only if the agent declared it in ``scope.secrets``."""
        if name not in self.spec.scope.secrets:
            raise StepFailed("scope", f"secret {name!r} is not in the agent's scope.secrets", action="fail",
                             details={"kind": "secret", "target": name})
        if _secret_lookup is None:
            raise LookupError(f"secret {name!r}: no secret store is configured in this process")
        value = _secret_lookup(self.tenant_id, name)
        self.mask.add(value)
        return value

    def alternate_secret(self, name: str) -> str | None:
        """During a staged rotation: the value to retry once with after a 401 (pending, else previous)."""
        if name not in self.spec.scope.secrets or _alternate_lookup is None:
            return None
        value = _alternate_lookup(self.tenant_id, name)
        self.mask.add(value)
        return value

    def tool(self, name: str) -> Tool:
        """The tool ``name``: a built-in, or the tenant's HTTP tool definition."""
        if name not in self.spec.scope.tools:
            raise StepFailed("scope", f"tool {name!r} is not in the agent's scope.tools", action="fail",
                             details={"kind": "tool", "target": name})
        builtin = BUILTIN_TOOLS.get(name)
        if builtin is not None:
            return builtin
        with self._lock:
            if name not in self._tools:
                with unit_of_work() as session:
                    record = CatalogRepository(session, self.tenant_id).tool(name)
                    definition = dict(record.definition) if record else None
                if definition is None:
                    raise StepFailed("internal", f"tool {name!r} is not defined for this tenant (PUT /v1/tools/{name})",
                                     action="escalate")
                parsed = ToolDefinition.model_validate(definition)
                self._tools[name] = HttpTool(parsed, self.client, self.secret, self.breaker,
                                             f"{self.tenant_id}|{parsed.host}", token_cache=_TOKENS,
                                             alternate_secret=self.alternate_secret,
                                             definition_sha256=sha256_hex(definition), reveal=self.mask.add)
            return self._tools[name]

    def model(self, alias: str) -> Provider:
        """The provider behind a model alias: ``sandbox`` built in, others from ``/v1/models``."""
        with self._lock:
            if alias not in self._models:
                with unit_of_work() as session:
                    record = CatalogRepository(session, self.tenant_id).model(alias)
                    config = dict(record.config) if record else None
                if config is None:
                    if alias != "sandbox":
                        raise StepFailed("dependency", f"model {alias!r} is not configured (PUT /v1/models/{alias})",
                                         action="escalate")
                    self._models[alias] = _SANDBOX
                else:
                    parsed = ModelConfig.model_validate({**config, "alias": alias})
                    self._prices[alias] = ((parsed.price_in_per_mtok, parsed.price_out_per_mtok)
                                           if parsed.price_in_per_mtok is not None
                                           and parsed.price_out_per_mtok is not None else None)
                    host = urlsplit(parsed.base_url or "").hostname or alias
                    self._models[alias] = build_provider(parsed, self.client, self.secret, breaker=self.breaker,
                                                         breaker_key=f"{self.tenant_id}|{host}")
            return self._models[alias]

    def reserve_llm(self, request: ModelRequest) -> LlmReservation:
        """Reserve the call's worst case (tokens from the request's real size, messages and tool schemas,
        plus ``max_tokens``; one LLM call; money) before it is made: fail closed.

        Raises StepFailed(category='budget') when a tenant budget or the agent's ``max_cost_usd`` has
        no room, or the model is unpriced while a money budget applies.
        """
        alias = request.model
        self.model(alias)  # learns the price
        price = self._prices.get(alias)
        held = worst_case(request, price)
        worst_cost = held.cost_usd or Decimal(0)
        cap = self.spec.autonomy.max_cost_usd
        if cap is not None:
            if price is None:
                raise StepFailed("budget", f"model {alias!r} has no price and the agent has max_cost_usd={cap}",
                                 action="fail", details={"stop_run": True})
            if self.spent + worst_cost > cap:
                raise StepFailed("budget", f"autonomy bound max_cost_usd={cap} would be exceeded (spent "
                                 f"{self.spent}, this call may cost up to {worst_cost:.6f})", action="fail",
                                 details={"stop_run": True})
        reservation_id = new_id("rsv")
        amounts: dict[str, Any] = {"tokens": held.tokens, "llm_calls": 1}
        if price is not None:
            amounts["cost_usd"] = worst_cost
        try:
            with unit_of_work() as session:
                check_priced(session, self.tenant_id, self.agent_name, model=alias,
                             price=None if price is None else price[0])
                reserve_many(session, self.tenant_id, self.agent_name, amounts, reservation_id, run_id=self.run_id)
        except BudgetExhausted as exc:
            raise StepFailed("budget", f"budget exhausted: {exc.detail}", action="fail",
                             details={"stop_run": True}) from exc
        return LlmReservation(reservation_id, alias, *(price or (Decimal(0), Decimal(0))))

    def settle_llm(self, reservation: LlmReservation, input_tokens: int | None, output_tokens: int | None,
                   cost: Decimal | None) -> Decimal:
        """Reconcile the hold to the actual use (or release it when the call failed before spending); returns
        what the ledger charged, which is what the run's ``cost_usd`` counts."""
        with unit_of_work() as session:
            if input_tokens is None:
                release(session, self.tenant_id, reservation.id)
                return Decimal(0)
            charged = self.reconcile_llm(session, reservation, input_tokens, output_tokens or 0, cost)
        self.spent += charged
        return charged

    def reconcile_llm(self, session: Session, reservation: LlmReservation, input_tokens: int, output_tokens: int,
                      cost: Decimal | None) -> Decimal:
        """Charge the actual use to the budget ledger in the caller's transaction (the caller commits, and adds
        the result to :attr:`spent` once it has); returns what the ledger charged."""
        actual_cost = cost if cost else (Decimal(input_tokens) * reservation.price_in
                                         + Decimal(output_tokens) * reservation.price_out) / MILLION
        amounts: dict[str, Any] = {"tokens": input_tokens + output_tokens, "llm_calls": 1, "cost_usd": actual_cost}
        settled = reconcile(session, self.tenant_id, reservation.id, amounts)
        return settled.charged.get("cost_usd", actual_cost)
