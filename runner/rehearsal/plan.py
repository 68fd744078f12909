"""What is rehearsed (:class:`Source`) and how it is copied into the rehearsal space (:class:`Plan`).

A source is an agent's stored version with the tenant's tool and model definitions, or a file: a spec
alone (tools from the tenant's catalog) or a *bundle* holding the spec and the definitions it needs::

    spec: {apiVersion: midwatch/v1, name: ..., ...}   # the agent spec, inline
    tools:                                              # as PUT /v1/tools/{name} takes them
      crm.get_invoice: {method: GET, url: "https://api.example-crm.com/invoices/{{ args.id }}", ...}
    models:                                             # as PUT /v1/models/{alias} takes them (optional)
      careful: {provider: openai, base_url: ..., model: gpt-4.1-mini, api_key_secret: openai_key, ...}
    items: [{invoice_id: INV-1}, ...]                   # sample inputs (optional; else made from input.schema,
                                                        # see :mod:`runner.rehearsal.samples`)

The plan is the copy: every tool URL (and OAuth token URL) rewritten to the rehearsal upstream, one port
per original host so each keeps its own circuit breaker; the built-in ``sandbox.echo`` and
``sandbox.record`` replaced by HTTP stand-ins for the lookup and the idempotent side-effect API they stand
for; every model alias (the built-in ``sandbox`` too) pointed at the upstream's model endpoint in its own
wire format, with its prices; the spec's ``scope.egress`` replaced by those ports and its secrets by
fakes. Steps, rules, schemas, autonomy bounds and approvals are not touched: that is what is rehearsed.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from runner.catalog import ModelConfig, ToolDefinition
from runner.errors import RehearsalError, SpecInvalid
from runner.spec import AgentSpec, SpecIssue, load_spec
from runner.tools.http_definition import OAuth2ClientCredentials
from runner.tools.sandbox import BUILTIN_TOOLS, EchoTool, RecordTool
from tenants.kit.ids import sha256_hex

__all__ = [
    "MODEL_KEY_SECRET",
    "STANDINS",
    "Group",
    "Plan",
    "Source",
    "build_plan",
    "complete_from_tenant",
    "groups_of",
    "load_file",
    "side_effect_tools",
    "source_from_agent",
    "tool_paths",
]

MODEL_KEY_SECRET = "rehearsal_model_key"  # noqa: S105 - a secret's name: the fake API key every rehearsed model sends
MAX_BUNDLE_BYTES = 2 * 1024 * 1024
# Built-in tools rehearsed as the HTTP APIs they stand in for, with the retry policy a well-kept tool has
# (their tenant cannot configure one, so a storm they cannot weather would not be the agent's fault).
_STANDIN_RETRY = {"max_attempts": 4, "base_delay_s": 0.2, "max_delay_s": 5.0}
STANDINS: dict[str, dict[str, Any]] = {
    EchoTool.name: {"method": "POST", "description": EchoTool.description, "args_schema": {"type": "object"},
                    "side_effect": False, "idempotent": True, "retry": _STANDIN_RETRY},
    RecordTool.name: {"method": "POST", "description": RecordTool.description, "args_schema": {"type": "object"},
                      "side_effect": True, "idempotent": True, "idempotency_header": "Idempotency-Key",
                      "retry": _STANDIN_RETRY},
}
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}", re.S)


@dataclass
class Source:
    """An agent spec with the tool and model definitions it uses."""

    spec: AgentSpec
    spec_json: dict[str, Any]
    origin: str  # agent | file
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)  # HTTP tools by name (ToolDefinition JSON)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # aliases (ModelConfig JSON, no alias key)
    version: int | None = None
    version_id: str | None = None
    tenant_id: str | None = None
    tenant_name: str | None = None
    secret_names: set[str] | None = None  # the tenant's secrets by name (None: unknown)
    sample_items: list[Any] | None = None

    @property
    def agent_name(self) -> str:
        return self.spec.name

    @property
    def spec_hash(self) -> str:
        return sha256_hex(self.spec_json)

    def tool_definition(self, name: str) -> ToolDefinition | None:
        """The HTTP definition the rehearsal serves for tool ``name`` (stand-ins included); None: a built-in
        that stays in-process (``sandbox.sleep``)."""
        if name in STANDINS:
            return ToolDefinition.model_validate({"name": name, "url": "http://127.0.0.1/", **STANDINS[name]})
        if name in BUILTIN_TOOLS:
            return None
        return ToolDefinition.model_validate({**self.tools[name], "name": name})

    def aliases(self) -> list[str]:
        """Every model alias a step may call (fallbacks included), in spec order."""
        seen: list[str] = []
        for step in self.spec.steps:
            call = step.llm or step.agent
            if call is not None:
                seen += [a for a in (call.model, *call.fallbacks) if a not in seen]
        return seen

    def check_complete(self) -> None:
        """Every tool in scope and every model alias has a definition; RehearsalError naming what is missing."""
        missing = [f"tool {t!r} (PUT /v1/tools/{t})" for t in self.spec.scope.tools
                   if t not in BUILTIN_TOOLS and t not in self.tools]
        missing += [f"model {a!r} (PUT /v1/models/{a})" for a in self.aliases()
                    if a != "sandbox" and a not in self.models]
        if missing:
            where = f"tenant {self.tenant_name!r}" if self.tenant_name else "the bundle"
            raise RehearsalError(f"{self.agent_name}: not defined in {where}: {', '.join(missing)}; production "
                                 "runs would escalate on them too")


def side_effect_tools(source: Source) -> set[str]:
    """Tools in scope whose calls are side effects (stand-ins included)."""
    out = set()
    for name in source.spec.scope.tools:
        definition = source.tool_definition(name)
        if definition is not None and definition.side_effect:
            out.add(name)
    return out


# ---- files and bundles ----------------------------------------------------------------------------

def _issues(exc: ValidationError, prefix: str) -> list[SpecIssue]:
    return [SpecIssue(path=".".join([prefix, *(str(p) for p in e["loc"])]), message=e["msg"], code="invalid")
            for e in exc.errors(include_url=False)]


def load_file(path: Path) -> Source:
    """A spec file or a bundle (see the module docstring). Tools of a plain spec are looked up later, in the
    tenant's catalog. Raises SpecInvalid with every problem found."""
    data = path.read_bytes()
    if len(data) > MAX_BUNDLE_BYTES:
        raise SpecInvalid([SpecIssue(path="", code="too_large", message=f"{path} is over {MAX_BUNDLE_BYTES} bytes")])
    try:
        loaded = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise SpecInvalid([SpecIssue(path="", code="syntax", message=f"not YAML or JSON: {exc}")]) from None
    if isinstance(loaded, dict) and "spec" in loaded and "apiVersion" not in loaded:
        return _bundle(loaded)
    spec = load_spec(data)
    return Source(spec=spec, spec_json=spec.model_dump(mode="json", by_alias=True), origin="file")


