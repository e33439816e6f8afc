"""OpenAI's list envelope, `{"object": "list", "data": [...]}`, the one way every list in OpenAI's shape is built
(models, embeddings, files, batches, a response's input items, a batch's errors). A page of a longer list also says
where it starts and ends (`first_id`, `last_id`: the `id` of its first and last object) and whether more follow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def openai_list(data: Sequence[Any], **extra: Any) -> dict[str, Any]:
    """The whole list `data`, with `extra` fields after it (e.g. an embeddings answer's `model` and `usage`)."""
    return {"object": "list", "data": data, **extra}


def openai_page(data: Sequence[Mapping[str, Any]], has_more: bool) -> dict[str, Any]:
    """One page of a list: `data`, the ids it starts and ends with (null when empty) and `has_more`."""
    return openai_list(
        data,
        first_id=data[0]["id"] if data else None,
        last_id=data[-1]["id"] if data else None,
        has_more=has_more,
    )
