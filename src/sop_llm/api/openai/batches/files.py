"""OpenAI's Files API, for batch input and results: POST /v1/files (multipart: `file`, `purpose`), GET /v1/files,
GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}. Each caller sees only their own files."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.responses import Response, StreamingResponse

from sop_llm.api.contracts import answers, raw_answer
from sop_llm.api.deps import ServicesDep
from sop_llm.api.openai.answers import Deleted, FileList, FileObject
from sop_llm.api.openai.errors import OPENAI_ERRORS
from sop_llm.api.request_state import principal_of
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import BadRequestError, PayloadTooLargeError
from sop_llm.infra.lists import openai_page
from sop_llm.services.batches.views import file_view

router = APIRouter(tags=["batches"], responses=OPENAI_ERRORS)

COPY_CHUNK = 1024 * 1024


UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["batch"]},
                    },
                }
            }
        },
    }
}


@router.post("/files", openapi_extra=UPLOAD_FORM, responses=answers(FileObject, "The stored file"))
async def upload_file(request: Request, services: ServicesDep) -> Response:
    """Multipart form: `file` (a JSONL file, one request per line) and `purpose` (`batch`)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequestError("send the file as multipart/form-data with the fields `file` and `purpose`")
    async with request.form(max_files=1, max_fields=8) as form:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise BadRequestError("file: missing; attach the file as the form field `file`", param="file")
        if not isinstance(purpose, str) or not purpose:
            raise BadRequestError("purpose: missing; send `purpose` = batch", param="purpose")
        limit = services.settings.files_max_bytes
        size = lines = 0
        last = b"\n"
        handle, spool = tempfile.mkstemp(prefix="upload-", suffix=".jsonl")
        try:
            with os.fdopen(handle, "wb") as out:
                while piece := await upload.read(COPY_CHUNK):
                    size += len(piece)
                    if size > limit:
                        raise PayloadTooLargeError(
                            f"file: larger than {limit} bytes (FILES_MAX_BYTES); split it into several batches",
                            param="file",
                        )
                    lines += piece.count(b"\n")
                    last = piece[-1:]
                    out.write(piece)
            row = await services.files.upload(
                Path(spool),
                size,
                lines + (last != b"\n"),
                upload.filename or "upload.jsonl",
                purpose,
                principal_of(request).subject,
            )
        finally:
            os.unlink(spool)
    return json_response(file_view(row))


@router.get("/files", responses=answers(FileList, "A page of files"))
async def list_files(
    request: Request,
    services: ServicesDep,
    purpose: str | None = None,
    limit: int = Query(10_000, ge=1, le=10_000),
    after: str | None = Query(None, max_length=64),
    order: Literal["asc", "desc"] = "desc",
) -> Response:
    rows, more = await services.files.search(principal_of(request).subject, purpose, limit, after, order == "desc")
    return json_response(openai_page([file_view(row) for row in rows], has_more=more))


@router.get("/files/{file_id}", responses=answers(FileObject, "The file"))
async def get_file(file_id: str, request: Request, services: ServicesDep) -> Response:
    return json_response(file_view(await services.files.get(file_id, principal_of(request).subject)))


@router.get(
    "/files/{file_id}/content",
    response_class=Response,
    responses=raw_answer(
        "application/octet-stream", "The file's bytes (JSONL)", {"type": "string", "format": "binary"}
    ),
)
async def file_content(file_id: str, request: Request, services: ServicesDep) -> Response:
    row, pieces = await services.files.content(file_id, principal_of(request).subject)
    return StreamingResponse(
        pieces,
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(row.bytes),
            "Content-Disposition": f'attachment; filename="{_safe(row.filename)}"',
        },
    )


def _safe(filename: str) -> str:
    """The name as a header can carry it: letters, digits, `.`, `_` and `-`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", filename) or "file"


@router.delete("/files/{file_id}", responses=answers(Deleted, "The file is gone"))
async def delete_file(file_id: str, request: Request, services: ServicesDep) -> Response:
    await services.files.delete(file_id, principal_of(request).subject)
    return json_response({"id": file_id, "object": "file", "deleted": True})
