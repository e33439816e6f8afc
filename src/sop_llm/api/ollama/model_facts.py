"""What Ollama's listings say about a model's files: size, modification time, format, architecture, parameter count,
quantization, and (GGUF) its metadata, chat template and license. Read from the files themselves — a GGUF file's
header (its parameter count from `general.size_label`; arrays such as the vocabulary are listed empty), or a model
folder's `config.json` and safetensors headers — in a worker thread, and remembered per file version (path, size
and modification time), so listing models reads each file once."""

from __future__ import annotations

import functools
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.infra.gguf import GGUFArray, read_metadata
from sop_llm.providers.local.embedded import resolve_model_path

# GGUF `general.file_type` → Ollama's name for it (its ggml FileType); removed or unused values are "unknown".
_FILE_TYPES = (
    *("F32", "F16", "Q4_0", "Q4_1", "-", "-", "-", "Q8_0", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L"),
    *("Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS", "Q2_K_S", "IQ3_XS", "IQ3_XXS", "IQ1_S"),
    *("IQ4_NL", "IQ3_S", "IQ3_M", "IQ2_S", "IQ2_M", "IQ4_XS", "IQ1_M", "BF16", "-", "-", "-", "TQ1_0", "TQ2_0"),
    *("MXFP4_MOE", "NVFP4", "Q1_0"),
)
_SIZE_LABEL = re.compile(r"(\d+(?:\.\d+)?)([KMBT])")
_SIZE_UNITS = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}
_SAFETENSORS_HEADER = struct.Struct("<Q")
# A model folder's format, by the first of these file kinds it holds.
_FOLDER_FORMATS = ((".gguf", "gguf"), (".safetensors", "safetensors"), (".onnx", "onnx"), (".bin", "pytorch"))


@dataclass(frozen=True)
class FileFacts:
    size: int = 0  # bytes on disk
    modified: float | None = None  # seconds since the epoch
    format: str = ""  # gguf, safetensors, onnx, pytorch
    family: str = ""  # the architecture: llama, bert, …
    parameter_count: int = 0
    quantization: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)  # GGUF key-value pairs (arrays listed empty)
    template: str = ""  # the chat template a GGUF file carries
    license: str = ""


def model_path(model: str) -> str | None:
    """The local file or folder a configured model id names (`embedded:<name>` resolved), or None."""
    try:
        path = resolve_model_path(model)
    except ProviderInitializationError:
        return None
    return path if os.path.exists(path) else None


def file_facts(path: str | None) -> FileFacts:
    """Blocking: call it in a worker thread."""
    if path is None:
        return FileFacts()
    stat = os.stat(path)
    return _remembered(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _remembered(path: str, size: int, mtime_ns: int) -> FileFacts:
    modified = mtime_ns / 1e9
    try:
        if os.path.isdir(path):
            return _folder(Path(path), modified)
        return _gguf(path, size, modified)
    except (OSError, ValueError) as exc:
        logger.warning("cannot read what {} holds: {}", path, exc)
        return FileFacts(size=size, modified=modified)


def _gguf(path: str, size: int, modified: float) -> FileFacts:
    meta = {key: [] if isinstance(value, GGUFArray) else value for key, value in read_metadata(path).items()}
    file_type = meta.get("general.file_type")
    quantization = "unknown"
    if isinstance(file_type, int) and 0 <= file_type < len(_FILE_TYPES) and _FILE_TYPES[file_type] != "-":
        quantization = _FILE_TYPES[file_type]
    return FileFacts(
        size=size,
        modified=modified,
        format="gguf",
        family=str(meta.get("general.architecture", "")),
        parameter_count=_labelled(meta.get("general.size_label")),
        quantization=quantization,
        metadata=meta,
        template=str(meta.get("tokenizer.chat_template", "")),
        license=str(meta.get("general.license", "")),
    )


def _labelled(label: object) -> int:
    """A parameter count from a size label such as "135M", "7B" or "8x7B" (0 when there is none)."""
    match = _SIZE_LABEL.search(label) if isinstance(label, str) else None
    if match is None:
        return 0
    experts = label.split("x", 1)[0] if isinstance(label, str) and "x" in label else "1"
    count = float(match.group(1)) * _SIZE_UNITS[match.group(2)]
    return int(count * int(experts)) if experts.isdigit() else int(count)


def _folder(folder: Path, modified: float) -> FileFacts:
    files = [p for p in folder.rglob("*") if p.is_file()]
    suffixes = {p.suffix for p in files}
    kind = next((name for suffix, name in _FOLDER_FORMATS if suffix in suffixes), "")
    config = folder / "config.json"
    family = ""
    if config.is_file():
        family = str(json.loads(config.read_text(encoding="utf-8")).get("model_type", ""))
    parameters = sum(_safetensors_parameters(p) for p in files if p.suffix == ".safetensors")
    return FileFacts(
        size=sum(p.stat().st_size for p in files),
        modified=max([modified, *(p.stat().st_mtime for p in files)]),
        format=kind,
        family=family,
        parameter_count=parameters,
    )


def _safetensors_parameters(path: Path) -> int:
    """A safetensors file starts with the length of a JSON header listing every tensor's shape."""
    with path.open("rb") as file:
        (length,) = _SAFETENSORS_HEADER.unpack(file.read(_SAFETENSORS_HEADER.size))
        if length > 1 << 27:
            raise ValueError(f"{path}: a safetensors header of {length} bytes")
        header = json.loads(file.read(length))
    return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
