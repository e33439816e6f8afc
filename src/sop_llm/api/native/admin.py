"""API keys, admin scope only: create (the key is in this answer and nowhere else), list, revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sop_llm.api.contracts import answers
from sop_llm.api.deps import ServicesDep
from sop_llm.api.native.answers import ApiKey, ApiKeys, NewApiKey
from sop_llm.api.native.errors import NATIVE_ERRORS
from sop_llm.api.request_state import require_admin
from sop_llm.api.responses import json_response
from sop_llm.services.auth.model import ApiKeyRow
from sop_llm.services.auth.principal import Scope

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)], responses=NATIVE_ERRORS)


class KeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    scope: Scope = "user"


def key_view(row: ApiKeyRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "scope": row.scope,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@router.post("/admin/keys", status_code=201, responses=answers(NewApiKey, "The new key", status=201))
async def create_key(body: KeyBody, services: ServicesDep) -> Response:
    row, key = await services.auth.keys.create(body.name, body.scope)
    return json_response({**key_view(row), "key": key, "note": "shown once; only a hash is stored"}, 201)


@router.get("/admin/keys", responses=answers(ApiKeys, "Every key, revoked ones included"))
async def list_keys(services: ServicesDep) -> Response:
    return json_response({"keys": [key_view(row) for row in await services.auth.keys.list()]})


@router.delete("/admin/keys/{key_id}", responses=answers(ApiKey, "The key, revoked"))
async def revoke_key(key_id: str, services: ServicesDep) -> Response:
    return json_response(key_view(await services.auth.keys.revoke(key_id)))
