"""What a user types to pull a model, and the name it is then served under.

A spec is `<owner>/<repo>` with an optional `:<choice>` — a quantization (`Q4_K_M`, any case) or a file name
(`model-q8_0.gguf`) — and an optional hub prefix: Ollama's `hf.co/<owner>/<repo>:<quant>`, `huggingface.co/…` or the
repository's web address. The served name defaults to the spec as typed without that prefix (and without Ollama's
`:latest`), so `hf.co/bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M` is served as
`bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M`, and either spelling finds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sop_llm.infra.errors import BadRequestError

HUB_PREFIXES = (
    "https://huggingface.co/",
    "http://huggingface.co/",
    "https://hf.co/",
    "http://hf.co/",
    "huggingface.co/",
    "hf.co/",
)
# Ollama's tag for "the default": it picks nothing in particular.
DEFAULT_TAG = "latest"
_NAME_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"^{_NAME_PART}/{_NAME_PART}$")


def served_name(text: str) -> str:
    """The name `text` stands for: without a leading `hf.co/`, `huggingface.co/` or hub web address, and without
    Ollama's `:latest` (which picks nothing)."""
    text = text.strip()
    lowered = text.lower()
    for prefix in HUB_PREFIXES:
        if lowered.startswith(prefix):
            text = text[len(prefix) :]
            break
    return text.removesuffix(f":{DEFAULT_TAG}")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A parsed spec. `repo`: the repository id; `choice`: the quantization or file asked for, None for the
    repository's only model; `text`: the spec without a hub prefix — the default served name."""

    repo: str
    choice: str | None
    text: str

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        text = served_name(spec).rstrip("/")
        repo, _, choice = text.partition(":")
        if "/" in choice:
            raise BadRequestError(f"'{spec}': a ':' ends the repository id; the part after it names no folder")
        if not _REPO_ID.fullmatch(repo) or "--" in repo or ".." in repo:
            raise BadRequestError(
                f"'{spec}' is not a hub model: give <owner>/<repo>[:<quantization or file>], "
                "e.g. bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M or hf.co/<owner>/<repo>:<quantization>"
            )
        if not choice and text.endswith(":"):
            raise BadRequestError(f"'{spec}': nothing follows ':'; name a quantization or a file, or drop the ':'")
        return cls(repo=repo, choice=choice or None, text=text)
