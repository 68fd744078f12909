"""Agent spec v1: the wire models, parsing that reports every error at once, lint and projection.

The front door is `parse_spec` (never raises on bad input) or `load_spec` (raises SpecInvalid).
Checks run in two layers: pydantic validates each field (types, bounds, CEL syntax, JSON Schema
validity), and `_cross_check` validates what spans fields (tool scope, step order of template
references, unique ids). Both run on every parse so a spec with three independent mistakes
reports three issues. `AgentSpec.model_validate` alone also runs the cross checks, but reports
them as a single root error; use `parse_spec` for precise paths.

Why over 500 lines: the spec is one pydantic model tree whose field validators, cross checks, lint and
projection all read the same models; it is the public contract of a stored version, read top to bottom.
"""

from __future__ import annotations

import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from runner.errors import SchemaInvalid, SpecInvalid, SpecIssue, TemplateError
from runner.jsonschemas import check_schema
from runner.rules import check_rule_bounds, check_rule_syntax
from runner.templating import references, root_of
from tenants.kit.addresses import parse_ip_host
from tenants.secrets.names import NAME_PATTERN as SECRET_NAME_PATTERN

__all__ = [
    "DEFAULT_STEP_SUCCESS",
    "AgentLoop",
    "AgentSpec",
    "ApprovalRule",
    "Autonomy",
    "InputSpec",
    "LintWarning",
    "LlmCall",
    "Objective",
    "OnInvalid",
    "ParseResult",
    "PassK",
    "ReliabilityProjection",
    "Scope",
    "Slo",
    "SpecIssue",
    "Step",
    "cached_version_spec",
    "lint",
    "load_spec",
    "load_version_spec",
    "parse_spec",
    "project_reliability",
]

DEFAULT_STEP_SUCCESS = 0.95
RECOMMENDED_MAX_STEPS = 5
MAX_SPEC_BYTES = 512 * 1024
MAX_SPEC_NODES = 100_000  # bounds YAML alias expansion ("billion laughs") before validation

_SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_STEP_ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_TOOL_RE = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EGRESS_RE = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*(?::(\d{{1,5}}))?$")
_SKIP_CROSS_CHECK = "midwatch.spec.skip_cross_check"
_STEP_KINDS = ("tool", "llm", "agent")


# ---------------------------------------------------------------------------------------------
# Field validators


def _custom(code: str, message: str) -> PydanticCustomError:
    # The message goes through the context so braces in it (CEL errors) are not templated.
    return PydanticCustomError(code, "{msg}", {"msg": message})


