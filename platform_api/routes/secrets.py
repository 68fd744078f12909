"""A tenant's secrets: create, list metadata, rotate (stage), promote, delete. Values are write-only:
they come in through request bodies and no response ever carries one."""

from __future__ import annotations

from litestar import Router, delete, get, post
from litestar.params import FromPath, JSONBody

from platform_api.auth import require
from platform_api.routes._common import Caller, Cursor, Limit
from platform_api.schemas import Page
from tenants.accounts.service import Role
from tenants.audit.service import record
from tenants.kit.db import unit_of_work
from tenants.kit.errors import InvalidInput
from tenants.secrets import service
from tenants.secrets.schemas import CreateSecret, PromoteSecret, RotateSecret, SecretOut

__all__ = ["router"]

_READERS: tuple[Role, ...] = ("tenant-admin", "approver", "viewer")  # metadata only, never values


@post("/", sync_to_thread=True, status_code=201, summary="Create a secret (the value is never returned)")
def create_secret(data: JSONBody[CreateSecret], principal: Caller) -> SecretOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        meta = service.create_secret(session, me.tenant_id, data.name, data.value, max_age_days=data.max_age_days,
                                     grace_seconds=data.grace_seconds)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="secret.created", target=data.name,
               details={"version": meta.current_version})
    return SecretOut.of(meta)


@get("/", sync_to_thread=True, summary="List secrets: metadata only, never values")
def list_secrets(principal: Caller, limit: Limit = 100, cursor: Cursor = None) -> Page[SecretOut]:
    me = require(principal, *_READERS)
    with unit_of_work() as session:
        data = [SecretOut.of(m) for m in service.list_secrets(session, me.tenant_id, after=cursor, limit=limit)]
    return Page(data=data, next_cursor=data[-1].name if len(data) == limit else None)


@get("/{name:str}", sync_to_thread=True, summary="A secret's metadata (never its value)")
def get_secret(name: FromPath[str], principal: Caller) -> SecretOut:
    me = require(principal, *_READERS)
    with unit_of_work() as session:
        return SecretOut.of(service.secret_metadata(session, me.tenant_id, name))


@post("/{name:str}/rotate", sync_to_thread=True, status_code=201,
      summary="Stage a new value as pending; the current value keeps working until promote")
def rotate_secret(name: FromPath[str], data: JSONBody[RotateSecret], principal: Caller) -> SecretOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        meta = service.rotate_secret(session, me.tenant_id, name, data.value)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="secret.rotated", target=name,
               details={"pending_version": meta.pending_version})
        return SecretOut.of(meta)


@post("/{name:str}/promote", sync_to_thread=True, status_code=200,
      summary="Make the pending value current; the old one works as previous for grace_seconds")
def promote_secret(name: FromPath[str], principal: Caller, data: JSONBody[PromoteSecret | None] = None) -> SecretOut:
    me = require(principal, "tenant-admin")
    body = data or PromoteSecret()
    if body.verify_with_tool is not None:
        # Hook for verification through a tool: (1) read the pending version number, (2) outside any
        # transaction, call the tool with get_secret(tenant, name, which="pending"), (3) promote with
        # expected_version set to the verified version. Needs the runner's tool client; refused until then.
        raise InvalidInput("verify_with_tool is not available yet; verify the pending value yourself, then "
                           "promote with its version", field="verify_with_tool")
    with unit_of_work() as session:
        meta = service.promote_secret(session, me.tenant_id, name, expected_version=body.version)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="secret.promoted", target=name,
               details={"version": meta.current_version})
        return SecretOut.of(meta)


@delete("/{name:str}", sync_to_thread=True, status_code=204, summary="Delete a secret and wipe its values")
def delete_secret(name: FromPath[str], principal: Caller) -> None:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        service.delete_secret(session, me.tenant_id, name)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="secret.deleted", target=name)


router = Router(path="/v1/secrets", tags=["secrets"],
                route_handlers=[create_secret, list_secrets, get_secret, rotate_secret, promote_secret, delete_secret])
