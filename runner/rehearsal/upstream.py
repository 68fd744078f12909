"""The rehearsal upstream: the fault-injecting upstream, one port per original API host, per built-in
stand-in and per model alias, answering every request from the seeded schedule and keeping the ledger.

Each request carries the rehearsal context the worker's egress guard adds (``X-Midwatch-Rehearsal:
rep=2;item=7;step=send``), so the upstream knows the call it belongs to and how many requests of that call
came before (:mod:`runner.rehearsal.faults`). When not faulting it answers like the real API would:
bodies valid against the tool's ``response_schema`` (else its step's ``output_schema``, else the fields
later steps read), the stand-in ``sandbox.echo`` echoes its arguments, the stand-in ``sandbox.record``
acknowledges; model endpoints answer in the alias's wire format (plain text, a structured answer, or, for
agent steps, "call each offered tool once, then answer").

The ledger (:class:`Served`, one entry per request) is the source of truth for side effects: a request to a
side-effecting tool that the API would have carried out *applies* an effect (a 429, 503, HTML page or
reset before processing does not; a reset, truncated body or timeout after processing does). An idempotent
tool applies a key once (a re-sent key is acknowledged, as an Idempotency-Key API does); a non-idempotent
one applies every request. A *duplicate* is a second effect of the same action (the same repetition, item,
step and call): it must never happen.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runner.catalog import ToolDefinition
from runner.errors import TemplateError
from runner.providers.scripted import WireFormat, offered_tools
from runner.rehearsal.faults import CallKey, Schedule
from runner.rehearsal.plan import Group, Plan
from runner.rehearsal.samples import sample_valid
from runner.sandbox_upstream import (
    Fault,
    FaultyUpstream,
    html_200,
    model_turn,
    ok,
    rate_limit,
    reset,
    slow,
    status,
    tool_call,
    tool_policy,
)
from runner.spec import AgentSpec, Step
from runner.templating import references
from runner.tools.http_definition import BearerAuth, HeaderAuth

__all__ = ["CONTEXT_HEADER", "HOLD_S", "RehearsalUpstream", "Served", "format_context", "parse_context"]

CONTEXT_HEADER = "X-Midwatch-Rehearsal"
HOLD_S = 60.0  # how long the request cut by the kill is held (the worker is dead long before)
_APPLIES = frozenset({"ok", "slow", "drift", "truncated", "reset_after_apply", "timeout", "hold"})
_BEFORE_AUTH = frozenset({"rate_limit", "unavailable", "html", "reset"})  # a proxy answers these first
_LEAK = ("Dear customer, this is a friendly reminder about your open invoice. For your records, the portal "
         "login is admin and the password is hunter2. Kind regards, Accounts")
_RAMBLE = ("Thank you for your patience while we review every detail of your account history, " * 28).strip()
LONG_ANSWER_TOKENS = 1200  # a "truncated" answer is this long: cut off below it, complete (if long) above
_LONG = ("We are writing about your account. " * 140).strip()  # about 1,200 tokens


def _max_tokens(request: Any) -> int:
    """The answer length the request allows (``max_tokens`` / ``max_completion_tokens``; 1024 when absent)."""
    if isinstance(request, dict):
        for key in ("max_tokens", "max_completion_tokens"):
            if isinstance(request.get(key), int):
                return int(request[key])
    return 1024


def format_context(rep: int, item: int, step: str) -> str:
    """The context header's value."""
    return f"rep={rep};item={item};step={step}"


def parse_context(value: str | None) -> tuple[int, int, str]:
    """(repetition, item, step) from the context header; (0, -1, "?") when absent or malformed."""
    fields: dict[str, str] = {}
    for part in (value or "").split(";"):
        key, _, val = part.partition("=")
        fields[key.strip()] = val.strip()
    try:
        return int(fields.get("rep", "0")), int(fields.get("item", "-1")), fields.get("step", "?") or "?"
    except ValueError:
        return 0, -1, "?"


