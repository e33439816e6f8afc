"""The onnx embedding backend: the vectors of sentence-transformers on torch, served without importing torch.

The equivalence tests compare, over 512 sentences, the shipped all-MiniLM-L6-v2 through sentence-transformers
(torch) with the exported graph on onnxruntime, float32 and int8; they print the cosine figures.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from sop_llm.infra.errors import ProviderNotFoundError
from sop_llm.infra.model_config import (
    ConfigError,
    EmbeddingModelConfig,
    ProviderConfig,
    load_service_config,
)
from sop_llm.providers.local.onnx_embeddings import OnnxEmbeddingsProvider, length_groups
from sop_llm.providers.registry import embedding_provider, provider_types
from sop_llm.services.embeddings.batcher import EmbeddingBatcher

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "embedded:all-minilm-l6-v2"
ROOT = Path(__file__).resolve().parents[2]
_VOCABULARY = (
    "the a our every small quiet old new river harbour engineer committee grandmother service report bridge soup "
    "measures describes ignores rebuilds celebrates questions tomorrow yesterday quickly because although while "
    "café naïve résumé 42 3.14 2026 GPU latency throughput embeddings tokenizer kitten volcano stock market law tax "
    "pizza weather Paris Tokyo London happily never always seven hundred invoices contracts sunlight"
)
_WORDS = _VOCABULARY.split()


def corpus(count: int = 512, seed: int = 7) -> list[str]:
    """Sentences of 6 to 20 words (~12 on average); the last 8 are long texts that exercise truncation (together, so
    that only one batch of 64 is padded to 256 tokens)."""
    rng = random.Random(seed)
    texts = []
    for i in range(count):
        words = rng.choices(_WORDS, k=400 if i >= count - 8 else rng.randint(6, 20))
        texts.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ""]))
    return texts


def onnx_provider(quantize: str | None) -> OnnxEmbeddingsProvider:
    """Loaded from the exported files in the default cache folder, the ones the server uses."""
    config = EmbeddingModelConfig(provider="local-embeddings", model=MODEL, backend="onnx", quantize=quantize)  # type: ignore[arg-type]
    provider = OnnxEmbeddingsProvider("onnx", config, ProviderConfig(type="sentence_transformers"))
    provider.load_blocking()
    return provider


def encode_in_batches(provider: object, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    chunks = [provider.encode_blocking(texts[i : i + 64]) for i in range(0, len(texts), 64)]  # type: ignore[attr-defined]
    return np.concatenate([v for v, _ in chunks]), [n for _, tokens in chunks for n in tokens]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def torch_reference(texts: list[str]) -> tuple[np.ndarray, list[int]]:
    from sop_llm.providers.local.sentence_transformers import SentenceTransformersProvider

    config = EmbeddingModelConfig(provider="local-embeddings", model=MODEL)
    provider = SentenceTransformersProvider("torch", config, ProviderConfig(type="sentence_transformers"))
    provider.load_blocking()
    try:
        return encode_in_batches(provider, texts)
    finally:
        provider.close_blocking()


@pytest.fixture(scope="module")
def int8_provider() -> Iterator[OnnxEmbeddingsProvider]:
    provider = onnx_provider("int8")
    yield provider
    provider.close_blocking()


@pytest.mark.parametrize(("quantize", "floor"), [(None, 0.999), ("int8", 0.99)])
def test_onnx_vectors_match_torch(
    quantize: str | None,
    floor: float,
    texts: list[str],
    torch_reference: tuple[np.ndarray, list[int]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference, reference_tokens = torch_reference
    provider = onnx_provider(quantize)
    vectors, tokens = encode_in_batches(provider, texts)
    assert vectors.shape == reference.shape == (512, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tokens == reference_tokens  # same tokenizer, same truncation (256 tokens), special tokens counted
    assert max(tokens) == 256
    cosine = (vectors * reference).sum(axis=1)
    with capsys.disabled():
        print(
            f"\nonnx {quantize or 'fp32'} vs torch, 512 sentences: cosine min {cosine.min():.5f}, "
            f"mean {cosine.mean():.5f}, 1st percentile {np.percentile(cosine, 1):.5f}"
        )
    assert cosine.min() >= floor
    # Padding is masked out: a text alone gets the vector it got in its batch (float32 exactly; int8 scales each
    # batch's activations together, so its vectors move a little with the batch).
    alone, _ = provider.encode_blocking([texts[5]])
    assert float(alone[0] @ vectors[5]) >= (0.99999 if quantize is None else floor)
    provider.close_blocking()


def test_similarity_order_agrees_with_torch(int8_provider: OnnxEmbeddingsProvider) -> None:
    vectors, _ = int8_provider.encode_blocking(["a cat", "a kitten", "tax law"])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


async def test_batcher_sorts_by_length_and_keeps_each_answer(int8_provider: OnnxEmbeddingsProvider) -> None:
    short = ["apple", "volcano", "tax law", "kitten", "Paris", "guitar", "ocean", "bicycle"]
    topics = ["chess openings", "baking bread", "tidal energy", "medieval castles", "jazz drums", "tax audits",
              "desert beetles", "rail timetables"]  # fmt: skip
    long = [f"a much longer sentence about {topic}, with many more words in it than the short ones" for topic in topics]
    mixed = [text for pair in zip(short, long, strict=True) for text in pair]  # short, long, short, long, ...
    executor = ThreadPoolExecutor(1)
    batcher = EmbeddingBatcher(
        int8_provider.encode_blocking,
        executor,
        batch_size=4,
        wait_s=0,
        max_queue=100,
        tokenize=int8_provider.tokenize_blocking,
        forward=int8_provider.forward_blocking,
    )
    batcher.start()
    try:
        vectors, tokens = await batcher.submit(mixed)
    finally:
        await batcher.aclose()
        executor.shutdown()
    expected, expected_tokens = int8_provider.encode_blocking(mixed)
    assert tokens == expected_tokens
    # Each answer is its own text's vector: closest to what that text gets encoded on its own.
    closest = (vectors @ expected.T).argmax(axis=1)
    assert closest.tolist() == list(range(16))
    assert float((vectors * expected).sum(axis=1).min()) >= 0.99
    # In arrival order every batch of 4 would hold two long texts and pad two short ones; sorted, none does.
    fifo_padding = sum(4 * max(tokens[i : i + 4]) - sum(tokens[i : i + 4]) for i in range(0, 16, 4))
    assert batcher.stats.batches == 4
    assert batcher.stats.padding < fifo_padding / 4
    assert batcher.stats.tokens == sum(tokens) + batcher.stats.padding


async def test_batcher_tokenizes_the_next_batch_while_one_runs(int8_provider: OnnxEmbeddingsProvider) -> None:
    second = ["the second request arrives while the first runs"]
    second_tokenized = threading.Event()
    first_running = threading.Event()
    first_forward_saw: list[bool] = []

    def tokenize(texts: list[str]) -> list[np.ndarray]:
        ids = int8_provider.tokenize_blocking(texts)
        if texts == second:
            second_tokenized.set()
        return ids

    def forward(ids: list[np.ndarray]) -> np.ndarray:
        vectors = int8_provider.forward_blocking(ids)
        if not first_forward_saw:
            first_running.set()
            # The first batch holds the model's thread until the next request is tokenized (or 10 s pass):
            # only a tokenizer running beside the model lets it finish at once.
            first_forward_saw.append(second_tokenized.wait(timeout=10))
        return vectors

    executor = ThreadPoolExecutor(1)
    batcher = EmbeddingBatcher(int8_provider.encode_blocking, executor, 64, 0, 1000, tokenize=tokenize, forward=forward)
    batcher.start()
    try:
        first = asyncio.ensure_future(batcher.submit([f"first request text {i}" for i in range(64)]))
        assert await asyncio.to_thread(first_running.wait, 30)
        later = await batcher.submit(second)
        await first
    finally:
        await batcher.aclose()
        executor.shutdown()
    assert first_forward_saw == [True]
    assert later[1] == [len(int8_provider.tokenize_blocking(second)[0])]


def test_serving_path_does_not_import_torch() -> None:
    """A real server start with the shipped config (onnx int8 embeddings, llama.cpp chat) up to ready, then an
    embedding request: torch, transformers and sentence-transformers stay unimported."""
    script = (
        "import sys, httpx\n"
        "from tests.live_server import LiveServer, make_settings\n"
        "server = LiveServer(make_settings()).start()\n"
        "reply = httpx.post(server.url + '/v1/embeddings', json={'model': 'all-minilm-l6-v2', 'input': 'hello'})\n"
        "assert reply.status_code == 200, reply.text\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'sentence_transformers'}))\n"
        "server.stop()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_quantize_needs_the_onnx_backend(tmp_path: Path) -> None:
    (tmp_path / "providers.yaml").write_text("providers:\n  e: {type: sentence_transformers}\n")
    (tmp_path / "models.yaml").write_text("models: {}\n")
    (tmp_path / "embeddings.yaml").write_text("embeddings:\n  m: {provider: e, model: x, quantize: int8}\n")
    with pytest.raises(ConfigError, match=r"embeddings\.yaml: embeddings\.m: .*quantize applies to backend: onnx"):
        load_service_config(tmp_path, provider_types())
    (tmp_path / "embeddings.yaml").write_text("embeddings:\n  m: {provider: e, model: x, backend: openvino}\n")
    with pytest.raises(ConfigError, match=r"embeddings\.m\.backend: Input should be 'torch' or 'onnx'"):
        load_service_config(tmp_path, provider_types())


def test_backends_are_looked_up_by_type() -> None:
    provider_types()  # imports every provider module
    assert embedding_provider("sentence_transformers", "onnx") is OnnxEmbeddingsProvider
    assert embedding_provider("sentence_transformers").__name__ == "SentenceTransformersProvider"
    with pytest.raises(ProviderNotFoundError, match="no embedding provider of type 'llamacpp'"):
        embedding_provider("llamacpp", "onnx")


def test_texts_run_in_length_groups_that_pad_little() -> None:
    assert length_groups([10, 12, 300, 11, 40]) == [[0, 3, 1], [4], [2]]
    assert length_groups([15] * 64) == [list(range(64))]
    assert length_groups([]) == []
    # One-sentence texts of 13 to 20 tokens: a few groups, each of several rows, and far less padding.
    lengths = [13 + i % 8 for i in range(64)]
    groups = length_groups(lengths)
    assert sorted(row for group in groups for row in group) == list(range(64))
    assert 2 <= len(groups) <= 4
    padded = sum(len(group) * max(lengths[row] for row in group) for group in groups)
    assert padded - sum(lengths) < 0.1 * sum(lengths) < 64 * 20 - sum(lengths)
