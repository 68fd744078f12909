"""Tenant HTTP tools (connectors): a declarative :class:`~runner.tools.http_definition.ToolDefinition` run by
:class:`HttpTool`.

One call of :meth:`HttpTool.call` goes:

1. render the request from the step's args: URL placeholders (``{{ args.id }}``) are
   percent-encoded as one path segment each (``/`` and ``..`` cannot escape the path); the
   scheme and host are literal, so the host a tool reaches is known when it is declared;
2. per attempt: ask the circuit breaker, add auth (bearer / header / OAuth2 client
   credentials) and, for side effects, the idempotency key; send through the
   :class:`~runner.tools.egress.EgressClient`; validate status, content type and schema;
3. retry per :mod:`runner.tools.retry`: a non-idempotent side effect is never re-sent once it
   may have reached the server; a 401 on an OAuth tool refreshes the token once; a second
   401 (or any 401/403 on a static secret) is an ``auth`` failure that escalates, naming the
   secret and never its value; long backoffs raise :class:`~runner.tools.retry.RetryLater`.

Every attempt is recorded (:attr:`~runner.tools.base.ToolResult.attempts`, ``StepFailed.details["attempts"]``,
:attr:`HttpTool.attempts` for the calling thread) for the decision log.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from runner.deadline import bounded
from runner.errors import StepFailed
from runner.tools.base import ToolCall, ToolResult
from runner.tools.breaker import CircuitBreaker
from runner.tools.egress import EgressBlocked, EgressClient
from runner.tools.guard import GuardedEndpoint
from runner.tools.http_definition import BearerAuth, HeaderAuth, OAuth2ClientCredentials, ToolDefinition, render_request
from runner.tools.retry import RELEASE_THRESHOLD_S, RetryDecision
from runner.tools.validate import validate_response
from tenants.kit.errors import NotFound
from tenants.kit.ids import sha256_hex
from tenants.kit.logging import register_secret

__all__ = ["HttpTool", "SecretResolver", "TokenCache"]

SecretResolver = Callable[[str], str]

_TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["access_token"],
    "properties": {"access_token": {"type": "string", "minLength": 1},
                   "expires_in": {"type": ["integer", "number", "string"]}},
}
_TOKEN_SKEW_S = 30.0

class TokenCache:
    """Thread-safe OAuth access tokens by key (``tenant/tool``), with their expiry (epoch seconds)."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> str | None:
        """The cached token for ``key`` unless it has expired."""
        with self._lock:
            entry = self._tokens.get(key)
        return entry[0] if entry is not None and now < entry[1] else None

    def put(self, key: str, token: str, expires_at: float) -> None:
        """Cache ``token`` for ``key`` until ``expires_at``."""
        with self._lock:
            self._tokens[key] = (token, expires_at)

    def invalidate(self, key: str, token: str | None = None) -> None:
        """Forget the token for ``key`` (only if it is still ``token``, when given)."""
        with self._lock:
            entry = self._tokens.get(key)
            if entry is not None and (token is None or entry[0] == token):
                del self._tokens[key]


@dataclass(slots=True)
class _CallState:
    token: str | None = None
    force_refresh: bool = False
    refreshed: bool = False
    secret_override: str | None = None  # the pending/previous value after a 401 during rotation
    secret_sent: str | None = None  # the static secret value the latest attempt sent