def _matching(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.match(value):
            raise _custom("pattern", f"{what} {value!r} must match {regex.pattern}")
        return value

    return AfterValidator(check)


def _check_egress(value: str) -> str:
    if value.startswith("["):  # an IPv6 literal, optionally with a port: [::1]:8900
        return _check_ipv6_egress(value)
    if "://" in value or "/" in value:
        raise _custom("pattern", f"egress entry {value!r} must be a hostname, without scheme or path")
    if value != value.lower():
        raise _custom("pattern", f"egress entry {value!r} must be lowercase")
    m = _EGRESS_RE.match(value)
    if m is None:
        raise _custom("pattern", f"egress entry {value!r} is not a hostname (optionally *.domain and :port)")
    if m.group(1) is not None and not 1 <= int(m.group(1)) <= 65535:
        raise _custom("pattern", f"egress entry {value!r} has a port outside 1..65535")
    literal = parse_ip_host(value.rsplit(":", 1)[0] if m.group(1) is not None else value)
    if literal is not None and not literal[1]:
        raise _custom("pattern", f"egress entry {value!r} is the IP address {literal[0]} written in another form; "
                                 f"write it as {literal[0]}")
    return value


def _check_ipv6_egress(value: str) -> str:
    close = value.find("]")
    host, rest = value[1:close], value[close + 1:] if close > 0 else ""
    parsed = parse_ip_host(host) if close > 0 else None
    if parsed is None or parsed[0].version != 6 or host != host.lower():
        raise _custom("pattern", f"egress entry {value!r} is not a bracketed IPv6 address ([::1] or [::1]:8900)")
    if rest and not (rest.startswith(":") and rest[1:].isdigit() and 1 <= int(rest[1:]) <= 65535):
        raise _custom("pattern", f"egress entry {value!r} has a port outside 1..65535")
    return value


def _unique(what: str) -> Callable[[list[str]], list[str]]:
    def check(values: list[str]) -> list[str]:
        seen: set[str] = set()
        for value in values:
            if value in seen:
                raise _custom("duplicate", f"duplicate {what} {value!r}")
            seen.add(value)
        return values

    return check


def _check_cel(src: str) -> str:
    too_complex = check_rule_bounds(src)
    if too_complex is not None:
        raise _custom("rule_too_complex", too_complex)
    message = check_rule_syntax(src)
    if message is not None:
        raise _custom("cel", message)
    return src


def _check_json_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is None:
        return None
    try:
        check_schema(schema)  # Draft 2020-12, RE2-runnable patterns, local $refs, bounded size
    except SchemaInvalid as exc:
        raise _custom("json_schema", exc.message) from None
    return schema


def _to_decimal(value: Any) -> Any:
    """Accept a string, int or float amount as an exact Decimal (floats via their repr)."""
    if value is None or isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise _custom("type", "expected a decimal amount (string or number), got bool")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))  # 0.5 -> Decimal("0.5"), not its binary expansion
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise _custom("type", f"expected a decimal amount, got {value!r}") from None
    else:
        return value  # strict validation reports the wrong type
    if result is not None and not result.is_finite():
        raise _custom("range", "amount must be a finite number")
    return result


ToolName = Annotated[str, _matching(_TOOL_RE, "tool name")]
SecretName = Annotated[str, _matching(SECRET_NAME_PATTERN, "secret name")]
EgressHost = Annotated[str, AfterValidator(_check_egress)]
CelExpression = Annotated[str, AfterValidator(_check_cel)]
JsonSchema = Annotated[dict[str, Any] | None, AfterValidator(_check_json_schema)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]


# ---------------------------------------------------------------------------------------------
# Models


