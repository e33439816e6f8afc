"""The deterministic steps of the JSON pipeline, each small and testable alone:
`json.loads` → local repair with `json-repair` (code fences, prose around the JSON, trailing commas, quotes,
comments, Python literals, truncation) → JSON-Schema validation. No model is involved here. jsonschema is imported
with the first schema, not when the server starts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from json_repair import repair_json

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

from sop_llm.infra.errors import BadRequestError

Provenance = Literal["parsed", "repaired_locally"]
_NOTHING = object()


@dataclass
class LocalResult:
    """What the local steps made of a text: a valid value with its provenance, or the problems left."""

    value: Any = None
    provenance: Provenance | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.provenance is not None


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator
    from referencing import Registry

    # An empty registry: a `$ref` is resolved inside the schema only, never fetched from a URL the request names.
    return Draft202012Validator(json.loads(schema_text), registry=Registry())


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A cached validator; an invalid schema is the caller's mistake (400), said plainly."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    text = json.dumps(schema, sort_keys=True)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise BadRequestError(f"the JSON schema is invalid: {exc.message}", param="schema") from None
    for ref in _refs(schema):
        if not ref.startswith("#"):
            raise BadRequestError(
                f"the JSON schema refers to '{ref[:200]}'; only references inside the schema (#/$defs/…) are "
                "followed: include the referenced schema under $defs",
                param="schema",
            )
    return _validator(text)


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k in ("$ref", "$dynamicRef") and isinstance(v, str)]
        return found + [ref for v in value.values() for ref in _refs(v)]
    if isinstance(value, list):
        return [ref for v in value for ref in _refs(v)]
    return []


def schema_errors(value: Any, schema: dict[str, Any] | None) -> list[str]:
    """Validator messages, each prefixed with where in the value it applies (empty when valid)."""
    if schema is None:
        return [] if isinstance(value, dict | list) else ["expected a JSON object or array"]
    from referencing.exceptions import Unresolvable

    try:
        found = list(validator_for(schema).iter_errors(value))
    except Unresolvable as exc:
        raise BadRequestError(f"the JSON schema has a reference that leads nowhere: {exc}", param="schema") from None
    errors = sorted(found, key=lambda e: [str(p) for p in e.absolute_path])
    # jsonschema quotes the offending value in its message, which can be the whole (long) answer: cap it.
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}" for e in errors[:20]]


def parse_strict(text: str) -> Any:
    """`json.loads`, refusing NaN/Infinity (not JSON); returns _NOTHING when the text is not JSON."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError):
        return _NOTHING


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def repair_locally(text: str) -> Any:
    """The json-repair library's best reading of the text, or _NOTHING when it finds no JSON in it."""
    try:
        value = repair_json(text, return_objects=True, skip_json_loads=True)
    except Exception:  # json-repair is best-effort; any failure just means "not repairable here"
        return _NOTHING
    if value in ("", None) or _has_non_finite(value):
        return _NOTHING
    return value


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


_SCALARS: dict[str, Any] = {"true": True, "false": False}


def coerce_to_schema(value: Any, schema: dict[str, Any]) -> Any:
    """Deterministic, schema-guided fixes a reader would agree with: "42" → 42 where an integer is wanted,
    "true" → true where a boolean is, 7 → "7" where a string is, and keys dropped where the schema forbids
    extra ones. Anything ambiguous is left for validation to report."""
    kind = schema.get("type")
    if isinstance(value, dict) and (kind == "object" or "properties" in schema):
        properties = schema.get("properties", {})
        fixed = {k: coerce_to_schema(v, properties[k]) if k in properties else v for k, v in value.items()}
        if schema.get("additionalProperties") is False:
            fixed = {k: v for k, v in fixed.items() if k in properties}
        return fixed
    if isinstance(value, list) and kind == "array" and isinstance(schema.get("items"), dict):
        return [coerce_to_schema(item, schema["items"]) for item in value]
    if isinstance(value, str):
        text = value.strip()
        if kind == "integer" and text.lstrip("-").isdigit():
            return int(text)
        if kind == "number":
            try:
                number = float(text)
            except ValueError:
                return value
            return int(number) if number.is_integer() and "." not in text else number
        if kind == "boolean" and text.lower() in _SCALARS:
            return _SCALARS[text.lower()]
    if kind == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def run_local(text: str, schema: dict[str, Any] | None) -> LocalResult:
    """Parse, else repair; then validate, coercing to the schema if that is all that is wrong. The result says
    which step produced the valid value."""
    value = parse_strict(text.strip())
    if value is not _NOTHING:
        errors = schema_errors(value, schema)
        if not errors:
            return LocalResult(value, "parsed")
    else:
        value = repair_locally(text)
        if value is _NOTHING:
            return LocalResult(errors=["no JSON found in the text"])
        errors = schema_errors(value, schema)
        if not errors:
            return LocalResult(value, "repaired_locally")
    if schema is not None:
        coerced = coerce_to_schema(value, schema)
        if not schema_errors(coerced, schema):
            return LocalResult(coerced, "repaired_locally")
    return LocalResult(errors=errors)