class HttpTool:
    """Runs a :class:`ToolDefinition` (implements the ``runner.tools.base.Tool`` protocol).

    ``secrets(name)`` returns a secret's value (raising LookupError when it is missing);
    ``breaker_key`` is usually ``breaker_key(tenant_id, definition.host)``. ``sleep``, ``clock``
    (epoch seconds) and ``rng`` are injectable for tests.
    """

    def __init__(self, definition: ToolDefinition, client: EgressClient, secrets: SecretResolver,
                 breaker: CircuitBreaker, breaker_key: str, *, token_cache: TokenCache | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random,
                 release_threshold_s: float = RELEASE_THRESHOLD_S,
                 alternate_secret: Callable[[str], str | None] | None = None,
                 definition_sha256: str | None = None, reveal: Callable[[str], None] | None = None) -> None:
        self.definition = definition
        # The hash of the definition as stored (the toolbox passes it); what an approval binds, not the
        # version number, which restarts at 1 after a delete and re-create.
        self.definition_sha256 = definition_sha256 or sha256_hex(definition.model_dump(mode="json"))
        self._reveal = reveal  # told every credential value this tool sends (the run masks them by value)
        # During a staged rotation, a 401 with the current value is retried once with the
        # pending (or, within its grace, previous) value this returns.
        self._alternate_secret = alternate_secret
        self.name = definition.name
        self.description = definition.description
        self.args_schema = definition.args_schema
        self.side_effect = definition.side_effect
        self.idempotent = definition.idempotent
        self._secrets = secrets
        self._breaker_key = breaker_key
        self._tokens = token_cache if token_cache is not None else TokenCache()
        self._clock = clock
        self._endpoint = GuardedEndpoint(client, breaker, breaker_key, sleep=sleep, clock=clock, rng=rng,
                                         release_threshold_s=release_threshold_s)

    @property
    def attempts(self) -> list[RetryDecision]:
        """The attempts of this thread's latest call (also when it raised)."""
        return self._endpoint.attempts

    def call(self, call: ToolCall) -> Any:
        """Run the tool and return its validated response (see the module docstring)."""
        return self.call_detailed(call).value

    def binding(self, args: Any) -> dict[str, Any]:
        """The exact request a call with ``args`` sends, as an approval binds it and an approver reads it:
        the stored definition's hash, method, URL (placeholders and query filled in), the headers other than
        credentials, which credential is sent (by secret name and scheme, never its value), the idempotency
        header's name, and the body's SHA-256. Any change between the approval and the call changes it."""
        d = self.definition
        url, headers, body = render_request(d, args)
        auth: dict[str, Any] | None = None
        if isinstance(d.auth, BearerAuth):
            auth = {"type": "bearer", "secret_names": [d.auth.secret]}
        elif isinstance(d.auth, HeaderAuth):
            auth = {"type": "header", "header": d.auth.header, "secret_names": [d.auth.secret]}
        elif isinstance(d.auth, OAuth2ClientCredentials):
            auth = {"type": d.auth.type, "token_url": d.auth.token_url, "scope": d.auth.scope,
                    "secret_names": [d.auth.client_id_secret, d.auth.client_secret_secret]}
        return {"tool": d.name, "definition_sha256": self.definition_sha256, "method": d.method, "url": url,
                "headers": dict(sorted(headers.items())), "auth": auth,
                "idempotency_header": d.idempotency_header if d.side_effect else None,
                "body_sha256": None if body is None else sha256_hex(body)}

    def call_detailed(self, call: ToolCall, *, start_attempt: int = 1) -> ToolResult:
        """Like :meth:`call`, also returning the attempts. ``start_attempt`` resumes after RetryLater."""
        d = self.definition
        if d.side_effect and not call.idempotency_key:
            raise StepFailed("internal", f"{d.name} is a side effect but got no idempotency key")
        url, headers, body = render_request(d, call.args)
        if d.side_effect and call.idempotency_key:
            headers[d.idempotency_header] = call.idempotency_key
        state = _CallState()
        value, log = self._endpoint.retrying(
            lambda _number: self._attempt(call, state, url, headers, body), policy=d.retry, what=d.name,
            unsafe=d.side_effect and not d.idempotent, refresh_auth=lambda exc: self._refresh(call, state, exc),
            start_attempt=start_attempt)
        return ToolResult(value, log)

    # -- one attempt ----------------------------------------------------------------------------

    def _attempt(self, call: ToolCall, state: _CallState, url: str, headers: dict[str, str],
                 body: Any) -> Any:
        d = self.definition
        try:
            return self._endpoint.send(d.name, d.method, url, headers={**headers, **self._auth_headers(call, state)},
                                       json=body, timeout_s=d.timeout_s, content_type=d.expect_content_type,
                                       schema=d.response_schema)
        except StepFailed as exc:
            if exc.category == "auth":
                raise self._auth_failure(exc, state) from exc
            raise

    def _auth_failure(self, exc: StepFailed, state: _CallState) -> StepFailed:
        d = self.definition
        status = exc.details.get("status")
        where = exc.details.get("url", d.host)
        auth = d.auth
        if isinstance(auth, OAuth2ClientCredentials) and status == 401 and not state.refreshed:
            return StepFailed("auth", f"{d.name}: {where} answered 401 to the cached OAuth token",
                              details=exc.details)
        if isinstance(auth, OAuth2ClientCredentials):
            what = ("401 Unauthorized even after refreshing the OAuth token" if status == 401
                    else f"{status} Forbidden to the OAuth client")
            secret = auth.client_secret_secret
        elif auth is not None:
            what = f"{status} {'Unauthorized' if status == 401 else 'Forbidden'}"
            secret = auth.secret
        else:
            return StepFailed("auth", f"{d.name}: {where} answered {status}; the tool has no auth configured",
                              action="escalate", details=exc.details)
        reason = f"{d.name}: {where} answered {what}; check the credential (secret '{secret}')"
        return StepFailed("auth", reason, action="escalate", details={**exc.details, "secret": secret})

    def _refresh(self, call: ToolCall, state: _CallState, exc: StepFailed) -> bool:
        """After a 401: an OAuth tool drops its token so the next attempt fetches a new one; a static
        secret in the middle of a staged rotation is retried once with its pending/previous value."""
        auth = self.definition.auth
        if exc.details.get("status") != 401:
            return False
        if isinstance(auth, BearerAuth | HeaderAuth):
            alternate = self._alternate_secret(auth.secret) if self._alternate_secret is not None else None
            if not alternate or alternate == state.secret_sent:
                # The rotation was promoted between our attempt and this lookup: pending is gone and
                # previous is the value we just sent, but current now holds the new one.
                fresh = self._current_or_none(auth.secret)
                alternate = fresh if fresh != state.secret_sent else None
            if not alternate:
                return False
            register_secret([alternate])
            state.secret_override = alternate
            return True
        if not isinstance(auth, OAuth2ClientCredentials):
            return False
        self._tokens.invalidate(self._token_key(call), state.token)
        state.force_refresh = True
        return True

    # -- credentials ----------------------------------------------------------------------------

    def _secret(self, name: str) -> str:
        try:
            value = self._secrets(name)
        except LookupError:
            raise StepFailed("auth", f"{self.name}: secret '{name}' is not available", action="escalate",
                             details={"secret": name}) from None
        register_secret([value])
        return value

    def _current_or_none(self, name: str) -> str | None:
        try:
            value = self._secrets(name)
        except (LookupError, NotFound):  # deleted meanwhile: no retry
            return None
        register_secret([value])
        return value

    def _auth_headers(self, call: ToolCall, state: _CallState) -> dict[str, str]:
        auth = self.definition.auth
        if auth is None:
            return {}
        if isinstance(auth, BearerAuth | HeaderAuth):
            state.secret_sent = state.secret_override or self._secret(auth.secret)
            if self._reveal is not None:
                self._reveal(state.secret_sent)
            if isinstance(auth, BearerAuth):
                return {"Authorization": f"Bearer {state.secret_sent}"}
            return {auth.header: state.secret_sent}
        key = self._token_key(call)
        token = None if state.force_refresh else self._tokens.get(key, self._clock())
        if token is None:
            token, expires_in = self._fetch_token(auth)
            self._tokens.put(key, token, self._clock() + max(0.0, expires_in - _TOKEN_SKEW_S))
            if state.force_refresh:
                state.force_refresh = False
                state.refreshed = True
        state.token = token
        if self._reveal is not None:
            self._reveal(token)
        return {"Authorization": f"Bearer {token}"}

    def _token_key(self, call: ToolCall) -> str:
        return f"{call.tenant_id}/{self.name}"

    def _fetch_token(self, auth: OAuth2ClientCredentials) -> tuple[str, float]:
        client_id = self._secret(auth.client_id_secret)
        client_secret = self._secret(auth.client_secret_secret)
        form: dict[str, str] = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if auth.client_auth == "basic":
            pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form.update(client_id=client_id, client_secret=client_secret)
        try:
            response = self._endpoint.client.request("POST", auth.token_url, headers=headers,
                                                     content=urlencode(form).encode(),
                                                     timeout_s=bounded(self.definition.timeout_s))
            data = validate_response(response, "application/json", _TOKEN_SCHEMA)
        except EgressBlocked:
            raise
        except StepFailed as exc:
            if exc.category == "auth" or exc.details.get("status") == 400:
                raise StepFailed(
                    "auth", f"{self.name}: the OAuth token endpoint rejected the client credentials "
                    f"({exc.details.get('status')}) (secret '{auth.client_secret_secret}')",
                    action="escalate", details={**exc.details, "secret": auth.client_secret_secret}) from None
            raise StepFailed(exc.category, f"{self.name}: OAuth token request failed: {exc.reason}",
                             details=exc.details) from None
        token = str(data["access_token"])
        register_secret([token])
        try:
            expires_in = float(data.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        return token, expires_in
