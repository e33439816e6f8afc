"""The app's OpenAPI schema (what `/openapi.json` serves) as a contract: a valid OpenAPI 3.1 document, where every
operation says what it answers on success and that its errors come in its surface's own shape — never FastAPI's
`{"detail": …}`, which the service does not send. tests/integration/test_fuzz.py checks real answers against it."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from sop_llm.api.anthropic.errors import anthropic_body
from sop_llm.api.native.errors import native_body
from sop_llm.api.ollama.errors import ollama_body
from sop_llm.api.openai.errors import openai_body
from sop_llm.app import create_app
from sop_llm.infra.errors import AppError, JSONFixFailedError, ModelChoiceError, ModelNotFoundError, OverloadedError
from tests.live_server import make_settings

pytestmark = pytest.mark.unit

REF = "#/components/schemas/"
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(make_settings()).openapi()  # nothing started, no model loaded
    return schema


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, path, ops[m]) for path, ops in spec["paths"].items() for m in METHODS if m in ops]


def _error_shape(path: str) -> str:
    """The error body each surface answers with (api/errors.py picks it by path)."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "AnthropicError"
    if path.startswith("/v1/"):
        return "OpenAIError"
    if path.startswith("/api/") and not path.startswith("/api/v1/"):
        return "OllamaError"
    return "NativeError"


def _validator(spec: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": REF + name, "components": spec["components"]})


def test_the_schema_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    problems = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in OpenAPIV31SpecValidator(spec).iter_errors()
    ]
    assert not problems, "\n".join(problems[:20])


def test_every_operation_declares_its_success_body(spec: dict[str, Any]) -> None:
    undeclared = []
    for method, path, operation in _operations(spec):
        successes = {code: r for code, r in operation["responses"].items() if code.startswith("2")}
        if not successes:
            undeclared.append(f"{method.upper()} {path}: no 2xx answer")
        for code, response in successes.items():
            for media_type, media in response.get("content", {}).items():
                if not media.get("schema"):  # `{}` says nothing: FastAPI's default for a route that returns a Response
                    undeclared.append(f"{method.upper()} {path} {code} {media_type}: empty schema")
    assert not undeclared, "\n".join(undeclared)


def test_streaming_operations_declare_their_stream(spec: dict[str, Any]) -> None:
    streams = {
        ("post", "/v1/chat/completions"): "text/event-stream",
        ("post", "/v1/completions"): "text/event-stream",
        ("post", "/v1/responses"): "text/event-stream",
        ("post", "/v1/messages"): "text/event-stream",
        ("post", "/api/v1/models/generate"): "text/event-stream",
        ("post", "/api/v1/models/pull"): "text/event-stream",
        ("post", "/api/chat"): "application/x-ndjson",
        ("post", "/api/generate"): "application/x-ndjson",
        ("post", "/api/pull"): "application/x-ndjson",
    }
    for (method, path), media_type in streams.items():
        content = spec["paths"][path][method]["responses"]["200"]["content"]
        assert set(content) == {"application/json", media_type}, (method, path)


def test_errors_are_declared_in_each_surface_shape(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    wrong = []
    for method, path, operation in _operations(spec):
        for code in ("4XX", "5XX"):
            schema = operation["responses"].get(code, {}).get("content", {}).get("application/json", {}).get("schema")
            refs = [option.get("$ref") for option in schema.get("anyOf", [schema])] if schema else []
            if REF + _error_shape(path) not in refs:
                wrong.append(f"{method.upper()} {path} {code}: {schema}")
        if "422" in operation["responses"]:
            wrong.append(f"{method.upper()} {path}: FastAPI's 422")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "error",
    [
        ModelNotFoundError("no model named 'x'", param="model"),
        OverloadedError("busy", retry_after=2.0),
        ModelChoiceError("which one?", details={"choices": ["a.gguf", "b.gguf"]}),
        JSONFixFailedError("no valid JSON", details={"attempts": [{"stage": "parse", "errors": ["bad"]}]}),
        AppError("a bug"),
    ],
)
def test_the_declared_error_shapes_are_the_bodies_the_service_sends(spec: dict[str, Any], error: AppError) -> None:
    bodies = {
        "OpenAIError": openai_body(error),
        "NativeError": native_body(error),
        "AnthropicError": anthropic_body(error),
        "OllamaError": ollama_body(error),
    }
    for name, body in bodies.items():
        problems = [e.message for e in _validator(spec, name).iter_errors(body)]
        assert not problems, (name, body, problems)
