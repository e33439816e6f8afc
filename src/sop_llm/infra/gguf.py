"""A GGUF file's metadata (its key-value header), read without loading the model.

The header holds the architecture, the training context length, the layer and head counts and the chat template.
Large arrays (the tokenizer's tokens and merges) are stepped over, not decoded, so reading the header of a
multi-gigabyte model takes milliseconds.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"GGUF"
# Value types: scalar struct formats by type id; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
SPLIT_GGUF = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class GGUFHeaderError(ValueError):
    """The file is not a GGUF file, or its header is cut short."""


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Every key of the header with its value; an array is given as its `GGUFArray` (type and length) only."""
    with open(path, "rb") as file:
        try:
            view = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # an empty file
            raise GGUFHeaderError(f"{path}: not a GGUF file (empty)") from exc
        with view:
            try:
                return _Reader(view).header()
            except (struct.error, IndexError, UnicodeDecodeError) as exc:
                raise GGUFHeaderError(f"{path}: the GGUF header is cut short or damaged") from exc


@dataclass(frozen=True, slots=True)
class GGUFArray:
    item_type: int
    count: int


class _Reader:
    def __init__(self, data: mmap.mmap) -> None:
        self._data = data
        self._at = 0

    def header(self) -> dict[str, Any]:
        if self._data[:4] != MAGIC:
            raise GGUFHeaderError("not a GGUF file (no GGUF magic)")
        self._at = 4
        version = self._scalar("I")
        if version < 2:
            raise GGUFHeaderError(f"GGUF version {version} is too old (2 or later is read)")
        self._scalar("Q")  # tensor count
        count = self._scalar("Q")
        metadata: dict[str, Any] = {}
        for _ in range(count):
            key = self._string()
            metadata[key] = self._value(self._scalar("I"))
        return metadata

    def _scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from("<" + fmt, self._data, self._at)
        self._at += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        size = self._scalar("Q")
        text = bytes(self._data[self._at : self._at + size]).decode("utf-8")
        self._at += size
        return text

    def _value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self._scalar(_SCALARS[kind])
        if kind == _STRING:
            return self._string()
        if kind == _ARRAY:
            item, count = self._scalar("I"), self._scalar("Q")
            self._skip(item, count)
            return GGUFArray(item, count)
        raise GGUFHeaderError(f"unknown GGUF value type {kind}")

    def _skip(self, kind: int, count: int) -> None:
        if kind in _SCALARS:
            self._at += struct.calcsize("<" + _SCALARS[kind]) * count
        elif kind == _STRING:
            for _ in range(count):
                (size,) = struct.unpack_from("<Q", self._data, self._at)
                self._at += 8 + size
        else:
            for _ in range(count):
                self._value(kind)


@dataclass(frozen=True, slots=True)
class GGUFShape:
    """What the header says about a model's size in memory and its defaults."""

    architecture: str
    context_length: int | None  # the context it was trained for
    layers: int
    embedding: int
    heads: int
    kv_heads: int
    chat_template: str | None
    vocabulary: int = 0  # tokens in the vocabulary (0: the header does not say)

    def kv_bytes_per_token(self) -> int:
        """f16 keys and values for every layer, as llama.cpp allocates its KV cache by default."""
        head_dim = self.embedding // max(1, self.heads)
        return 2 * self.layers * self.kv_heads * head_dim * 2


def model_shape(path: str | Path) -> GGUFShape:
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture", ""))

    def number(key: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{key}", default)
        return int(value) if isinstance(value, int | float) else default

    heads = number("attention.head_count", 1)
    context = number("context_length")
    template = meta.get("tokenizer.chat_template")
    tokens = meta.get("tokenizer.ggml.tokens")
    return GGUFShape(
        architecture=arch,
        context_length=context or None,
        layers=number("block_count"),
        embedding=number("embedding_length"),
        heads=heads,
        kv_heads=number("attention.head_count_kv", heads),
        chat_template=template if isinstance(template, str) else None,
        vocabulary=number("vocab_size") or (tokens.count if isinstance(tokens, GGUFArray) else 0),
    )


def gguf_parts(path: str | Path) -> list[Path]:
    """The files of a GGUF model: the file, or every part of a split one (`name-00001-of-00003.gguf`)."""
    first = Path(path)
    split = SPLIT_GGUF.search(first.name)
    if split is None:
        return [first]
    stem = first.name[: split.start()]
    return [first.with_name(f"{stem}-{i:05d}-of-{split.group(2)}.gguf") for i in range(1, int(split.group(2)) + 1)]
