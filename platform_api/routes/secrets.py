"""A tenant's secrets: create, list metadata, rotate (stage), promote, delete. Values are write-only:
they come in through request bodies and no response ever carries one."""

from __future__ import annotations

from litestar import Router, delete, get, post
from litestar.params import FromPath, JSONBody

from platform_api.auth import ANY_TENANT_ROLE, TENANT_ADMIN
from platform_api.routes._common import CONFLICT, Cursor, Db, Limit, TenantCaller, audit, page
from platform_api.schemas.common import Page
from platform_api.schemas.secrets import CreateSecret, PromoteSecret, RotateSecret, SecretOut
from tenants.secrets import service

__all__ = ["router"]

@post("/", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT, status_code=201,
      summary="Create a secret (the value is never returned)")
def create_secret(data: JSONBody[CreateSecret], caller: TenantCaller, session: Db) -> SecretOut:
    meta = service.create_secret(session, caller.tenant_id, data.name, data.value, max_age_days=data.max_age_days,
                                 grace_seconds=data.grace_seconds)
    audit(session, caller, "secret.created", data.name,
           details={"version": meta.current_version})
    return SecretOut.of(meta)


@get("/", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="List secrets: metadata only, never values")
def list_secrets(caller: TenantCaller, session: Db, limit: Limit = 100, cursor: Cursor = None) -> Page[SecretOut]:
    data = [SecretOut.of(m) for m in service.list_secrets(session, caller.tenant_id, after=cursor, limit=limit)]
    return page(data, limit, lambda v: v.name)


@get("/{name:str}", opt=ANY_TENANT_ROLE, sync_to_thread=True, summary="A secret's metadata (never its value)")
def get_secret(name: FromPath[str], caller: TenantCaller, session: Db) -> SecretOut:
    return SecretOut.of(service.secret_metadata(session, caller.tenant_id, name))


@post("/{name:str}/rotate", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT, status_code=201,
      summary="Stage a new value as pending; the current value keeps working until promote")
def rotate_secret(name: FromPath[str], data: JSONBody[RotateSecret], caller: TenantCaller, session: Db) -> SecretOut:
    meta = service.rotate_secret(session, caller.tenant_id, name, data.value)
    audit(session, caller, "secret.rotated", name,
           details={"pending_version": meta.pending_version})
    return SecretOut.of(meta)


@post("/{name:str}/promote", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT, status_code=200,
      summary="Make the pending value current; the old one works as previous for grace_seconds")
def promote_secret(name: FromPath[str], caller: TenantCaller, session: Db,
                   data: JSONBody[PromoteSecret | None] = None) -> SecretOut:
    body = data or PromoteSecret()
    # verify_with_tool (reserved, must be null): verification through a tool would (1) read the pending version
    # number, (2) outside any transaction, call the tool with get_secret(tenant, name, which="pending"), (3)
    # promote with expected_version set to the verified version. It needs the runner's tool client.
    meta = service.promote_secret(session, caller.tenant_id, name, expected_version=body.version)
    audit(session, caller, "secret.promoted", name,
           details={"version": meta.current_version})
    return SecretOut.of(meta)


@delete("/{name:str}", opt=TENANT_ADMIN, sync_to_thread=True, status_code=204,
        summary="Delete a secret and wipe its values")
def delete_secret(name: FromPath[str], caller: TenantCaller, session: Db) -> None:
    service.delete_secret(session, caller.tenant_id, name)
    audit(session, caller, "secret.deleted", name)


router = Router(path="/v1/secrets", tags=["secrets"],
                route_handlers=[create_secret, list_secrets, get_secret, rotate_secret, promote_secret, delete_secret])
