"""What a JSON schema costs before any model runs: the limits on its size and nesting (a schema becomes a grammar
whose size follows the schema's), and a lower bound on the tokens of the smallest instance it allows, so a request
that could never fit in its `max_tokens` is refused at once instead of holding a model until it gives up.

The bound counts what no tokenizer can merge away, assuming that
- every scalar value (number, string, boolean, null) and every object key is at least one token of its own;
- a token holds at most `MAX_CHARS_PER_TOKEN` characters of a string's content.
Brackets, commas and colons are not counted (a tokenizer may fold them into a neighbour), so the bound is low:
it never refuses an answer that could fit, and it catches the schemas that cannot (`minItems: 3000` in 2,048 tokens).
"""

from __future__ import annotations

import json
import math
from typing import Any

from sop_llm.infra.errors import BadRequestError

SCHEMA_MAX_BYTES = 65_536
SCHEMA_MAX_DEPTH = 32
MAX_CHARS_PER_TOKEN = 16
# References are followed this deep; a recursive schema's smallest instance stops recursing at the first optional
# branch, so deeper chains only come from schemas that cannot be satisfied at all.
_MAX_REF_DEPTH = 64


def check_schema_size(schema: dict[str, Any], param: str) -> None:
    size = len(json.dumps(schema))
    if size > SCHEMA_MAX_BYTES:
        raise BadRequestError(
            f"{param}: the JSON schema is {size} bytes; at most {SCHEMA_MAX_BYTES} are accepted", param=param
        )
    depth = _depth(schema)
    if depth > SCHEMA_MAX_DEPTH:
        raise BadRequestError(
            f"{param}: the JSON schema nests {depth} levels deep; at most {SCHEMA_MAX_DEPTH} are accepted",
            param=param,
        )


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def min_tokens(schema: Any) -> int:
    """A lower bound on the tokens of the smallest JSON value `schema` accepts (the module docstring says how)."""
    return _Estimator(schema).tokens(schema, 0)


def check_fits(schema: dict[str, Any], max_tokens: int, param: str, cap_hint: str) -> None:
    needed = min_tokens(schema)
    if needed > max_tokens:
        raise BadRequestError(
            f"{param}: the smallest JSON this schema allows needs at least {needed} tokens, but max_tokens is "
            f"{max_tokens}; raise max_tokens ({cap_hint}) or relax minItems, minLength, minProperties or required",
            param=param,
        )


class _Estimator:
    def __init__(self, root: Any) -> None:
        self._root = root

    def tokens(self, schema: Any, depth: int) -> int:
        if not isinstance(schema, dict):
            return 1  # true, false, or something the validator refuses anyway
        if depth > _MAX_REF_DEPTH:
            return 1
        options: list[int] = []
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            options.append(self.tokens(target, depth + 1) if target is not None else 1)
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                options.append(min(self.tokens(branch, depth + 1) for branch in branches))
        branches = schema.get("allOf")
        if isinstance(branches, list) and branches:
            options.append(max(self.tokens(branch, depth + 1) for branch in branches))
        options.append(self._own(schema, depth))
        # Every keyword applies at once, so the instance is at least as large as the largest of these bounds.
        return max(options)

    def _own(self, schema: dict[str, Any], depth: int) -> int:
        if "const" in schema:
            return _literal_tokens(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return min(_literal_tokens(value) for value in enum)
        kinds = schema.get("type")
        if isinstance(kinds, str):
            kinds = [kinds]
        if not isinstance(kinds, list) or not kinds:
            return 1  # any type: `minItems` and the like only bind arrays, objects or strings, and `0` is neither
        return min(self._of_type(str(kind), schema, depth) for kind in kinds)

    def _of_type(self, kind: str, schema: dict[str, Any], depth: int) -> int:
        if kind == "string":
            return max(1, math.ceil(_int(schema.get("minLength")) / MAX_CHARS_PER_TOKEN))
        if kind == "array":
            count = _int(schema.get("minItems"))
            prefix = schema.get("prefixItems")
            prefix = prefix[:count] if isinstance(prefix, list) else []
            total = 1 + sum(self.tokens(item, depth + 1) for item in prefix)
            rest = count - len(prefix)
            return total + (rest * self.tokens(schema.get("items", True), depth + 1) if rest else 0)
        if kind == "object":
            properties = schema.get("properties")
            properties = properties if isinstance(properties, dict) else {}
            required = [name for name in schema.get("required", []) if isinstance(name, str)]
            total = 1
            for name in required:
                total += 1 + self.tokens(properties.get(name, True), depth + 1)
            extra = _int(schema.get("minProperties")) - len(required)
            return total + 2 * max(0, extra)
        return 1  # number, integer, boolean, null

    def _resolve(self, ref: Any) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None
        node: Any = self._root
        for part in ref[1:].split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node


def _literal_tokens(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(1 + _literal_tokens(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_literal_tokens(v) for v in value)
    if isinstance(value, str):
        return max(1, math.ceil(len(value) / MAX_CHARS_PER_TOKEN))
    return 1


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
