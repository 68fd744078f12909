"""Agents: store specs as immutable versions (with lint warnings), validate, list; submit runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from litestar import Response, Router, get, post, put
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import FromPath, HeaderParameter, JSONBody, RawBody

from platform_api.auth import ANY_TENANT_ROLE, TENANT_ADMIN
from platform_api.routes._common import CONFLICT, Cursor, Db, Limit, TenantCaller, audit, page
from platform_api.schemas.agents import AgentOut, AgentVersionOut, LintOut, StoredAgentOut
from platform_api.schemas.common import Page, find_nul
from platform_api.schemas.runs import RunOut, SubmitRun
from runner.errors import SpecInvalid
from runner.jsonschemas import validator_for
from runner.spec import AgentSpec, ParseResult, SpecIssue, load_version_spec, parse_spec
from tenants.agents.repository import AgentRepository
from tenants.agents.service import get_agent, get_version, store_version, version_spec
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput
from tenants.kit.settings import get_settings
from tenants.rehearsals.service import version_for_run
from tenants.runs.service import submit_run

__all__ = ["build_router"]

IdempotencyKey = Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=200, min_length=1,
                                                 pattern=r"^[\x20-\x7e]+$",
                                                 description="same key, same run: retries never create two "
                                                             "(printable ASCII, up to 200 characters)")]


@dataclass
class SpecBodyOperation(Operation):
    """The OpenAPI operation of a route whose body is an agent spec, read raw and parsed as YAML or JSON
    (Litestar cannot see a raw body's type): a mapping, in either notation."""

    document: ClassVar[Schema] = Schema(type=OpenAPIType.OBJECT)

    def __post_init__(self) -> None:
        if self.request_body is None:
            self.request_body = RequestBody(
                required=True, description="an agent spec, YAML or JSON (README: 'Agent spec v1')",
                content={media: OpenAPIMediaType(schema=self.document)
                         for media in ("application/yaml", "application/json")})


@dataclass
class LintBodyOperation(SpecBodyOperation):
    """Validation lints any YAML or JSON document (one that is not a mapping is reported, with a 200)."""

    document: ClassVar[Schema] = Schema()


def _parse(name: str, body: bytes) -> ParseResult:
    if not body.strip():
        raise InvalidInput("the request body must be an agent spec (YAML or JSON)")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("the agent spec must be UTF-8 text") from exc
    result = parse_spec(text)
    nul_at = find_nul(result.spec.model_dump(mode="json", by_alias=True)) if result.spec is not None else None
    if nul_at is not None:
        nul = SpecIssue(path=nul_at, code="nul_character", message="text cannot contain NUL (\\u0000) characters")
        return result.model_copy(update={"spec": None, "errors": [*result.errors, nul]})
    if result.spec is not None and result.spec.name != name:
        mismatch = SpecIssue(path="name", code="name_mismatch",
                             message=f"spec name {result.spec.name!r} differs from the URL's {name!r}")
        return result.model_copy(update={"spec": None, "errors": [*result.errors, mismatch]})
    return result


def _lint_out(result: ParseResult) -> LintOut:
    return LintOut(valid=not result.errors, errors=[e.model_dump() for e in result.errors],
                   warnings=[w.model_dump() for w in result.warnings],
                   projection=result.projection.model_dump() if result.projection else None)


@put("/{name:str}", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT,
     summary="Store an agent spec (YAML or JSON) as a new immutable version",
     description="Returns 201 with the new version and lint warnings, or 200 if the spec equals the latest "
                 "version. An invalid spec is a 422 spec_invalid listing every error with its field path.",
     status_code=201, operation_class=SpecBodyOperation)
def put_agent(name: FromPath[str], body: RawBody, caller: TenantCaller, session: Db) -> Response[StoredAgentOut]:
    result = _parse(name, body)
    if result.spec is None:
        raise SpecInvalid(result.errors)
    spec_json = result.spec.model_dump(mode="json", by_alias=True)
    stored = store_version(session, caller.tenant_id, name, spec_json, [w.model_dump() for w in result.warnings])
    if stored.created:
        audit(session, caller, "agent.version_stored", stored.version.id,
              details={"agent": name, "version": stored.version.version})
    out = StoredAgentOut(agent=AgentOut.model_validate(stored.agent),
                         version=AgentVersionOut.model_validate(stored.version), created=stored.created)
    return Response(out, status_code=201 if stored.created else 200)


@post("/{name:str}/validate", opt=ANY_TENANT_ROLE, sync_to_thread=True,
      summary="Validate and lint a spec without storing it", status_code=200, operation_class=LintBodyOperation)
def validate_agent(name: FromPath[str], body: RawBody) -> LintOut:
    return _lint_out(_parse(name, body))


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="List agents")
def list_agents(caller: TenantCaller, session: Db, limit: Limit = 100, cursor: Cursor = None) -> Page[AgentOut]:
    rows = AgentRepository(session, caller.tenant_id).list(after=cursor, limit=limit)
    return page([AgentOut.model_validate(a) for a in rows], limit, lambda a: a.name)