def _bundle(loaded: dict[str, Any]) -> Source:
    unknown = sorted(set(loaded) - {"spec", "tools", "models", "items"})
    if unknown:
        raise SpecInvalid([SpecIssue(path=k, code="unknown_field", message=f"unknown bundle field {k!r} (a bundle "
                                     "has spec, tools, models and items)") for k in unknown])
    spec = load_spec(loaded["spec"] if isinstance(loaded["spec"], dict) else {})
    issues: list[SpecIssue] = []
    tools: dict[str, dict[str, Any]] = {}
    for name, definition in dict(loaded.get("tools") or {}).items():
        try:
            parsed = ToolDefinition.model_validate({**dict(definition or {}), "name": name})
        except (ValidationError, TypeError, ValueError) as exc:
            issues += _issues(exc, f"tools.{name}") if isinstance(exc, ValidationError) else [
                SpecIssue(path=f"tools.{name}", message=str(exc))]
            continue
        tools[str(name)] = parsed.model_dump(mode="json", exclude={"name"})
    models: dict[str, dict[str, Any]] = {}
    for alias, config in dict(loaded.get("models") or {}).items():
        try:
            parsed_model = ModelConfig.model_validate({**dict(config or {}), "alias": alias})
        except (ValidationError, TypeError, ValueError) as exc:
            issues += _issues(exc, f"models.{alias}") if isinstance(exc, ValidationError) else [
                SpecIssue(path=f"models.{alias}", message=str(exc))]
            continue
        models[str(alias)] = parsed_model.model_dump(mode="json", exclude={"alias"})
    items = loaded.get("items")
    if items is not None and (not isinstance(items, list) or not items or len(items) > 10_000):
        issues.append(SpecIssue(path="items", message="items must be a list of 1 to 10,000 sample inputs"))
    if issues:
        raise SpecInvalid(issues)
    return Source(spec=spec, spec_json=spec.model_dump(mode="json", by_alias=True), origin="file", tools=tools,
                  models=models, sample_items=list(items) if items else None)