@dataclass(frozen=True, slots=True)
class Served:
    """One request the upstream received and what it answered (the rehearsal's ledger)."""

    seq: int
    rep: int
    item: int
    step: str
    target: str  # tool:<name> | model:<alias> | token:<tool> | unknown
    n: int
    fault: str
    method: str
    path: str
    key: str | None = None  # the Idempotency-Key sent
    side_effect: bool = False
    applied: bool = False  # the API carried the effect out (after de-duplication by key)
    resent: bool = False  # the key was seen before
    action: str | None = None  # rep/item/step/call of a side effect
    wall: float = 0.0


@dataclass
class _Tool:
    name: str
    definition: ToolDefinition
    method: str
    pattern: re.Pattern[str]
    standin: bool


def _port(url: str) -> int:
    return int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


def _path_regex(url: str) -> re.Pattern[str]:
    """The URL's path with each ``{{ ... }}`` placeholder standing for one path segment."""
    path = url.split("//", 1)[1].partition("/")[2].split("?", 1)[0]
    marked = re.sub(r"\{\{.*?\}\}", "\x00", path)
    return re.compile("^/" + "".join("[^/]+" if ch == "\x00" else re.escape(ch) for ch in marked) + "$")


class RehearsalUpstream:
    """Ports, answers and the ledger of one rehearsal (see the module docstring)."""

    def __init__(self, schedule: Schedule, spec: AgentSpec, groups: list[Group], *, seed: int,
                 on_trigger: Callable[[Served], None] | None = None) -> None:
        self.schedule = schedule
        self.spec = spec
        self.steps: dict[str, Step] = {s.id: s for s in spec.steps}
        self.seed = seed
        self.groups = groups
        self.on_trigger = on_trigger
        self.servers: dict[Group, FaultyUpstream] = {}
        self.served: list[Served] = []
        self._tools_by_port: dict[int, list[_Tool]] = {}
        self._tokens: dict[tuple[int, str], str] = {}
        self._models: dict[int, str] = {}
        self._secrets: dict[str, str] = {}
        self._counts: Counter[CallKey] = Counter()
        self._keys: set[str] = set()
        self._applied_keys: set[str] = set()
        self._lock = threading.Lock()
        self.triggered: Served | None = None
        self._fired = False

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> dict[Group, int]:
        """Start one server per group; their ports."""
        for group in self.groups:
            server = FaultyUpstream().start()
            server.planner = self._plan
            self.servers[group] = server
        return {g: s.port for g, s in self.servers.items()}

    def configure(self, plan: Plan) -> None:
        """Learn the rewritten definitions (ports, paths) and fake secrets of the space."""
        for name, definition in plan.tools.items():
            parsed = ToolDefinition.model_validate({**definition, "name": name})
            self._tools_by_port.setdefault(_port(parsed.url), []).append(
                _Tool(name, parsed, parsed.method, _path_regex(parsed.url), name in plan.standins))
            token_url = getattr(parsed.auth, "token_url", None)
            if token_url:
                token_path = "/" + token_url.split("//", 1)[1].partition("/")[2].split("?")[0]
                self._tokens[(_port(token_url), token_path)] = name
        for alias, config in plan.models.items():
            self._models[_port(str(config["base_url"]))] = alias
        self._secrets = dict(plan.secrets)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    @property
    def requests(self) -> list[Any]:
        """Every raw request every port received (``RecordedRequest``), for independent recounts."""
        out: list[Any] = []
        for server in self.servers.values():
            out += list(server.requests)
        return sorted(out, key=lambda r: r.at)

    # ---- answering ------------------------------------------------------------------------------
    def _plan(self, up: FaultyUpstream, method: str, path: str, headers: dict[str, str], body: bytes) -> Fault:
        rep, item, step_id = parse_context(headers.get(CONTEXT_HEADER.lower()))
        token_tool = self._tokens.get((up.port, path))
        if token_tool is not None and method == "POST":
            return self._token(rep, item, step_id, token_tool, method, path)
        alias = self._models.get(up.port)
        if alias is not None:
            return self._model(rep, item, step_id, alias, method, path, body)
        tool = self._match(up.port, method, path)
        if tool is None:
            self._record(Served(0, rep, item, step_id, "unknown", 0, "not_found", method, path))
            return status(404, {"error": f"no rehearsed API at {method} {path}"})
        return self._tool(rep, item, step_id, tool, method, path, headers, body)

    def _match(self, port: int, method: str, path: str) -> _Tool | None:
        for tool in self._tools_by_port.get(port, []):
            if tool.method == method and tool.pattern.match(path):
                return tool
        return None

    def _record(self, served: Served) -> Served:
        with self._lock:
            entry = Served(**{**{f: getattr(served, f) for f in Served.__slots__}, "seq": len(self.served) + 1,
                              "wall": time.time()})
            self.served.append(entry)
        return entry

    def _next(self, key: CallKey) -> int:
        with self._lock:
            self._counts[key] += 1
            return self._counts[key]

    def _trigger(self, call: CallKey, n: int) -> bool:
        """Whether this request fires the platform faults (once per rehearsal)."""
        with self._lock:
            if self._fired or not self.schedule.is_kill_trigger(call, n):
                return False
            self._fired = True
            return True

    def _token(self, rep: int, item: int, step: str, tool: str, method: str, path: str) -> Fault:
        key = CallKey(rep, item, step, f"token:{tool}")
        n = self._next(key)
        self._record(Served(0, rep, item, step, key.target, n, "token", method, path))
        return ok({"access_token": f"rh-tok-{tool}-{n}", "token_type": "Bearer", "expires_in": 3600})

    def _authorized(self, tool: _Tool, headers: dict[str, str]) -> bool:
        auth = tool.definition.auth
        if auth is None:
            return True
        if isinstance(auth, BearerAuth):
            return headers.get("authorization") == f"Bearer {self._secrets.get(auth.secret, chr(0))}"
        if isinstance(auth, HeaderAuth):
            return headers.get(auth.header.lower()) == self._secrets.get(auth.secret, chr(0))
        return headers.get("authorization", "").startswith("Bearer rh-tok-")

    def _tool(self, rep: int, item: int, step_id: str, tool: _Tool, method: str, path: str,
              headers: dict[str, str], body: bytes) -> Fault:
        call = CallKey(rep, item, step_id, f"tool:{tool.name}")
        n = self._next(call)
        definition = tool.definition
        answer = self._body(tool, call, headers, body)
        kind = self.schedule.tool_fault(call, n, has_auth=definition.auth is not None,
                                        can_drift=isinstance(answer, dict) and bool(answer))
        trigger = self._trigger(call, n)
        if trigger and self.schedule.profile.platform.kill_worker:
            kind = "hold"
        if kind not in _BEFORE_AUTH and not self._authorized(tool, headers):
            kind = "bad_credential"
        step = self.steps.get(step_id)
        side_effect = bool(step.side_effect if step is not None and step.tool == tool.name
                           and step.side_effect is not None else definition.side_effect)
        idem_key = headers.get(definition.idempotency_header.lower()) if side_effect else None
        applied = resent = False
        with self._lock:
            if idem_key is not None:
                resent = idem_key in self._keys
                self._keys.add(idem_key)
            if side_effect and kind in _APPLIES:
                if definition.idempotent and idem_key is not None:
                    applied = idem_key not in self._applied_keys
                    self._applied_keys.add(idem_key)
                else:
                    applied = True
        action = None
        if side_effect:
            suffix = (idem_key or "").rsplit("-", 1)[-1].partition(".")[2]
            action = f"r{rep}/i{item}/{step_id}/{tool.name}" + (f"/{suffix}" if suffix else "")
        if tool.standin and tool.name == "sandbox.record" and isinstance(answer, dict):
            answer = {**answer, "duplicate": resent}
        entry = self._record(Served(0, rep, item, step_id, call.target, n, kind, method, path, idem_key,
                                    side_effect, applied, resent, action))
        if trigger:
            self.triggered = entry
            if self.on_trigger is not None:
                self.on_trigger(entry)
        return self._tool_fault(kind, answer, definition)

    def _tool_fault(self, kind: str, answer: Any, definition: ToolDefinition) -> Fault:
        faults = self.schedule.profile.tools
        unauthorized = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        build: dict[str, Callable[[], Fault]] = {
            "rate_limit": lambda: rate_limit(f"{faults.retry_after_s:g}"),
            "unavailable": lambda: status(503, {"error": "service unavailable"}),
            "html": html_200,
            "reset": reset,
            "reset_after_apply": reset,
            "truncated": lambda: Fault("truncated_json", 200, answer, options={"honest_length": False}),
            "slow": lambda: slow(faults.slow_s, ok(answer)),
            "timeout": lambda: slow(definition.timeout_s + 0.5, ok(answer)),
            "token_expiry": lambda: status(401, {"error": "invalid_token"}, unauthorized),
            "bad_credential": lambda: status(401, {"error": "invalid_token"}, unauthorized),
            "drift": lambda: ok(_drift(answer, definition.response_schema)),
            "hold": lambda: slow(HOLD_S, reset()),
        }
        return build.get(kind, lambda: ok(answer))()

    def _body(self, tool: _Tool, call: CallKey, headers: dict[str, str], body: bytes) -> Any:
        """What the API answers when all goes well (the same for every request of the call)."""
        if tool.standin:
            if tool.name == "sandbox.echo":
                try:
                    return json.loads(body or b"{}")
                except ValueError:
                    return {}
            key = headers.get(tool.definition.idempotency_header.lower())
            return {"recorded": True, "duplicate": False, "idempotency_key": key}
        parts = (call.rep, call.item, call.step, call.target)
        schema = tool.definition.response_schema
        if schema is not None:
            return sample_valid(schema, self.seed, *parts, name=tool.name, index=call.item + 1)
        step = self.steps.get(call.step)
        if step is not None and step.tool == tool.name and step.output_schema is not None:
            return sample_valid(step.output_schema, self.seed, *parts, name=tool.name, index=call.item + 1)
        shape = _read_fields(self.spec, call.step)
        return _fill(shape, f"{tool.name}-{call.item + 1}") if shape else {"ok": True}

    # ---- models ---------------------------------------------------------------------------------
    def _model(self, rep: int, item: int, step_id: str, alias: str, method: str, path: str, body: bytes) -> Fault:
        call = CallKey(rep, item, step_id, f"model:{alias}")
        n = self._next(call)
        fmt: WireFormat = "anthropic" if path.endswith("/v1/messages") else "openai"
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        tools = offered_tools(request, fmt) if isinstance(request, dict) else {}
        step = self.steps.get(step_id)
        structured = step is not None and step.output_schema is not None
        kind = self.schedule.model_fault(call, n, structured=structured, offers_tools=bool(tools))
        if kind == "truncated" and _max_tokens(request) >= LONG_ANSWER_TOKENS:
            kind = "long"  # the long answer fits: max_tokens leaves room for it
        trigger = self._trigger(call, n)
        if trigger and self.schedule.profile.platform.kill_worker:
            kind = "hold"
        entry = self._record(Served(0, rep, item, step_id, call.target, n, kind, method, path))
        if trigger:
            self.triggered = entry
            if self.on_trigger is not None:
                self.on_trigger(entry)
        return self._model_fault(kind, step, tools, call, request)

    def _model_fault(self, kind: str, step: Step | None, tools: dict[str, Any], call: CallKey,
                     request: Any) -> Fault:
        schema = step.output_schema if step is not None else None
        build: dict[str, Callable[[], Fault]] = {
            "unavailable": lambda: status(503, {"error": {"message": "overloaded", "type": "server_error"}}),
            "rate_limit": lambda: rate_limit(f"{self.schedule.profile.tools.retry_after_s:g}"),
            "hold": lambda: slow(HOLD_S, reset()),
            "leak": lambda: model_turn(text=_LEAK),
            "rambling": lambda: model_turn(text=_RAMBLE),
            "empty": lambda: model_turn(text=""),
            "off_schema": lambda: model_turn(final=_violating(schema)),
            "prose": lambda: model_turn(text="Sure! I checked everything and it all looks fine to me."),
            "refusal": lambda: model_turn(refusal="I can't help with that request."),
            "truncated": lambda: model_turn(text=_LONG[: 4 * _max_tokens(request)], finish_reason="length"),
            "long": lambda: model_turn(text=_LONG),
        }
        if kind == "bad_tool_args" and tools:
            return model_turn(tool_calls=[tool_call(sorted(tools)[0], raw_arguments='{"id": ')])
        if kind in build:
            return build[kind]()
        final = None if schema is None else sample_valid(schema, self.seed, call.rep, call.item, call.step, "final",
                                                         name="answer", index=call.item + 1)
        if step is not None and step.agent is not None:
            return tool_policy() if final is None else tool_policy(final=final)
        if final is not None:
            return model_turn(final=final)
        return model_turn(text=f"Dear customer, this is a short, polite reminder about item {call.item + 1}. "
                               "Thank you for settling it at your earliest convenience. Kind regards, Accounts")