class _Model(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", populate_by_name=True, frozen=True)


def _skip_cross_check(info: ValidationInfo) -> bool:
    return isinstance(info.context, Mapping) and bool(info.context.get(_SKIP_CROSS_CHECK))


class PassK(_Model):
    """A consistency target (pass^k, as published with tau-bench): at least ``min`` of the items must succeed
    in every one of ``k`` repeated tries. ``midwatch rehearse --repeat K`` (K >= k) measures it."""

    k: int = Field(ge=1, le=20)
    min: float = Field(gt=0, le=1)


class Slo(_Model):
    """Target end-to-end success rate of a run item, and optionally its consistency over repeated tries."""

    success_rate: float = Field(default=0.95, gt=0, le=1)
    pass_k: PassK | None = None


class Objective(_Model):
    """What the agent is for and how reliably it must achieve it."""

    success_criteria: str = ""
    slo: Slo = Field(default_factory=Slo)


class Scope(_Model):
    """Everything the agent may touch: tools, egress hosts and secrets."""

    tools: Annotated[list[ToolName], AfterValidator(_unique("tool"))] = Field(default_factory=list)
    egress: Annotated[list[EgressHost], AfterValidator(_unique("egress host"))] = Field(default_factory=list)
    secrets: Annotated[list[SecretName], AfterValidator(_unique("secret"))] = Field(default_factory=list)


class ApprovalRule(_Model):
    """Pause for a human decision when the CEL condition `when` holds before a step."""

    when: CelExpression
    route: Literal["operator", "tenant-admin", "approver"] = "approver"
    timeout_s: int = Field(default=3600, ge=1, le=30 * 24 * 3600)
    on_timeout: Literal["deny", "approve"] = "deny"


class Autonomy(_Model):
    """Hard budgets: step executions and LLM calls per item, cost and wall time per run."""

    max_steps: int = Field(default=20, ge=1, le=1000)
    max_llm_calls: int = Field(default=10, ge=0, le=1000)
    max_cost_usd: Annotated[Annotated[Decimal, Field(ge=0)] | None, BeforeValidator(_to_decimal)] = None
    max_duration_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    approvals: list[ApprovalRule] = Field(default_factory=list)


class InputSpec(_Model):
    """Shape of the run input; with `items` the input is a list processed record by record."""

    items: bool = False
    schema_: JsonSchema = Field(default=None, alias="schema")
    max_items: int = Field(default=100_000, ge=1, le=10_000_000)


class OnInvalid(_Model):
    """What to do when a step's output fails its schema or rules."""

    retry: int = Field(default=0, ge=0, le=5)
    then: Literal["fallback", "escalate", "fail"] = "escalate"


def _sandbox_script(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A step's ``sandbox:`` options, checked when the spec is stored rather than mid-run."""
    if value is None:
        return value
    from pydantic import ValidationError

    from runner.providers.sandbox import SandboxOptions

    try:
        SandboxOptions.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _custom("sandbox_script", f"sandbox{'.' + where if where else ''}: {first['msg']}") from None
    return value


SandboxScript = Annotated[dict[str, Any] | None, AfterValidator(_sandbox_script)]


class LlmCall(_Model):
    """One LLM completion, with fallback models tried in order."""

    model: ModelName
    fallbacks: list[ModelName] = Field(default_factory=list, max_length=5)
    prompt: str = Field(min_length=1)
    system: str | None = None
    max_tokens: int = Field(default=1024, ge=1, le=100_000)
    temperature: float = Field(default=0.0, ge=0, le=2)
    sandbox: SandboxScript = None


class AgentLoop(_Model):
    """A bounded tool-calling loop over a subset of the scope's tools."""

    model: ModelName
    fallbacks: list[ModelName] = Field(default_factory=list, max_length=5)
    prompt: str = Field(min_length=1)
    system: str | None = None
    tools: Annotated[list[ToolName], AfterValidator(_unique("tool"))] = Field(min_length=1)
    max_iterations: int = Field(default=5, ge=1, le=20)  # model turns; the last one must answer
    max_tokens: int = Field(default=1024, ge=1, le=100_000)  # per model turn
    temperature: float = Field(default=0.0, ge=0, le=2)
    sandbox: SandboxScript = None


class Step(_Model):
    """One step: exactly one of `tool`, `llm` or `agent`."""

    id: Annotated[str, _matching(_STEP_ID_RE, "step id")]
    tool: ToolName | None = None
    llm: LlmCall | None = None
    agent: AgentLoop | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    output_schema: JsonSchema = None
    rules: list[CelExpression] = Field(default_factory=list, max_length=20)
    on_invalid: OnInvalid = Field(default_factory=OnInvalid)
    on_dependency_failure: Literal["retry", "fallback", "skip_item", "escalate", "fail"] | None = None
    side_effect: bool | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)

    @property
    def kind(self) -> Literal["tool", "llm", "agent"]:
        """Which of tool/llm/agent this step runs."""
        if self.tool is not None:
            return "tool"
        if self.llm is not None:
            return "llm"
        if self.agent is not None:
            return "agent"
        raise ValueError(f"step {self.id!r} has none of tool/llm/agent")  # unreachable once validated

    @model_validator(mode="after")
    def _exactly_one_kind(self, info: ValidationInfo) -> Self:
        if not _skip_cross_check(info):
            issues = _check_step_shape(self.model_dump(by_alias=True), "")
            if issues:
                raise _custom(issues[0].code, issues[0].message)
        return self


class AgentSpec(_Model):
    """A complete agent spec (apiVersion midwatch/v1)."""

    api_version: Literal["midwatch/v1"] = Field(alias="apiVersion")
    name: Annotated[str, _matching(_SLUG_RE, "name")]
    description: str = Field(default="", max_length=10_000)
    objective: Objective = Field(default_factory=Objective)
    scope: Scope = Field(default_factory=Scope)
    autonomy: Autonomy = Field(default_factory=Autonomy)
    input: InputSpec = Field(default_factory=InputSpec, alias="input")
    steps: list[Step] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _cross_fields(self, info: ValidationInfo) -> Self:
        if not _skip_cross_check(info):
            issues = _cross_check(self.model_dump(by_alias=True))
            if issues:
                raise _custom("spec_invalid", "; ".join(f"{i.path}: {i.message}" for i in issues))
        return self


class LintWarning(BaseModel):
    """Advice about a valid spec; never blocks an upload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str
    message: str
    path: str = ""


class ReliabilityProjection(BaseModel):
    """End-to-end success projected as the product of per-step success rates."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    steps: int
    per_step: dict[str, float]
    projected: float
    slo: float
    meets_slo: bool


class ParseResult(BaseModel):
    """Outcome of `parse_spec`: the spec when valid, else every error found."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    spec: AgentSpec | None
    errors: list[SpecIssue]
    warnings: list[LintWarning]
    projection: ReliabilityProjection | None


# ---------------------------------------------------------------------------------------------
# Cross-field checks, over raw (possibly invalid) data so they run even when fields fail


def _join(prefix: str, where: str) -> str:
    if not where:
        return prefix
    if not prefix:
        return where
    return prefix + where if where.startswith("[") else f"{prefix}.{where}"


def _check_step_shape(step: Mapping[str, Any], base: str) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    kinds = [k for k in _STEP_KINDS if step.get(k) is not None]
    if len(kinds) != 1:
        got = f"; got {' and '.join(kinds)}" if kinds else ""
        message = f"a step needs exactly one of tool, llm or agent{got}"
        issues.append(SpecIssue(path=base, message=message, code="one_of"))
    if step.get("args") and kinds and "tool" not in kinds:
        issues.append(
            SpecIssue(path=_join(base, "args"), message="args are only allowed on tool steps", code="invalid")
        )
    return issues


def _string_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [v for v in value if isinstance(v, str)]


def _check_reference(
    expr: str, where: str, earlier: set[str], all_ids: set[str], items_enabled: bool
) -> SpecIssue | None:
    parts = root_of(expr)
    root = parts[0]
    message: str | None = None
    if root == "input":
        return None
    if root == "item":
        if not items_enabled:
            message = f"{{{{ {expr} }}}} needs input.items: true (there is no item otherwise)"
    elif root == "steps":
        if len(parts) < 2:
            message = f"{{{{ {expr} }}}} must name a step: steps.<id>..."
        elif parts[1] not in earlier:
            why = "does not run before this step" if parts[1] in all_ids else "does not exist"
            message = f"{{{{ {expr} }}}} refers to step {parts[1]!r}, which {why}"
    else:
        message = f"{{{{ {expr} }}}}: unknown name {root!r}; templates may use input, item or steps.<id>"
    return None if message is None else SpecIssue(path=where, message=message, code="reference")


def _template_fields(step: Mapping[str, Any], base: str) -> list[tuple[Any, str]]:
    fields: list[tuple[Any, str]] = [(step.get("args"), f"{base}.args")]
    for kind in ("llm", "agent"):
        call = step.get(kind)
        if isinstance(call, Mapping):
            fields += [(call.get(key), f"{base}.{kind}.{key}") for key in ("prompt", "system")]
    return [(value, path) for value, path in fields if value is not None]


def _check_scope(step: Mapping[str, Any], base: str, in_scope: set[str]) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    tool = step.get("tool")
    if isinstance(tool, str) and tool not in in_scope:
        message = f"tool {tool!r} is not in scope.tools"
        issues.append(SpecIssue(path=f"{base}.tool", message=message, code="not_in_scope"))
    agent = step.get("agent")
    agent_tools = agent.get("tools") if isinstance(agent, Mapping) else None
    if isinstance(agent_tools, list):
        for j, name in enumerate(agent_tools):
            if isinstance(name, str) and name not in in_scope:
                message = f"agent tool {name!r} is not in scope.tools"
                path = f"{base}.agent.tools[{j}]"
                issues.append(SpecIssue(path=path, message=message, code="not_in_scope"))
    return issues


def _check_templates(
    step: Mapping[str, Any], base: str, earlier: set[str], all_ids: set[str], items_enabled: bool
) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for value, field_path in _template_fields(step, base):
        for text, text_path in _strings(value, field_path):
            try:
                found = references(text)
            except TemplateError as exc:
                issues.append(SpecIssue(path=text_path, message=str(exc), code="template"))
                continue
            for _, expr in found:
                issue = _check_reference(expr, text_path, earlier, all_ids, items_enabled)
                if issue is not None:
                    issues.append(issue)
    return issues


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Yield (string, path) for every string inside dicts and lists, so errors point at the leaf."""
    if isinstance(value, str):
        yield value, path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, _join(path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")


def _cross_check(raw: Mapping[str, Any]) -> list[SpecIssue]:
    """Checks that span fields. Defensive: skips whatever has the wrong shape (pydantic reports it)."""
    issues: list[SpecIssue] = []
    steps = raw.get("steps")
    if not isinstance(steps, list):
        return issues
    scope = raw.get("scope", {})
    scope_tools = _string_list(scope.get("tools", [])) if isinstance(scope, Mapping) else None
    spec_input = raw.get("input")
    items_enabled = isinstance(spec_input, Mapping) and spec_input.get("items") is True
    all_ids = {s["id"] for s in steps if isinstance(s, Mapping) and isinstance(s.get("id"), str)}
    first_index: dict[str, int] = {}
    earlier: set[str] = set()

    for i, step in enumerate(steps):
        if not isinstance(step, Mapping):
            continue
        base = f"steps[{i}]"
        issues += _check_step_shape(step, base)
        if scope_tools is not None:
            issues += _check_scope(step, base, set(scope_tools))
        issues += _check_templates(step, base, earlier, all_ids, items_enabled)
        step_id = step.get("id")
        if not isinstance(step_id, str):
            continue
        if step_id in first_index:
            message = f"duplicate step id {step_id!r} (first used by steps[{first_index[step_id]}])"
            issues.append(SpecIssue(path=f"{base}.id", message=message, code="duplicate"))
        else:
            first_index[step_id] = i
        earlier.add(step_id)
    return issues


# ---------------------------------------------------------------------------------------------
# Turning pydantic errors and YAML errors into SpecIssues

_CODES = {
    "extra_forbidden": "unknown_field",
    "missing": "missing",
    "literal_error": "choice",
    "value_error": "invalid",
    **dict.fromkeys(("greater_than", "greater_than_equal", "less_than", "less_than_equal"), "range"),
    **dict.fromkeys(("too_short", "too_long", "string_too_short", "string_too_long"), "length"),
}


def _loc_to_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if part == "[key]":
            continue
        path = _join(path, f"[{part}]" if isinstance(part, int) else str(part))
    return path


def _code_for(kind: str) -> str:
    if kind in _CODES:
        return _CODES[kind]
    if kind.endswith("_type") or kind == "is_instance_of":
        return "type"
    return kind  # our own PydanticCustomError types are already stable codes (cel, pattern, ...)


def _issue_from_error(error: ErrorDetails) -> SpecIssue:
    loc = error["loc"]
    code = _code_for(error["type"])
    if code == "unknown_field":
        message = f"unknown field {loc[-1]!r}"
    elif code == "missing":
        message = f"missing required field {loc[-1]!r}"
    elif code == "type" and error["type"] != "type":  # pydantic's own type errors: say what came
        message = f"{error['msg']} (got {type(error.get('input')).__name__})"
    else:
        message = error["msg"].removeprefix("Value error, ")
    return SpecIssue(path=_loc_to_path(loc), message=message, code=code)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable key: SafeLoader raises its own error below
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _load_text(data: str | bytes) -> tuple[Any, SpecIssue | None]:
    if len(data) > MAX_SPEC_BYTES:
        message = f"spec is {len(data)} bytes; at most {MAX_SPEC_BYTES} are allowed"
        return None, SpecIssue(path="", message=message, code="too_large")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, SpecIssue(path="", message=f"spec is not UTF-8: {exc}", code="syntax")
    try:
        return yaml.load(data, Loader=_StrictLoader), None  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return None, SpecIssue(path="", message=f"YAML syntax error{where}: {problem}", code="syntax")
    except yaml.YAMLError as exc:
        return None, SpecIssue(path="", message=f"YAML syntax error: {exc}", code="syntax")
    except RecursionError:
        return None, SpecIssue(path="", message="YAML is nested too deeply", code="syntax")


def _too_many_nodes(value: Any) -> bool:
    stack, count = [value], 0
    while stack:
        count += 1
        if count > MAX_SPEC_NODES:
            return True
        current = stack.pop()
        if isinstance(current, Mapping):
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return False


# ---------------------------------------------------------------------------------------------
# Public functions


def parse_spec(data: Mapping[str, Any] | str | bytes) -> ParseResult:
    """Validate a spec given as a mapping or as YAML/JSON text, collecting every error.

    Never raises on bad input: errors come back in `ParseResult.errors`, each with a path like
    "steps[1].llm.model" and a stable code. A valid spec also gets its lint warnings and
    reliability projection.
    """
    raw: Any = data
    if isinstance(data, str | bytes):
        raw, issue = _load_text(data)
        if issue is not None:
            return ParseResult(spec=None, errors=[issue], warnings=[], projection=None)
    if not isinstance(raw, Mapping):
        got = "an empty document" if raw is None else f"a {type(raw).__name__}"
        message = f"a spec must be a mapping at the top level, got {got}"
        issue = SpecIssue(path="", message=message, code="type")
        return ParseResult(spec=None, errors=[issue], warnings=[], projection=None)
    if _too_many_nodes(raw):
        issue = SpecIssue(path="", message=f"spec has more than {MAX_SPEC_NODES} values", code="too_large")
        return ParseResult(spec=None, errors=[issue], warnings=[], projection=None)

    errors: list[SpecIssue] = []
    spec: AgentSpec | None = None
    try:
        spec = AgentSpec.model_validate(dict(raw), context={_SKIP_CROSS_CHECK: True})
    except ValidationError as exc:
        errors += [_issue_from_error(e) for e in exc.errors(include_url=False)]
    errors += _cross_check(raw)
    if errors or spec is None:
        return ParseResult(spec=None, errors=errors, warnings=[], projection=None)
    projection = project_reliability(spec)
    return ParseResult(spec=spec, errors=[], warnings=_lint(spec, projection), projection=projection)


def load_spec(data: Mapping[str, Any] | str | bytes) -> AgentSpec:
    """Parse and validate a spec; raise SpecInvalid carrying every issue if it is invalid."""
    result = parse_spec(data)
    if result.errors or result.spec is None:
        raise SpecInvalid(result.errors)
    return result.spec


_VERSIONS: OrderedDict[str, AgentSpec] = OrderedDict()
_VERSIONS_LOCK = threading.Lock()
_VERSIONS_MAX = 1024


def cached_version_spec(version_id: str) -> AgentSpec | None:
    """A version's spec if this process has parsed it already (see :func:`load_version_spec`)."""
    with _VERSIONS_LOCK:
        return _VERSIONS.get(version_id)


def load_version_spec(version_id: str, spec: Mapping[str, Any] | Callable[[], Mapping[str, Any]]) -> AgentSpec:
    """A stored version's spec, parsed once per process (versions are immutable, so the id is the key).
    ``spec`` may be a function that loads the JSON, called only when the version is not cached yet."""
    with _VERSIONS_LOCK:
        found = _VERSIONS.get(version_id)
        if found is not None:
            _VERSIONS.move_to_end(version_id)
            return found
    parsed = load_spec(spec() if callable(spec) else spec)
    with _VERSIONS_LOCK:
        _VERSIONS[version_id] = parsed
        while len(_VERSIONS) > _VERSIONS_MAX:
            _VERSIONS.popitem(last=False)
    return parsed


def project_reliability(
    spec: AgentSpec, measured: Mapping[str, float] | None = None, default: float = DEFAULT_STEP_SUCCESS
) -> ReliabilityProjection:
    """Project end-to-end success as the product of per-step success rates.

    `measured` maps step ids to observed success rates in [0, 1]; unmeasured steps use `default`.
    """
    measured = measured or {}
    per_step: dict[str, float] = {}
    for step in spec.steps:
        rate = float(measured.get(step.id, default))
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"success rate for step {step.id!r} must be within [0, 1], got {rate}")
        per_step[step.id] = rate
    projected = math.prod(per_step.values())
    slo = spec.objective.slo.success_rate
    return ReliabilityProjection(
        steps=len(spec.steps),
        per_step=per_step,
        projected=projected,
        slo=slo,
        meets_slo=projected >= slo - 1e-12,  # tolerate float error in the product
    )


def _pct(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def _projection_message(projection: ReliabilityProjection) -> str:
    rates = list(projection.per_step.values())
    n = projection.steps
    if len(set(rates)) == 1:
        detail = f"{n} step{'s' if n != 1 else ''} at {_pct(rates[0])}{' each' if n != 1 else ''}"
    else:
        detail = f"{n} steps: " + ", ".join(f"{sid} {_pct(r)}" for sid, r in projection.per_step.items())
    verdict = "meets" if projection.meets_slo else "is below"
    projected, slo = _pct(projection.projected), _pct(projection.slo)
    return f"projected end-to-end success {projected} ({detail}) {verdict} the SLO {slo}"


def _lint(spec: AgentSpec, projection: ReliabilityProjection) -> list[LintWarning]:
    warnings: list[LintWarning] = []
    if len(spec.steps) > RECOMMENDED_MAX_STEPS:
        warnings.append(
            LintWarning(
                code="long_chain",
                path="steps",
                message=(
                    f"{len(spec.steps)} steps in one chain: every step multiplies the failure odds; "
                    "3-5 steps are recommended (merge steps or split the agent)"
                ),
            )
        )
    message = _projection_message(projection)
    warnings.append(LintWarning(code="reliability_projection", path="objective.slo", message=message))
    used_tools: set[str] = set()
    for i, step in enumerate(spec.steps):
        if step.tool is not None:
            used_tools.add(step.tool)
        if step.agent is not None:
            used_tools.update(step.agent.tools)
        if step.kind != "tool" and step.output_schema is None and not step.rules:
            warnings.append(
                LintWarning(
                    code="unvalidated_output",
                    path=f"steps[{i}]",
                    message=f"{step.kind} step {step.id!r} has neither output_schema nor rules; "
                    "its output reaches later steps unchecked",
                )
            )
    for j, tool in enumerate(spec.scope.tools):
        if tool not in used_tools:
            warnings.append(
                LintWarning(
                    code="unused_scope",
                    path=f"scope.tools[{j}]",
                    message=f"tool {tool!r} is in scope but no step uses it; remove it to narrow the scope",
                )
            )
    if spec.input.items and spec.input.schema_ is None:
        warnings.append(
            LintWarning(
                code="items_without_schema",
                path="input",
                message="input.items is true but input.schema is missing; malformed records are not caught",
            )
        )
    return warnings


def lint(spec: AgentSpec, measured: Mapping[str, float] | None = None) -> list[LintWarning]:
    """Advice for a valid spec; always includes a `reliability_projection` warning.

    `measured` maps step ids to observed success rates used by the projection.
    """
    return _lint(spec, project_reliability(spec, measured))
