"""Which files of a hub repository make the model a spec asks for. Pure functions over the repository's listing.

A GGUF repository holds one model per quantization, each a single `.gguf` file or the parts of a split one
(`<stem>-00001-of-00003.gguf`, all pulled together). A choice like `Q4_K_M` picks the model whose name carries that
quantization (case-insensitive; a whole word first, so `Q4_K` does not quietly pick `Q4_K_M`), `<file>.gguf` names
one exactly, and no choice takes the only model — several are a user error that lists them. Vision projectors
(`mmproj-*.gguf`) are not models of their own.

A sentence-transformers repository (or a cross-encoder) needs its configuration, tokenizer and weights, in the root
and in the module folders its `modules.json` names — safetensors when it has them — and not the other formats it
also carries (onnx/, openvino/, `pytorch_model.bin` beside safetensors, TensorFlow, Flax, README, training scripts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sop_llm.infra.errors import ModelChoiceError, UnsupportedModelError

# The files that make a repository a sentence-transformers one.
SENTENCE_TRANSFORMERS_MARKERS = ("modules.json", "config_sentence_transformers.json")
_SPLIT_PART = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
_QUANTIZATION = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Za-z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE)
_NOT_NEEDED = {"readme.md", ".gitattributes", "data_config.json", "train_script.py"}
_TOKENIZER_FILE = re.compile(r"^(?:vocab|merges)[^/]*\.txt$|\.model$|\.tiktoken$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class HubFile:
    """A file of a repository as the hub lists it: `path` inside the repository, `size` in bytes, `sha256` of its
    bytes (the hub knows it for files kept in Git LFS) and `blob_id`, the git object id (sha1 of "blob <size>\\0"
    and the bytes), which is all the hub says about a small file."""

    path: str
    size: int
    sha256: str | None
    blob_id: str | None


@dataclass(frozen=True, slots=True)
class GgufModel:
    """One model of a GGUF repository: a single file, or the parts of a split one in order."""

    files: tuple[HubFile, ...]

    @property
    def label(self) -> str:
        """What to type after ':' to pick it: its quantization, or the file name when it shows none."""
        return quantization_of(self.files[0].path) or self.files[0].path.rsplit("/", 1)[-1]

    def matches_file(self, name: str) -> bool:
        return any(name in (file.path, file.path.rsplit("/", 1)[-1]) for file in self.files)


def quantization_of(path: str) -> str | None:
    """The quantization a GGUF file name carries (`Q4_K_M`, `IQ4_XS`, `F16`), upper-cased."""
    name = path.rsplit("/", 1)[-1]
    split = _SPLIT_PART.match(name)
    found = _QUANTIZATION.findall(split.group("stem") if split else name.removesuffix(".gguf"))
    return found[-1].upper() if found else None


def gguf_models(files: Iterable[HubFile]) -> list[GgufModel]:
    """The models of a GGUF repository; a split model whose parts are not all there is left out."""
    singles: list[GgufModel] = []
    parts: dict[tuple[str, int], dict[int, HubFile]] = {}
    for file in files:
        name = file.path.rsplit("/", 1)[-1]
        if not name.lower().endswith(".gguf") or name.lower().startswith("mmproj"):
            continue
        split = _SPLIT_PART.match(file.path)
        if split is None:
            singles.append(GgufModel((file,)))
        else:
            parts.setdefault((split.group("stem"), int(split.group("count"))), {})[int(split.group("part"))] = file
    for (_, count), found in parts.items():
        if sorted(found) == list(range(1, count + 1)):
            singles.append(GgufModel(tuple(found[part] for part in range(1, count + 1))))
    return sorted(singles, key=lambda model: model.files[0].path.lower())


def choices_of(repo: str, models: list[GgufModel]) -> list[str]:
    """What a user could pull from the repository, one spec a model."""
    labels = [model.label for model in models]
    return [
        f"{repo}:{label if labels.count(label) == 1 else model.files[0].path}"
        for model, label in zip(models, labels, strict=True)
    ]


def pick_gguf(repo: str, files: Iterable[HubFile], choice: str | None) -> GgufModel:
    """The GGUF model `choice` names (see the module docstring)."""
    models = gguf_models(files)
    if not models:
        raise UnsupportedModelError(f"{repo} holds no GGUF model")
    choices = choices_of(repo, models)
    if choice is None:
        if len(models) == 1:
            return models[0]
        raise ModelChoiceError(
            f"{repo} holds {len(models)} GGUF models; pick one: {', '.join(choices)}", details={"choices": choices}
        )
    if choice.lower().endswith(".gguf"):
        named = [model for model in models if model.matches_file(choice)] or [
            model for model in models if _lower_match(model, choice)
        ]
        if len(named) == 1:
            return named[0]
        raise ModelChoiceError(
            f"{repo} has no GGUF file '{choice}'; it holds: {', '.join(choices)}", details={"choices": choices}
        )
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(choice)}(?![A-Za-z0-9_])", re.IGNORECASE)
    matching = [model for model in models if word.search(model.files[0].path)] or [
        model for model in models if choice.lower() in model.files[0].path.lower()
    ]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        raise ModelChoiceError(
            f"{repo} has no GGUF model with '{choice}' in its name; it holds: {', '.join(choices)}",
            details={"choices": choices},
        )
    several = [choices[models.index(model)] for model in matching]
    raise ModelChoiceError(
        f"'{choice}' matches {len(matching)} GGUF models of {repo}: {', '.join(several)}; name one of them",
        details={"choices": several},
    )


def _lower_match(model: GgufModel, name: str) -> bool:
    wanted = name.lower()
    return any(wanted in (file.path.lower(), file.path.rsplit("/", 1)[-1].lower()) for file in model.files)


def is_sentence_transformers(files: Iterable[HubFile]) -> bool:
    return any(file.path in SENTENCE_TRANSFORMERS_MARKERS for file in files)


def serving_files(repo: str, files: Iterable[HubFile], module_folders: Iterable[str] = ()) -> tuple[HubFile, ...]:
    """The files a sentence-transformers model or a cross-encoder is loaded from: those of the root and of
    `module_folders` (from modules.json), configuration, tokenizer and one format of weights a folder."""
    folders = {""} | {folder.strip("/") for folder in module_folders}
    by_folder: dict[str, list[HubFile]] = {}
    for file in files:
        folder, _, name = file.path.rpartition("/")
        if folder in folders and _needed(name):
            by_folder.setdefault(folder, []).append(file)
    chosen: list[HubFile] = []
    for folder_files in by_folder.values():
        safetensors = any(file.path.endswith(".safetensors") for file in folder_files)
        chosen += [file for file in folder_files if not (safetensors and _is_pytorch_weights(file.path))]
    if not any(file.path.endswith(".safetensors") or _is_pytorch_weights(file.path) for file in chosen):
        raise UnsupportedModelError(f"{repo} has no weights in safetensors or PyTorch format to load")
    return tuple(sorted(chosen, key=lambda file: file.path))


def _needed(name: str) -> bool:
    lowered = name.lower()
    if lowered in _NOT_NEEDED or lowered.endswith((".md", ".py")):
        return False
    return (
        lowered.endswith((".json", ".safetensors"))
        or _is_pytorch_weights(lowered)
        or _TOKENIZER_FILE.search(lowered) is not None
    )


def _is_pytorch_weights(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name.startswith("pytorch_model") and name.endswith(".bin")