# ---- the copy ---------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Group:
    """One port of the rehearsal upstream: an original API host, the built-in stand-ins, or a model alias."""

    kind: str  # host | builtin | model
    name: str  # host[:port] | "builtin" | alias


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}"


def groups_of(source: Source) -> list[Group]:
    """The upstream ports the rehearsal needs, in a stable order."""
    hosts: list[str] = []
    standins = False
    for name in source.spec.scope.tools:
        if name in STANDINS:
            standins = True
            continue
        if name in BUILTIN_TOOLS:
            continue
        definition = ToolDefinition.model_validate({**source.tools[name], "name": name})
        auth = definition.auth
        token = [auth.token_url] if isinstance(auth, OAuth2ClientCredentials) else []
        for url in [definition.url, *token]:
            if (netloc := _netloc(url)) not in hosts:
                hosts.append(netloc)
    out = [Group("host", h) for h in hosts]
    if standins:
        out.append(Group("builtin", "builtin"))
    out += [Group("model", alias) for alias in source.aliases()]
    return out


def _rewrite_url(url: str, port: int) -> str:
    """``scheme://host[:port]/path?query`` → ``http://127.0.0.1:<port>/path?query`` (templates kept)."""
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    tail = rest[end:] or "/"
    return f"http://127.0.0.1:{port}{tail if tail.startswith('/') else '/' + tail}"


@dataclass
class Plan:
    """Everything the rehearsal's worker process needs, as JSON (``plan.json`` in the space)."""

    rehearsal_id: str
    agent_name: str
    spec: dict[str, Any]
    tools: dict[str, dict[str, Any]]
    models: dict[str, dict[str, Any]]
    standins: list[str]
    secrets: dict[str, str]
    allowed: list[str]
    runs: list[dict[str, Any]]
    approvals: str
    deadline: float
    worker_threads: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls(**json.loads(text))


def _path_template(url: str) -> str:
    return urlsplit(_PLACEHOLDER.sub("x", url)).path or "/"


def build_plan(source: Source, ports: dict[Group, int], *, rehearsal_id: str, items: list[Any], repeat: int,
               approvals: str, deadline: float) -> Plan:
    """The space's copy of ``source`` with the upstream's ``ports`` (see the module docstring)."""
    by_host = {g.name: p for g, p in ports.items() if g.kind == "host"}
    tools: dict[str, dict[str, Any]] = {}
    for name in source.spec.scope.tools:
        if name in STANDINS:
            port = ports[Group("builtin", "builtin")]
            tools[name] = {**STANDINS[name], "url": f"http://127.0.0.1:{port}/{name}"}
        elif name not in BUILTIN_TOOLS:
            definition = dict(source.tools[name])
            definition["url"] = _rewrite_url(definition["url"], by_host[_netloc(definition["url"])])
            auth = definition.get("auth")
            if isinstance(auth, dict) and auth.get("token_url"):
                auth = {**auth, "token_url": _rewrite_url(auth["token_url"], by_host[_netloc(auth["token_url"])])}
                definition["auth"] = auth
            tools[name] = definition
    models: dict[str, dict[str, Any]] = {}
    for alias in source.aliases():
        port = ports[Group("model", alias)]
        original = dict(source.models.get(alias) or {"provider": "sandbox"})
        fmt = "anthropic" if original.get("provider") == "anthropic" else "openai"
        config = {k: v for k, v in original.items() if k in (
            "price_in_per_mtok", "price_out_per_mtok", "price_cached_in_per_mtok", "timeout_s", "retry",
            "anthropic_version", "max_tokens_param", "send_temperature") and v is not None}
        config.update(provider=fmt, model=original.get("model") or alias, api_key_secret=MODEL_KEY_SECRET,
                      base_url=f"http://127.0.0.1:{port}" + ("/v1" if fmt == "openai" else ""))
        if alias == "sandbox":
            config.update(price_in_per_mtok="0", price_out_per_mtok="0")
        models[alias] = config
    spec = json.loads(json.dumps(source.spec_json))
    scope = dict(spec.get("scope") or {})
    allowed = sorted(f"127.0.0.1:{p}" for p in ports.values())
    scope["egress"] = allowed
    wanted = list(scope.get("secrets") or [])
    if models and MODEL_KEY_SECRET not in wanted:
        wanted.append(MODEL_KEY_SECRET)
    scope["secrets"] = wanted
    spec["scope"] = scope
    known = source.secret_names
    fakes = {name: f"rh-{name}-{secrets.token_hex(8)}" for name in wanted
             if known is None or name in known or name == MODEL_KEY_SECRET}
    runs: list[dict[str, Any]] = []
    for rep in range(1, repeat + 1):
        if source.spec.input.items:
            runs.append({"key": f"rehearsal:r{rep}", "items": items, "input": None, "rep": rep, "offset": 0})
        else:
            runs += [{"key": f"rehearsal:r{rep}:i{i}", "items": None, "input": item, "rep": rep, "offset": i}
                     for i, item in enumerate(items)]
    return Plan(rehearsal_id=rehearsal_id, agent_name=source.agent_name, spec=spec, tools=tools, models=models,
                standins=sorted(n for n in source.spec.scope.tools if n in STANDINS), secrets=fakes, allowed=allowed,
                runs=runs, approvals=approvals, deadline=deadline)


