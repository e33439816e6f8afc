"""A finished batch's two result files, in OpenAI's line format: the output file holds the lines answered with a
2xx, the error file every other line (an error answer, or a line that could not be run), each as
`{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null, "error": {"code", "message"} | null}`,
in input order. They are written to temporary files a page of lines at a time, so a batch of any size is never held
in memory whole; encoding and writing a page run in a worker thread, so a large batch does not hold up the event
loop (and the requests it serves) while it is finalized."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

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
    """The output and error files being written; `completed` / `failed` count their lines."""

    def __init__(self, batch_id: str) -> None:
        self._batch_id = batch_id
        self._output: IO[bytes] = tempfile.NamedTemporaryFile(prefix="batch-output-", suffix=".jsonl")  # noqa: SIM115
        self._errors: IO[bytes] = tempfile.NamedTemporaryFile(prefix="batch-errors-", suffix=".jsonl")  # noqa: SIM115
        self.completed = 0
        self.failed = 0

    async def add(self, rows: Iterable[BatchLineRow]) -> None:
        """Write lines that ran (or could not); a line the batch never got to (it was cancelled) is in neither file."""
        await asyncio.to_thread(self._write, rows)

    def _write(self, rows: Iterable[BatchLineRow]) -> None:
        for row in rows:
            if row.finished_at is None:
                continue
            ok = succeeded(row)
            (self._output if ok else self._errors).write(orjson.dumps(result_line(self._batch_id, row)) + b"\n")
            if ok:
                self.completed += 1
            else:
                self.failed += 1

    async def output(self) -> Path:
        await asyncio.to_thread(self._output.flush)
        return Path(self._output.name)

    async def errors(self) -> Path:
        await asyncio.to_thread(self._errors.flush)
        return Path(self._errors.name)

    def __enter__(self) -> ResultFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._output.close()  # deletes the temporary files
        self._errors.close()
