"""Write docs/api.md, the API reference, from the app's OpenAPI schema (what `GET /openapi.json` serves).

    .venv/bin/python scripts/api_reference.py          # write docs/api.md
    .venv/bin/python scripts/api_reference.py --check  # exit 1 when docs/api.md is not what the app says (make docs)

The app is built with default settings (no `.env`, no setting from the environment) and a throwaway database and
files folder; building it starts no model and opens no connection.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "api.md"
METHODS = ("get", "post", "put", "patch", "delete")
REF = "#/components/schemas/"
# How the OpenAPI tags read as section titles; a tag not listed here is its own title.
TAG_TITLES = {
    "health": "Health",
    "models": "Models",
    "embeddings": "Embeddings and similarity",
    "rerank": "Rerank",
    "providers": "Providers",
    "json": "Structured output",
    "tasks": "Background tasks",
    "admin": "Administration",
    "monitoring": "Monitoring",
    "usage": "Usage",
    "tokenize": "Tokenizer",
    "openai": "OpenAI-compatible",
    "batches": "Files and batches",
    "anthropic": "Anthropic-compatible",
    "ollama": "Ollama",
}

Schema = dict[str, Any]


def openapi_schema() -> Schema:
    """The schema of an app built with default settings, as `/openapi.json` serves it."""
    from sop_llm.app import create_app
    from sop_llm.infra.settings import Settings

    names = {(field.alias or name).upper() for name, field in Settings.model_fields.items()}
    for key in [key for key in os.environ if key.upper() in names]:
        del os.environ[key]
    scratch = Path(tempfile.mkdtemp(prefix="sop-llm-api-reference-"))
    settings = Settings(
        _env_file=None,
        LOG_LEVEL="WARNING",
        CONFIG_DIR=str(ROOT / "config"),
        DATABASE_URL=f"sqlite+aiosqlite:///{scratch}/tasks.db",
        FILES_DIR=str(scratch / "files"),
    )
    schema: Schema = create_app(settings).openapi()
    return schema


def cell(text: object) -> str:
    """Text that fits in one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def schema_name(ref: str) -> str:
    return ref.removeprefix(REF)


def anchor(name: str) -> str:
    """The id Markdown's table of contents gives the heading `name` (a schema's own section)."""
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch in "_-")


def type_of(schema: Schema) -> str:
    """A short, readable type: `string`, `integer ≤ 16`, `array of Message`, `string | null`…"""
    if "$ref" in schema:
        name = schema_name(schema["$ref"])
        return f"[{name}](#{anchor(name)})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(type_of(option) for option in schema[key])
    if "const" in schema:
        return f"`{schema['const']!r}`"
    if "enum" in schema:
        return " \\| ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {type_of(schema.get('items', {}))}"
    if kind == "object" and "properties" in schema and "title" in schema:
        return f"object ({schema['title']})"
    if kind is None:
        return "any"
    signs = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    bounds = [f"{sign} {number(schema[key])}" for key, sign in signs.items() if key in schema]
    if abs(schema.get("maximum", 0)) >= 1e15:  # an int64 range says nothing a reader needs
        bounds = []
    return f"{kind} ({', '.join(bounds)})" if bounds else str(kind)


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def default_of(schema: Schema) -> str:
    return f"`{json.dumps(schema['default'])}`" if "default" in schema else ""


def resolve(schema: Schema, spec: Schema) -> Schema:
    if "$ref" in schema:
        resolved: Schema = spec["components"]["schemas"][schema_name(schema["$ref"])]
        return resolved
    return schema


def fields_table(schema: Schema, spec: Schema) -> list[str]:
    """One row a property: name, type, required, default, description."""
    properties: dict[str, Schema] = schema.get("properties", {})
    if not properties:
        return [f"Type: {type_of(schema)}."]
    required = set(schema.get("required", []))
    rows = ["| Field | Type | Required | Default | Description |", "|---|---|---|---|---|"]
    for name, prop in properties.items():
        rows.append(
            f"| `{name}` | {type_of(prop)} | {'yes' if name in required else ''} | {cell(default_of(prop))} "
            f"| {cell(prop.get('description', ''))} |"
        )
    if schema.get("additionalProperties") is False:
        rows += ["", "Other fields are refused."]
    return rows


