"""A tenant's API keys: create (shown once), list, rotate (successor shown once, old key expires after a
grace), revoke."""

from __future__ import annotations

from litestar import Router, delete, get, post
from litestar.params import FromPath, JSONBody

from platform_api.auth import require
from platform_api.routes._common import Caller, Cursor, Limit, expiry_change
from platform_api.schemas import CreateKey, IssuedKeyOut, KeyOut, Page, RotateKey
from tenants.accounts.repository import ApiKeyRepository
from tenants.accounts.service import issue_key, rotate_key
from tenants.accounts.service import revoke_key as revoke_key_
from tenants.audit.service import record
from tenants.kit.db import unit_of_work

__all__ = ["router"]


@post("/", sync_to_thread=True, summary="Create an API key; the key is in this response only")
def create_key(data: CreateKey, principal: Caller) -> IssuedKeyOut:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        issued = issue_key(session, me.tenant_id, data.role, data.name,
                           rate_limit_per_minute=data.rate_limit_per_minute)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="key.created", target=issued.key.id,
               details={"role": issued.key.role, "name": issued.key.name, "prefix": issued.key.prefix})
        return IssuedKeyOut(**KeyOut.model_validate(issued.key).model_dump(), key=issued.plaintext)


@get("/", sync_to_thread=True, summary="List API keys (never their values)")
def list_keys(principal: Caller, limit: Limit = 100, cursor: Cursor = None) -> Page[KeyOut]:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        data = [KeyOut.model_validate(k) for k in ApiKeyRepository(session, me.tenant_id).list(after=cursor,
                                                                                               limit=limit)]
    return Page(data=data, next_cursor=data[-1].id if len(data) == limit else None)


@post("/{key_id:str}/rotate", sync_to_thread=True, status_code=201,
      summary="Rotate an API key: a new key (same role and name, shown once); the old one expires after the grace")
def rotate(key_id: FromPath[str], principal: Caller, data: JSONBody[RotateKey | None] = None) -> IssuedKeyOut:
    me = require(principal, "tenant-admin")
    body = data or RotateKey()
    with unit_of_work() as session:
        issued = rotate_key(session, me.tenant_id, key_id, body.grace_seconds)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="key.rotated", target=key_id,
               details={"new_key": issued.key.id, "grace_seconds": body.grace_seconds, **expiry_change(issued)})
        return IssuedKeyOut(**KeyOut.model_validate(issued.key).model_dump(), key=issued.plaintext)


@delete("/{key_id:str}", sync_to_thread=True, summary="Revoke an API key", status_code=204)
def revoke_key(key_id: FromPath[str], principal: Caller) -> None:
    me = require(principal, "tenant-admin")
    with unit_of_work() as session:
        revoke_key_(session, me.tenant_id, key_id)
        record(session, me.tenant_id, actor=me.key_id, role=me.role, action="key.revoked", target=key_id)


router = Router(path="/v1/keys", route_handlers=[create_key, list_keys, rotate, revoke_key], tags=["keys"])
