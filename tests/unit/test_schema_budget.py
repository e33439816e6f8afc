"""The smallest-answer bound of a JSON schema: low enough never to refuse an answer that fits, high enough to catch
the schemas that cannot."""

from __future__ import annotations

import pytest

from sop_llm.infra.errors import BadRequestError
from sop_llm.services.structured.budget import check_fits, check_schema_size, min_tokens

pytestmark = pytest.mark.unit

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "note": {"type": "string"}},
    "required": ["name", "age"],
}


@pytest.mark.parametrize(
    ("schema", "tokens"),
    [
        ({}, 1),
        (True, 1),
        ({"type": "integer"}, 1),
        ({"type": "string", "minLength": 5000}, 313),
        ({"minItems": 3000}, 1),  # without a type, `0` is valid: minItems only binds arrays
        ({"type": "array", "items": {"type": "integer"}, "minItems": 3000}, 3001),
        ({"type": ["array", "null"], "minItems": 3000}, 1),
        (PERSON, 1 + 2 + 2),  # braces, then each required key and its value
        ({"type": "object", "minProperties": 3}, 1 + 3 * 2),
        (
            {"type": "array", "prefixItems": [PERSON, {"type": "integer"}], "items": {"type": "null"}, "minItems": 4},
            1 + 5 + 1 + 2,
        ),
        ({"anyOf": [{"type": "array", "minItems": 50}, {"type": "integer"}]}, 1),
        ({"allOf": [{"type": "array", "minItems": 50}, {"type": "array", "minItems": 10}]}, 51),
        ({"const": {"a": [1, 2, 3]}}, 1 + 1 + 4),
        ({"enum": ["x" * 100, "y"]}, 1),
        ({"$defs": {"p": PERSON}, "type": "array", "items": {"$ref": "#/$defs/p"}, "minItems": 10}, 1 + 10 * 5),
        ({"$ref": "#/$defs/missing"}, 1),
    ],
)
def test_smallest_answer(schema: object, tokens: int) -> None:
    assert min_tokens(schema) == tokens


def test_a_recursive_schema_stops_at_its_optional_branch() -> None:
    tree = {
        "$defs": {
            "node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}
        },
        "$ref": "#/$defs/node",
    }
    assert min_tokens(tree) == 1
    required = {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}, "required": ["next"]}},
        "$ref": "#/$defs/node",
    }
    assert min_tokens(required) > 64  # cannot be satisfied: the bound grows until the depth limit, and is refused


def test_check_fits_names_the_numbers() -> None:
    check_fits({"type": "array", "minItems": 10}, 11, "schema", "cap")
    with pytest.raises(BadRequestError, match="at least 11 tokens, but max_tokens is 10"):
        check_fits({"type": "array", "minItems": 10}, 10, "schema", "cap")


def test_schema_size_and_depth_limits() -> None:
    check_schema_size(PERSON, "schema")
    with pytest.raises(BadRequestError, match="bytes"):
        check_schema_size({"description": "x" * 70_000}, "schema")
    deep: dict = {}
    for _ in range(40):
        deep = {"items": deep}
    with pytest.raises(BadRequestError, match="nests 41 levels"):
        check_schema_size(deep, "schema")
