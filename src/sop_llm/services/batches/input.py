"""Reading a batch input file: one JSON request per line, `{"custom_id", "method": "POST", "url", "body"}`. A line
that cannot be run gets an error naming its line number and why; the other lines run. Blank lines are skipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
CUSTOM_ID_MAX = 512


@dataclass(frozen=True, slots=True)
class InputLine:
    line: int  # 1-based
    custom_id: str | None
    body: dict[str, Any] | None  # None when the line cannot be run
    error: dict[str, Any] | None = None  # {code, message, param, line} when it cannot


def _refused(line: int, custom_id: str | None, code: str, message: str, param: str | None = None) -> InputLine:
    error = {"code": code, "message": f"line {line}: {message}", "param": param, "line": line}
    return InputLine(line, custom_id, None, error)


def _read_line(number: int, raw: bytes, endpoint: str, seen: set[str]) -> InputLine:
    try:
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _refused(number, None, "invalid_json", f"is not valid JSON ({exc})")
    if not isinstance(request, dict):
        return _refused(number, None, "invalid_json", "is not a JSON object")
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > CUSTOM_ID_MAX:
        return _refused(
            number,
            None,
            "missing_custom_id",
            f"needs `custom_id`, a string of 1 to {CUSTOM_ID_MAX} characters, to match its result to it",
            "custom_id",
        )
    if custom_id in seen:
        return _refused(number, custom_id, "duplicate_custom_id", f"custom_id '{custom_id}' is used by an earlier line")
    seen.add(custom_id)
    if request.get("method", "POST") != "POST":
        return _refused(number, custom_id, "invalid_method", "`method` must be POST", "method")
    if request.get("url") != endpoint:
        return _refused(number, custom_id, "mismatched_url", f"`url` must be the batch's endpoint '{endpoint}'", "url")
    body = request.get("body")
    if not isinstance(body, dict):
        return _refused(number, custom_id, "invalid_body", "`body` must be a JSON object (the request)", "body")
    if body.get("stream"):
        return _refused(number, custom_id, "invalid_body", "`body.stream` cannot be true in a batch", "body.stream")
    return InputLine(number, custom_id, body)


def read_input(data: bytes, endpoint: str) -> list[InputLine]:
    seen: set[str] = set()
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            lines.append(_read_line(number, raw, endpoint, seen))
    return lines