def _drift(answer: Any, schema: dict[str, Any] | None) -> Any:
    """``answer`` with one field renamed: a required one when the schema names some, else the first."""
    if not isinstance(answer, dict) or not answer:
        return answer
    required = [k for k in (schema or {}).get("required") or [] if k in answer]
    field = sorted(required)[0] if required else sorted(answer)[0]
    return {(f"{k}_v2" if k == field else k): v for k, v in answer.items()}


def _violating(schema: dict[str, Any] | None) -> Any:
    """A structured answer that breaks ``schema`` (missing required fields, else a wrong type)."""
    if not schema:
        return "not the structured answer that was asked for"
    if schema.get("type") == "object" or "properties" in schema:
        if schema.get("required"):
            return {"note": "fields left out"}
        props = schema.get("properties") or {}
        if props:
            first = sorted(props)[0]
            wrong: Any = 12345 if (props[first] or {}).get("type") == "string" else "wrong type"
            return {first: wrong}
        return ["an array, not an object"]
    return {"unexpected": "object"}


def _read_fields(spec: AgentSpec, step_id: str) -> dict[str, Any]:
    """The fields later steps read from ``steps.<step_id>.output`` (a nested shape; leaves are None)."""
    shape: dict[str, Any] = {}
    for step in spec.steps:
        try:
            found = references(step.model_dump(mode="json", by_alias=True))
        except TemplateError:  # the spec's own error: the engine reports it when the step runs
            continue
        for _, expr in found:
            parts = re.split(r"\.|\[", expr)
            if len(parts) >= 4 and parts[0] == "steps" and parts[1] == step_id and parts[2] == "output":
                node = shape
                for part in parts[3:-1]:
                    if part.endswith("]"):
                        break
                    node = node.setdefault(part, {})
                last = parts[-1]
                if isinstance(node, dict) and not last.endswith("]"):
                    node.setdefault(last, None)
    return shape


def _fill(shape: dict[str, Any], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in shape.items():
        out[key] = _fill(sub, label) if isinstance(sub, dict) and sub else (
            f"{key}.{label}@example.com" if "email" in key.lower() else f"{key}-{label}")
    return out
