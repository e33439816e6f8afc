"""A finished batch's two result files, in OpenAI's line format: the output file holds the lines answered with a
2xx, the error file every other line (an error answer, or a line that could not be run), each as
`{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null, "error": {"code", "message"} | null}`,
in input order."""

from __future__ import annotations

from typing import Any

import orjson

from sop_llm.services.batches.model import BatchLineRow


def result_line(batch_id: str, row: BatchLineRow) -> dict[str, Any]:
    response = None
    if row.status_code is not None:
        response = {"status_code": row.status_code, "request_id": row.request_id, "body": row.response}
    return {
        "id": f"batch_req_{batch_id.removeprefix('batch_')}_{row.seq}",
        "custom_id": row.custom_id,
        "response": response,
        "error": row.error,
    }


def succeeded(row: BatchLineRow) -> bool:
    return row.status_code is not None and 200 <= row.status_code < 300


class ResultFiles:
    """Collects the two files' contents line by line."""

    def __init__(self, batch_id: str) -> None:
        self._batch_id = batch_id
        self.output = bytearray()
        self.errors = bytearray()

    def add(self, row: BatchLineRow) -> None:
        target = self.output if succeeded(row) else self.errors
        target += orjson.dumps(result_line(self._batch_id, row))
        target += b"\n"