def operation_section(method: str, path: str, operation: Schema, spec: Schema) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", f"**{operation.get('summary', '')}.**"]
    if operation.get("description"):
        lines += [operation["description"].strip()]
    parameters: list[Schema] = operation.get("parameters", [])
    if parameters:
        lines += ["", "| Parameter | In | Type | Required | Default |", "|---|---|---|---|---|"]
        for parameter in parameters:
            schema = parameter.get("schema", {})
            required = "yes" if parameter.get("required") else ""
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {type_of(schema)} | {required} "
                f"| {cell(default_of(schema))} |"
            )
    body = operation.get("requestBody")
    if body:
        for content_type, media in body.get("content", {}).items():
            schema = media.get("schema", {})
            named = f" — {type_of(schema)}" if "$ref" in schema else ""
            required = ", required" if body.get("required") else ""
            lines += ["", f"Request body (`{content_type}`{required}){named}:", ""]
            lines += fields_table(resolve(schema, spec), spec)
    lines += ["", "| Status | Meaning | Body |", "|---|---|---|"]
    for status, response in operation.get("responses", {}).items():
        bodies = "; ".join(body_cell(kind, media) for kind, media in response.get("content", {}).items())
        lines.append(f"| {status} | {cell(response.get('description', ''))} | {bodies} |")
    return [*lines, ""]


def body_cell(media_type: str, media: Schema) -> str:
    """A response body: its media type, and the named schema or what the schema says of itself (a stream)."""
    schema = media.get("schema", {})
    if "$ref" in schema or "anyOf" in schema:
        return f"`{media_type}` {type_of(schema)}"
    said = f": {cell(schema['description'])}" if schema.get("description") else ""
    return f"`{media_type}`{said}"


def render(spec: Schema) -> str:
    info = spec.get("info", {})
    lines = [
        "# API reference",
        "",
        "<!-- Generated by scripts/api_reference.py from the app's OpenAPI schema: edit the routes, then run it. -->",
        "",
        f"Every operation of {info.get('title', 'the service')} {info.get('version', '')}, generated from the app's",
        "`/openapi.json` (`scripts/api_reference.py`; `make docs` fails when this page and the app disagree). "
        "[Endpoints](endpoints.md) says what each one is for; a running service serves the same schema at "
        "`/openapi.json` and an interactive view at `/docs`. `4XX` and `5XX` stand for every client and server error "
        "status; each API surface answers them in its own error shape ([Errors](endpoints.md#errors)).",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, Schema]]] = {}
    for path, operations in spec["paths"].items():
        for method in METHODS:
            if method in operations:
                tag = (operations[method].get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((method, path, operations[method]))
    for tag, operations in by_tag.items():
        lines += [f"## {TAG_TITLES.get(tag, tag)}", ""]
        for method, path, operation in operations:
            lines += operation_section(method, path, operation, spec)
    lines += ["## Schemas", "", "The named parts of the request and response bodies.", ""]
    for name, schema in sorted(spec.get("components", {}).get("schemas", {}).items()):
        lines += [f"### {name}", ""]
        if schema.get("description"):
            lines += [cell(schema["description"]), ""]
        lines += [*fields_table(schema, spec), ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with docs/api.md instead of writing it")
    args = parser.parse_args()
    text = render(openapi_schema())
    if not args.check:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(ROOT)}")
        return 0
    current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else ""
    if current == text:
        return 0
    diff = difflib.unified_diff(current.splitlines(), text.splitlines(), "docs/api.md", "the app", lineterm="", n=1)
    print("\n".join(list(diff)[:60]), file=sys.stderr)
    print(
        "docs/api.md does not match the app's OpenAPI schema: run `.venv/bin/python scripts/api_reference.py`",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
