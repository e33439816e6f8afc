"""Which model a pull spec names, and which files of a repository make it: pure functions over a listing."""

from __future__ import annotations

import pytest

from sop_llm.infra.errors import BadRequestError, ModelChoiceError, UnsupportedModelError
from sop_llm.services.models.choice import HubFile, gguf_models, pick_gguf, quantization_of, serving_files
from sop_llm.services.models.spec import ModelSpec, served_name

pytestmark = [pytest.mark.unit]

REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"


def listing(*paths: str) -> list[HubFile]:
    return [HubFile(path=path, size=100, sha256="0" * 64, blob_id="1" * 40) for path in paths]


@pytest.mark.parametrize(
    ("typed", "repo", "choice", "name"),
    [
        (f"hf.co/{REPO}:Q4_K_M", REPO, "Q4_K_M", f"{REPO}:Q4_K_M"),
        (f"{REPO}:q8_0", REPO, "q8_0", f"{REPO}:q8_0"),
        (f"https://huggingface.co/{REPO}", REPO, None, REPO),
        (f"HF.co/{REPO}:latest", REPO, None, REPO),
        (f"{REPO}:SmolLM2-135M-Instruct-Q4_K_M.gguf", REPO, "SmolLM2-135M-Instruct-Q4_K_M.gguf", None),
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", None, None),
    ],
)
def test_specs(typed: str, repo: str, choice: str | None, name: str | None) -> None:
    spec = ModelSpec.parse(typed)
    assert (spec.repo, spec.choice) == (repo, choice)
    assert spec.text == (name or typed)
    assert served_name(typed) == spec.text


@pytest.mark.parametrize("typed", ["smollm2", "a/b/c", "a/b:", "-a/b", "a--b/c", "a/b:folder/file.gguf", "hf.co/"])
def test_bad_specs_are_400(typed: str) -> None:
    with pytest.raises(BadRequestError):
        ModelSpec.parse(typed)


FILES = listing(
    "README.md",
    "SmolLM2-Q4_K_M.gguf",
    "SmolLM2-Q4_K_S.gguf",
    "SmolLM2-IQ4_XS.gguf",
    "SmolLM2-Q8_0.gguf",
    "SmolLM2-f16-00001-of-00002.gguf",
    "SmolLM2-f16-00002-of-00002.gguf",
    "SmolLM2-Q6_K-00001-of-00003.gguf",  # its part 2 is missing: not a model
    "SmolLM2-Q6_K-00003-of-00003.gguf",
    "mmproj-SmolLM2-f16.gguf",
)


@pytest.mark.parametrize(
    ("choice", "picked"),
    [
        ("Q4_K_M", ["SmolLM2-Q4_K_M.gguf"]),
        ("q4_k_s", ["SmolLM2-Q4_K_S.gguf"]),
        ("Q4_XS", ["SmolLM2-IQ4_XS.gguf"]),  # no whole-word match: the one name that contains it
        ("IQ4_XS", ["SmolLM2-IQ4_XS.gguf"]),
        ("F16", ["SmolLM2-f16-00001-of-00002.gguf", "SmolLM2-f16-00002-of-00002.gguf"]),
        ("SmolLM2-f16-00002-of-00002.gguf", ["SmolLM2-f16-00001-of-00002.gguf", "SmolLM2-f16-00002-of-00002.gguf"]),
        ("smollm2-q8_0.gguf", ["SmolLM2-Q8_0.gguf"]),
    ],
)
def test_a_choice_picks_one_model(choice: str, picked: list[str]) -> None:
    assert [file.path for file in pick_gguf(REPO, FILES, choice).files] == picked


def test_several_models_without_a_choice_or_with_a_vague_one_are_listed() -> None:
    with pytest.raises(ModelChoiceError) as several:
        pick_gguf(REPO, FILES, None)
    assert several.value.details["choices"] == [
        f"{REPO}:F16",
        f"{REPO}:IQ4_XS",
        f"{REPO}:Q4_K_M",
        f"{REPO}:Q4_K_S",
        f"{REPO}:Q8_0",
    ]
    with pytest.raises(ModelChoiceError) as vague:
        pick_gguf(REPO, FILES, "Q4_K")
    assert vague.value.details["choices"] == [f"{REPO}:Q4_K_M", f"{REPO}:Q4_K_S"]
    with pytest.raises(ModelChoiceError, match="Q6_K"):
        pick_gguf(REPO, FILES, "Q6_K")
    with pytest.raises(ModelChoiceError, match=r"no GGUF file 'other\.gguf'"):
        pick_gguf(REPO, FILES, "other.gguf")


def test_the_only_model_needs_no_choice_and_a_repository_without_one_is_refused() -> None:
    only = listing("README.md", "model-q4_k_m.gguf", "mmproj-model-f16.gguf")
    assert [f.path for f in pick_gguf(REPO, only, None).files] == ["model-q4_k_m.gguf"]
    with pytest.raises(UnsupportedModelError):
        pick_gguf(REPO, listing("README.md", "model.safetensors"), None)


def test_quantization_labels() -> None:
    assert quantization_of("x/Model.Q4_K_M.gguf") == "Q4_K_M"
    assert quantization_of("qwen2.5-0.5b-instruct-q4_0-00001-of-00002.gguf") == "Q4_0"
    assert quantization_of("model-bf16.gguf") == "BF16"
    assert quantization_of("Qwen3-model.gguf") is None
    assert [m.label for m in gguf_models(listing("a-Q8_0.gguf", "plain.gguf"))] == ["Q8_0", "plain.gguf"]


def test_sentence_transformers_files() -> None:
    files = listing(
        ".gitattributes",
        "README.md",
        "config.json",
        "config_sentence_transformers.json",
        "data_config.json",
        "modules.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tf_model.h5",
        "rust_model.ot",
        "onnx/model.onnx",
        "onnx/model_qint8.onnx",
        "openvino/openvino_model.xml",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "sentencepiece.bpe.model",
        "train_script.py",
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "2_Dense/pytorch_model.bin",
    )
    chosen = serving_files("org/model", files, ["", "1_Pooling", "2_Dense", "3_Normalize"])
    assert [file.path for file in chosen] == [
        "1_Pooling/config.json",
        "2_Dense/config.json",
        "2_Dense/model.safetensors",
        "config.json",
        "config_sentence_transformers.json",
        "model.safetensors",
        "modules.json",
        "sentencepiece.bpe.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    pytorch_only = serving_files("org/model", listing("config.json", "pytorch_model.bin", "vocab.txt"))
    assert [file.path for file in pytorch_only] == ["config.json", "pytorch_model.bin", "vocab.txt"]
    with pytest.raises(UnsupportedModelError):
        serving_files("org/model", listing("config.json", "onnx/model.onnx"))