def tool_paths(plan: Plan) -> dict[str, tuple[str, str]]:
    """Each rehearsed HTTP tool's (method, path template with ``x`` for placeholders)."""
    return {name: (str(d.get("method", "GET")), _path_template(str(d["url"]))) for name, d in plan.tools.items()}


# ---- from the installation's database (read only: definitions and secret names, never a value) -------------

def _tenant_id(session: Any, tenant_name: str) -> str:
    from tenants.accounts.repository import AccountsPlatformRepository
    from tenants.kit.errors import NotFound

    tenant = AccountsPlatformRepository(session).tenant_by_name(tenant_name)
    if tenant is None:
        raise NotFound(f"tenant {tenant_name!r} not found")
    return str(tenant.id)


def _fill_from_catalog(session: Any, source: Source, tenant_id: str) -> None:
    from tenants.catalog.repository import CatalogRepository
    from tenants.secrets.service import list_secrets

    catalog = CatalogRepository(session, tenant_id)
    for name in source.spec.scope.tools:
        if name in BUILTIN_TOOLS or name in source.tools:
            continue
        record = catalog.tool(name)
        if record is not None:
            source.tools[name] = {k: v for k, v in dict(record.definition).items() if k != "name"}
    for alias in source.aliases():
        if alias == "sandbox" or alias in source.models:
            continue
        model = catalog.model(alias)
        if model is not None:
            source.models[alias] = {k: v for k, v in dict(model.config).items() if k != "alias"}
    names: set[str] = set()
    after: str | None = None
    while True:  # metadata only: a secret's value is never read
        page = list_secrets(session, tenant_id, after=after, limit=100)
        names.update(m.name for m in page)
        if len(page) < 100:
            break
        after = page[-1].name
    source.secret_names = names


def source_from_agent(tenant_name: str, agent_name: str, version: int | None = None) -> Source:
    """A stored version of a tenant's agent (its latest by default) with the tenant's definitions."""
    from tenants.agents.service import get_version
    from tenants.kit.db import read_only

    with read_only() as session:
        tenant_id = _tenant_id(session, tenant_name)
        stored = get_version(session, tenant_id, agent_name, version)
        spec_json = dict(stored.spec)
        source = Source(spec=load_spec(spec_json), spec_json=spec_json, origin="agent", version=stored.version,
                        version_id=stored.id, tenant_id=tenant_id, tenant_name=tenant_name)
        _fill_from_catalog(session, source, tenant_id)
    source.check_complete()
    return source


def complete_from_tenant(source: Source, tenant_name: str | None) -> Source:
    """Fill a file's missing tool and model definitions from the tenant's catalog (``tenant_name``; None: only
    check that nothing is missing)."""
    if tenant_name is not None:
        from tenants.kit.db import read_only

        with read_only() as session:
            tenant_id = _tenant_id(session, tenant_name)
            source.tenant_id, source.tenant_name = tenant_id, tenant_name
            _fill_from_catalog(session, source, tenant_id)
    source.check_complete()
    return source
