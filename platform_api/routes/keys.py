"""A tenant's API keys: create (shown once), list, rotate (successor shown once, old key expires after a
grace), revoke."""

from __future__ import annotations

from litestar import Router, delete, get, post
from litestar.params import FromPath, JSONBody

from platform_api.auth import TENANT_ADMIN
from platform_api.routes._common import CONFLICT, Cursor, Db, Limit, TenantCaller, audit, expiry_change, page
from platform_api.schemas.accounts import CreateKey, IssuedKeyOut, KeyOut, RotateKey
from platform_api.schemas.common import Page
from tenants.accounts.repository import ApiKeyRepository
from tenants.accounts.service import issue_key, rotate_key
from tenants.accounts.service import revoke_key as revoke_key_

__all__ = ["router"]


@post("/", opt=TENANT_ADMIN, sync_to_thread=True, summary="Create an API key; the key is in this response only")
def create_key(data: JSONBody[CreateKey], caller: TenantCaller, session: Db) -> IssuedKeyOut:
    issued = issue_key(session, caller.tenant_id, data.role, data.name,
                       rate_limit_per_minute=data.rate_limit_per_minute)
    audit(session, caller, "key.created", issued.key.id,
           details={"role": issued.key.role, "name": issued.key.name, "prefix": issued.key.prefix})
    return IssuedKeyOut(**KeyOut.model_validate(issued.key).model_dump(), key=issued.plaintext)


@get("/", opt=TENANT_ADMIN, sync_to_thread=True, summary="List API keys (never their values)")
def list_keys(caller: TenantCaller, session: Db, limit: Limit = 100, cursor: Cursor = None) -> Page[KeyOut]:
    data = [KeyOut.model_validate(k) for k in ApiKeyRepository(session, caller.tenant_id).list(after=cursor,
                                                                                           limit=limit)]
    return page(data, limit, lambda v: v.id)


@post("/{key_id:str}/rotate", opt=TENANT_ADMIN, sync_to_thread=True, responses=CONFLICT, status_code=201,
      summary="Rotate an API key: a new key (same role and name, shown once); the old one expires after the grace")
def rotate(key_id: FromPath[str], caller: TenantCaller, session: Db,
           data: JSONBody[RotateKey | None] = None) -> IssuedKeyOut:
    body = data or RotateKey()
    issued = rotate_key(session, caller.tenant_id, key_id, body.grace_seconds)
    audit(session, caller, "key.rotated", key_id,
           details={"new_key": issued.key.id, "grace_seconds": body.grace_seconds, **expiry_change(issued)})
    return IssuedKeyOut(**KeyOut.model_validate(issued.key).model_dump(), key=issued.plaintext)


@delete("/{key_id:str}", opt=TENANT_ADMIN, sync_to_thread=True, summary="Revoke an API key", status_code=204)
def revoke_key(key_id: FromPath[str], caller: TenantCaller, session: Db) -> None:
    revoke_key_(session, caller.tenant_id, key_id)
    audit(session, caller, "key.revoked", key_id)


router = Router(path="/v1/keys", route_handlers=[create_key, list_keys, rotate, revoke_key], tags=["keys"])
