"""A corpus of realistic broken model outputs. Each case has a schema and the expected object; it must
either repair locally to exactly that schema-valid object, or be escalated to the fixer model — the test asserts
which, so a change in json-repair or in our steps that moves a case is seen."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from sop_llm.services.structured.steps import run_local

pytestmark = pytest.mark.unit

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
STRICT_PERSON = {**PERSON, "additionalProperties": False}
PRODUCT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "title": {"type": "string"},
        "price": {"type": "number"},
        "in_stock": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["id", "title", "price", "in_stock", "tags"],
    "additionalProperties": False,
}
ORDER = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "status": {"enum": ["pending", "shipped", "delivered"]},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                "required": ["sku", "qty"],
            },
        },
    },
    "required": ["order_id", "status", "items"],
}
TAGS = {"type": "array", "items": {"type": "string"}}
BOB = {"name": "Bob", "age": 42}
LAMP = {"id": 7, "title": "Desk lamp", "price": 19.99, "in_stock": True, "tags": ["home", "light"]}
ORDER_OK = {"order_id": "A-1", "status": "shipped", "items": [{"sku": "X1", "qty": 2}]}

LOCAL = "local"
FIXER = "fixer"

# (id, model output, schema, expected object or None when escalated, expected path)
CASES: list[tuple[str, str, dict[str, Any] | None, Any, str]] = [
    ("clean", '{"name": "Bob", "age": 42}', PERSON, BOB, LOCAL),
    ("code-fence", '```json\n{"name": "Bob", "age": 42}\n```', PERSON, BOB, LOCAL),
    ("bare-fence", '```\n{"name": "Bob", "age": 42}\n```', PERSON, BOB, LOCAL),
    ("prose-before", 'Sure! Here is the JSON you asked for: {"name": "Bob", "age": 42}', PERSON, BOB, LOCAL),
    ("prose-around", 'Here you go:\n{"name": "Bob", "age": 42}\nLet me know if you need more.', PERSON, BOB, LOCAL),
    ("trailing-comma-object", '{"name": "Bob", "age": 42,}', PERSON, BOB, LOCAL),
    (
        "trailing-comma-array",
        '{"id": 7, "title": "Desk lamp", "price": 19.99, "in_stock": true, "tags": ["home", "light",]}',
        PRODUCT,
        LAMP,
        LOCAL,
    ),
    ("single-quotes", "{'name': 'Bob', 'age': 42}", PERSON, BOB, LOCAL),
    ("unquoted-keys", '{name: "Bob", age: 42}', PERSON, BOB, LOCAL),
    ("line-comment", '{\n  "name": "Bob", // the user\n  "age": 42\n}', PERSON, BOB, LOCAL),
    ("block-comment", '{"name": "Bob", /* years */ "age": 42}', PERSON, BOB, LOCAL),
    (
        "python-literals",
        "{'id': 7, 'title': 'Desk lamp', 'price': 19.99, 'in_stock': True, 'tags': ['home', 'light']}",
        PRODUCT,
        LAMP,
        LOCAL,
    ),
    ("python-none", '{"name": "Bob", "age": 42, "nickname": None}', PERSON, {**BOB, "nickname": None}, LOCAL),
    ("truncated-object", '{"name": "Bob", "age": 42', PERSON, BOB, LOCAL),
    (
        "truncated-array",
        '{"id": 7, "title": "Desk lamp", "price": 19.99, "in_stock": true, "tags": ["home", "light"',
        PRODUCT,
        LAMP,
        LOCAL,
    ),
    ("truncated-in-string", '{"age": 42, "name": "Bob', PERSON, BOB, LOCAL),
    ("string-for-integer", '{"name": "Bob", "age": "42"}', PERSON, BOB, LOCAL),
    (
        "string-for-number",
        '{"id": 7, "title": "Desk lamp", "price": "19.99", "in_stock": true, "tags": ["home", "light"]}',
        PRODUCT,
        LAMP,
        LOCAL,
    ),
    (
        "string-for-boolean",
        '{"id": 7, "title": "Desk lamp", "price": 19.99, "in_stock": "true", "tags": ["home", "light"]}',
        PRODUCT,
        LAMP,
        LOCAL,
    ),
    (
        "number-for-string",
        '{"order_id": 12, "status": "shipped", "items": [{"sku": "X1", "qty": 2}]}',
        ORDER,
        {**ORDER_OK, "order_id": "12"},
        LOCAL,
    ),
    ("extra-keys-forbidden", '{"name": "Bob", "age": 42, "email": "bob@example.com"}', STRICT_PERSON, BOB, LOCAL),
    ("extra-keys-allowed", '{"name": "Bob", "age": 42, "email": "b@x.io"}', PERSON, {**BOB, "email": "b@x.io"}, LOCAL),
    (
        "nested-string-qty",
        '{"order_id": "A-1", "status": "shipped", "items": [{"sku": "X1", "qty": "2"}]}',
        ORDER,
        ORDER_OK,
        LOCAL,
    ),
    (
        "nested-trailing-commas",
        '{"order_id": "A-1", "status": "shipped", "items": [{"sku": "X1", "qty": 2,},],}',
        ORDER,
        ORDER_OK,
        LOCAL,
    ),
    ("newlines-and-tabs", '{\n\t"name":\t"Bob",\n\t"age":\t42\n}\n\n', PERSON, BOB, LOCAL),
    ("array-root-fenced", '```json\n["a", "b", "c"]\n```', TAGS, ["a", "b", "c"], LOCAL),
    ("array-root-truncated", '["a", "b", "c"', TAGS, ["a", "b", "c"], LOCAL),
    ("no-schema-object", 'Answer: {"ok": true}', None, {"ok": True}, LOCAL),
    (
        "escaped-quotes",
        '{"name": "Bob \\"the builder\\"", "age": 42}',
        PERSON,
        {"name": 'Bob "the builder"', "age": 42},
        LOCAL,
    ),
    ("unicode", '{"name": "Zoë", "age": 42}', PERSON, {"name": "Zoë", "age": 42}, LOCAL),
    ("missing-required", '{"name": "Bob"}', PERSON, None, FIXER),
    ("words-for-integer", '{"name": "Bob", "age": "forty-two"}', PERSON, None, FIXER),
    ("float-for-integer", '{"name": "Bob", "age": 42.5}', PERSON, None, FIXER),
    (
        "enum-violation",
        '{"order_id": "A-1", "status": "maybe", "items": [{"sku": "X1", "qty": 2}]}',
        ORDER,
        None,
        FIXER,
    ),
    ("nested-missing-field", '{"order_id": "A-1", "status": "shipped", "items": [{"sku": "X1"}]}', ORDER, None, FIXER),
    (
        "nested-below-minimum",
        '{"order_id": "A-1", "status": "shipped", "items": [{"sku": "X1", "qty": 0}]}',
        ORDER,
        None,
        FIXER,
    ),
    ("empty-items", '{"order_id": "A-1", "status": "shipped", "items": []}', ORDER, None, FIXER),
    ("prose-only", "I'm sorry, I cannot produce JSON for that request.", PERSON, None, FIXER),
    ("empty-output", "", PERSON, None, FIXER),
    ("wrong-root-type", '["Bob", 42]', PERSON, None, FIXER),
    ("truncated-before-value", '{"name": "Bob", "age":', PERSON, None, FIXER),
    ("not-object-without-schema", "42", None, None, FIXER),
    ("object-for-array", '{"tags": ["a", "b"]}', TAGS, None, FIXER),
    ("yaml-instead", "name: Bob\nage: 42", PERSON, None, FIXER),
]


def _valid_as_is(output: str, schema: dict[str, Any] | None) -> bool:
    """Judged independently of the pipeline: plain json.loads plus jsonschema."""
    try:
        value = json.loads(output)
    except json.JSONDecodeError:
        return False
    return schema is None or jsonschema.Draft202012Validator(schema).is_valid(value)


def test_the_corpus_is_big_and_covers_both_paths() -> None:
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
    assert {c[4] for c in CASES} == {LOCAL, FIXER}


@pytest.mark.parametrize(("output", "schema", "expected", "path"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_case_repairs_locally_or_escalates(
    output: str, schema: dict[str, Any] | None, expected: Any, path: str
) -> None:
    result = run_local(output, schema)
    if path == LOCAL:
        assert result.ok, result.errors
        assert result.value == expected
        assert result.provenance == ("parsed" if _valid_as_is(output, schema) else "repaired_locally")
    else:
        assert not result.ok, f"expected escalation, got {result.value!r}"
        assert result.errors  # the fixer is told what is wrong