@get("/{name:str}", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="An agent and its latest version")
def get_agent_route(name: FromPath[str], caller: TenantCaller, session: Db) -> StoredAgentOut:
    agent = get_agent(session, caller.tenant_id, name)
    version = get_version(session, caller.tenant_id, name)
    return StoredAgentOut(agent=AgentOut.model_validate(agent), version=AgentVersionOut.model_validate(version),
                          created=False)


@get("/{name:str}/versions", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="Every version of an agent, newest first")
def list_versions(name: FromPath[str], caller: TenantCaller, session: Db) -> Page[AgentVersionOut]:
    agent = get_agent(session, caller.tenant_id, name)
    rows = AgentRepository(session, caller.tenant_id).versions(agent.id)
    return Page(data=[AgentVersionOut.model_validate(v) for v in rows])


@get("/{name:str}/versions/{version:int}", opt=ANY_TENANT_ROLE, sync_to_thread=True,
     summary="One version of an agent")
def get_version_route(name: FromPath[str], version: FromPath[int], caller: TenantCaller,
                      session: Db) -> AgentVersionOut:
    return AgentVersionOut.model_validate(get_version(session, caller.tenant_id, name, version))


def _check_input(spec: AgentSpec, data: SubmitRun) -> None:
    if spec.input.items and data.items is None:
        raise InvalidInput("this agent processes batches: send 'items' (a list)", field="items")
    if not spec.input.items and data.items is not None:
        raise InvalidInput("this agent takes a single input: send 'input', not 'items'", field="items")
    if data.items is not None and len(data.items) > min(spec.input.max_items, get_settings().max_batch_items):
        raise InvalidInput(f"too many items: {len(data.items)} (limit "
                           f"{min(spec.input.max_items, get_settings().max_batch_items)})", field="items")
    schema = spec.input.schema_
    if schema is None:
        return
    validator = validator_for(schema)  # RE2 patterns and a work budget: a tenant's schema cannot stall the API
    targets = [(f"items[{i}]", it) for i, it in enumerate(data.items)] if data.items is not None else [
        ("input", data.input)]
    for path, value in targets:
        error = validator.best_violation(value)
        if error is not None:
            where = path + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in error.path)
            raise InvalidInput(f"{where}: {error.message}", field=where)


def submit(name: FromPath[str], data: JSONBody[SubmitRun], caller: TenantCaller,
           idempotency_key: IdempotencyKey = None) -> Response[RunOut]:
    # The hot path opens and commits its unit of work on its own worker thread: one thread hop per request
    # instead of a second hop for the ``Db`` dependency's commit (the transaction never waits for a thread).
    with unit_of_work() as session:
        version = version_for_run(session, caller.tenant_id, name, data.version)  # the deploy gate, if any
        _check_input(load_version_spec(version.id, lambda: version_spec(session, caller.tenant_id, version.id)), data)
        submitted = submit_run(session, caller.tenant_id, version, name, data.input, data.items, idempotency_key,
                               priority=data.priority)
        out = RunOut.model_validate(submitted.run)
    return Response(out, status_code=201 if submitted.created else 200)


def build_router(max_run_body_bytes: int) -> Router:
    """The agents router; run submission gets its own (larger) body limit for batch items."""
    submit_handler = post(
        "/{name:str}/runs", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT,
        summary="Submit a run of the agent's latest version",
        description="With an Idempotency-Key header, the same key always returns the same run (201 when created, "
                    "200 when it already existed); a different request under the same key is 409. For an agent "
                    "whose rehearsal policy requires it, the newest version that passed a rehearsal runs, and an "
                    "explicit version that has not passed one is a 409 rehearsal_required.",
        status_code=201, request_max_body_size=max_run_body_bytes)(submit)
    return Router(path="/v1/agents", route_handlers=[put_agent, validate_agent, list_agents, get_agent_route,
                                                     list_versions, get_version_route, submit_handler],
                  tags=["agents"])
