"""Rerank through a live server, on both kinds of model: a cross-encoder (trained for these tests from the embedded
MiniLM weights, see tests/cross_encoder_model.py), on torch and on onnxruntime, and an embedding model (cosine
similarity, the default).

The ranking checks use held-out queries: topics the cross-encoder never saw while training. Untrained, it ranks
them at random, so these checks fail for a reranker that does not really rank.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.infra.model_config import EmbeddingModelConfig, ProviderConfig
from sop_llm.providers.local.cross_encoder import CrossEncoderProvider
from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.providers.local.onnx_cross_encoder import OnnxCrossEncoderProvider
from sop_llm.providers.registry import provider_types, rerank_provider
from tests.cross_encoder_model import HELD_OUT, build_cross_encoder
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

RERANKER = "test-reranker"
ONNX_RERANKER = "test-reranker-onnx"
EMBEDDER = "all-minilm-l6-v2"
MAX_DOCUMENTS = 100  # EMBEDDING_MAX_INPUTS of this module's server
QUERIES = [query for query, _ in HELD_OUT]
PASSAGES = [passage for _, passage in HELD_OUT]
SURFACES = ["/v1/rerank", "/api/v1/rerank"]


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def service(
    cross_encoder_dir: Path, onnx_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("rerank-config")
    (folder / "providers.yaml").write_text(
        "providers:\n"
        "  llamacpp: {type: llamacpp}\n"
        "  local-embeddings: {type: sentence_transformers}\n"
        "  rerankers: {type: cross_encoder}\n"
    )
    # A generation model that is never loaded: it only has to be a name that cannot rerank.
    (folder / "models.yaml").write_text(
        "models:\n  smollm2-135m: {provider: llamacpp, model: 'embedded:smollm2-135m-instruct', load_on_startup: false}\n"
    )
    (folder / "embeddings.yaml").write_text(
        "embeddings:\n"
        f"  {EMBEDDER}: {{provider: local-embeddings, model: 'embedded:all-minilm-l6-v2'}}\n"
        f"  {RERANKER}:\n"
        "    provider: rerankers\n"
        f"    model: '{cross_encoder_dir}'\n"
        "    aliases: [rerank-small]\n"
        "    options: {batch_size: 16}\n"
        f"  {ONNX_RERANKER}:\n"
        "    provider: rerankers\n"
        f"    model: '{cross_encoder_dir}'\n"
        "    backend: onnx\n"
        f"    options: {{batch_size: 16, cache_dir: '{onnx_cache}'}}\n"
    )
    live = LiveServer(
        make_settings(
            CONFIG_DIR=str(folder),
            LLM_DEFAULT_MODEL="smollm2-135m",
            EMBEDDING_MAX_INPUTS=MAX_DOCUMENTS,
            EMBEDDING_BATCH_SIZE=32,
        )
    ).start()
    yield live
    live.stop()


def _rerank(service: LiveServer, body: dict[str, Any], path: str = "/v1/rerank") -> httpx.Response:
    return httpx.post(f"{service.url}{path}", json=body, timeout=120)


def _top_index(service: LiveServer, model: str | None, query: str, path: str = "/v1/rerank") -> int:
    body: dict[str, Any] = {"query": query, "documents": PASSAGES}
    if model is not None:
        body["model"] = model
    reply = _rerank(service, body, path)
    assert reply.status_code == 200, reply.text
    index: int = reply.json()["results"][0]["index"]
    return index


# --- ranking ------------------------------------------------------------------------------------------------------


def test_cross_encoder_ranks_held_out_queries(service: LiveServer, cross_encoder_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder_dir))
    for expected, query in enumerate(QUERIES):
        reply = _rerank(service, {"model": RERANKER, "query": query, "documents": PASSAGES})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"] == RERANKER
        assert body["id"].startswith("rerank-")
        results = body["results"]
        assert results[0]["index"] == expected, f"{query!r}: {results}"
        assert sorted(r["index"] for r in results) == list(range(len(PASSAGES)))
        scores = [r["relevance_score"] for r in results]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)  # a one-label cross-encoder's sigmoid
        assert all("document" not in r for r in results)  # return_documents defaults to false
        # usage counts the tokens of every (query, document) pair the model read
        pairs = tokenizer([query] * len(PASSAGES), PASSAGES, truncation="longest_first", max_length=512)
        tokens = sum(len(ids) for ids in pairs["input_ids"])
        assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_embedding_model_is_the_default_and_ranks_held_out_queries(service: LiveServer) -> None:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-minilm-l6-v2"))
    for expected, query in enumerate(QUERIES):
        reply = _rerank(service, {"query": query, "documents": PASSAGES}, "/api/v1/rerank")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"] == EMBEDDER
        assert body["results"][0]["index"] == expected, f"{query!r}: {body['results']}"
        scores = [r["relevance_score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True)
        assert all(-1.0 <= s <= 1.0 for s in scores)  # cosine similarity
        # the query and each document embedded once
        tokens = sum(len(tokenizer(text, truncation=True, max_length=256)["input_ids"]) for text in [query, *PASSAGES])
        assert body["usage"]["total_tokens"] == tokens


def test_embedding_backend_uses_the_embedding_cache(service: LiveServer) -> None:
    body = {"model": EMBEDDER, "query": "a query seen only by this test", "documents": ["cached one", "cached two"]}
    first = _rerank(service, body).json()
    encoded = service.model_stats(EMBEDDER)["texts"]
    second = _rerank(service, body).json()
    assert service.model_stats(EMBEDDER)["texts"] == encoded  # nothing encoded again
    assert second["results"] == first["results"]
    assert second["usage"] == first["usage"]


@pytest.mark.parametrize("model", [RERANKER, EMBEDDER])
@pytest.mark.parametrize("path", SURFACES)
def test_top_n_and_return_documents(service: LiveServer, model: str, path: str) -> None:
    # Documents as strings and as {"text": ...} objects (extra keys are ignored), mixed.
    documents: list[Any] = [{"text": p, "id": i} if i % 2 else p for i, p in enumerate(PASSAGES)]
    reply = _rerank(
        service,
        {"model": model, "query": QUERIES[2], "documents": documents, "top_n": 3, "return_documents": True},
        path,
    )
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert len(results) == 3
    assert results[0]["index"] == 2
    for result in results:
        assert result["document"] == {"text": PASSAGES[result["index"]]}
    # the same scores as an unlimited request: top_n only cuts the list
    whole = _rerank(service, {"model": model, "query": QUERIES[2], "documents": PASSAGES}, path).json()["results"]
    assert [(r["index"], r["relevance_score"]) for r in results] == [
        (r["index"], r["relevance_score"]) for r in whole[:3]
    ]
    more = _rerank(service, {"model": model, "query": QUERIES[2], "documents": PASSAGES[:2], "top_n": 50}, path)
    assert len(more.json()["results"]) == 2  # top_n above the number of documents returns them all


def test_unknown_fields_are_tolerated_and_aliases_resolve(service: LiveServer) -> None:
    reply = _rerank(
        service,
        {
            "model": "rerank-small",
            "query": QUERIES[0],
            "documents": PASSAGES,
            "max_tokens_per_doc": 512,
            "rank_fields": [],
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == RERANKER
    assert reply.json()["results"][0]["index"] == 0


async def test_scoring_runs_off_the_event_loop_and_requests_do_not_mix(service: LiveServer) -> None:
    long_documents = [f"{PASSAGES[i % len(PASSAGES)]} " * 6 for i in range(40)]  # ~130 tokens each
    async with httpx.AsyncClient(base_url=service.url, timeout=120) as client:
        big_started = time.monotonic()
        big = asyncio.create_task(
            client.post("/v1/rerank", json={"model": RERANKER, "query": QUERIES[3], "documents": long_documents})
        )
        await asyncio.sleep(0.3)  # the big request is being scored now
        started = time.monotonic()
        health = await client.get("/api/v1/health")
        health_s = time.monotonic() - started
        assert health.status_code == 200
        # Requests that arrive while another is scored are served in turn, each with its own ranking.
        small = await asyncio.gather(
            *(
                client.post("/v1/rerank", json={"model": RERANKER, "query": q, "documents": PASSAGES})
                for q in QUERIES[:4]
            )
        )
        assert [r.json()["results"][0]["index"] for r in small] == [0, 1, 2, 3]
        reply = await big
        big_s = time.monotonic() - big_started
    # Scored on the event loop, the health check would have waited for the whole big request.
    assert health_s < (big_s - 0.3) / 4, f"health took {health_s:.2f} s while a {big_s:.2f} s rerank ran"
    assert reply.status_code == 200, reply.text
    assert len(reply.json()["results"]) == 40
    assert reply.json()["results"][0]["index"] % len(PASSAGES) == 3


# --- models ---------------------------------------------------------------------------------------------------------


def test_models_list_the_cross_encoder_with_its_kind(service: LiveServer) -> None:
    models = {m["name"]: m for m in httpx.get(f"{service.url}/api/v1/models").json()["models"]}
    reranker = models[RERANKER]
    assert reranker["kind"] == "rerank"
    assert reranker["state"] == "ready"
    assert reranker["provider"] == "rerankers"
    assert reranker["aliases"] == ["rerank-small"]
    assert reranker["max_input_tokens"] == 512
    assert "dimensions" not in reranker
    assert models[EMBEDDER]["kind"] == "embedding"
    assert models["smollm2-135m"]["kind"] == "generation"
    ids = {m["id"] for m in httpx.get(f"{service.url}/v1/models").json()["data"]}
    assert {RERANKER, "rerank-small"} <= ids


def test_a_cross_encoder_cannot_embed(service: LiveServer) -> None:
    reply = httpx.post(f"{service.url}/v1/embeddings", json={"model": RERANKER, "input": "text"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "unsupported_feature"
    assert error["param"] == "model"
    assert "reranker" in error["message"]
    assert "/v1/rerank" in error["message"]


def test_cross_encoder_unloads_and_loads_again_on_demand_like_other_models(service: LiveServer) -> None:
    unloaded = httpx.post(f"{service.url}/api/v1/models/{RERANKER}/unload", timeout=60)
    assert unloaded.json() == {"name": RERANKER, "state": "unloaded"}
    assert _top_index(service, RERANKER, QUERIES[5]) == 5  # the request loads it
    models = httpx.get(f"{service.url}/api/v1/models").json()["models"]
    assert next(m for m in models if m["name"] == RERANKER)["state"] == "ready"
    assert httpx.post(f"{service.url}/api/v1/models/{RERANKER}/load").status_code == 200  # loaded already


@pytest.mark.parametrize(
    ("model", "words"),
    [
        # an embedding model's weights have no trained scoring head: they would rank at random
        ("embedded:all-minilm-l6-v2", "is not a cross-encoder: its checkpoint has no scoring head"),
        ("/nonexistent/reranker", "Nothing is downloaded"),
        ("cross-encoder/not-in-the-local-cache", "Nothing is downloaded"),
    ],
)
def test_what_cannot_serve_as_a_cross_encoder_is_refused_at_load(model: str, words: str) -> None:
    config = EmbeddingModelConfig(provider="rerankers", model=model)
    provider = CrossEncoderProvider("reranker", config, ProviderConfig(type="cross_encoder"))
    with pytest.raises(ProviderInitializationError) as refused:
        provider.load_blocking()
    assert words in refused.value.message


def test_a_cross_encoder_runs_on_torch_or_onnx() -> None:
    provider_types()  # imports every provider module
    assert rerank_provider("cross_encoder") is CrossEncoderProvider
    assert rerank_provider("cross_encoder", "onnx") is OnnxCrossEncoderProvider
    assert rerank_provider("sentence_transformers") is None  # not a reranker


def test_onnx_scores_are_the_torch_scores(cross_encoder_dir: Path, onnx_cache: Path) -> None:
    """float32 onnx gives torch's scores and token counts; int8 keeps every held-out query's ranking."""
    torch_config = EmbeddingModelConfig(provider="rerankers", model=str(cross_encoder_dir))
    reference = CrossEncoderProvider("torch", torch_config, ProviderConfig(type="cross_encoder"))
    reference.load_blocking()
    providers = {}
    for quantize in (None, "int8"):
        config = EmbeddingModelConfig(
            provider="rerankers",
            model=str(cross_encoder_dir),
            backend="onnx",
            quantize=quantize,  # type: ignore[arg-type]
            options={"cache_dir": str(onnx_cache), "batch_size": 4},
        )
        providers[quantize] = OnnxCrossEncoderProvider("onnx", config, ProviderConfig(type="cross_encoder"))
        providers[quantize].load_blocking()
    assert providers[None].max_input_tokens == reference.max_input_tokens
    worst = {None: 0.0, "int8": 0.0}
    long_document = " ".join(PASSAGES * 40)  # truncated: the longer text of the pair goes first
    for own, query in enumerate(QUERIES):
        documents = [*PASSAGES, long_document]
        expected, expected_tokens = reference.score_blocking(query, documents)
        assert int(expected.argmax()) == own
        for quantize, provider in providers.items():
            scores, tokens = provider.score_blocking(query, documents)
            assert scores.dtype == expected.dtype and scores.shape == expected.shape
            assert tokens == expected_tokens
            worst[quantize] = max(worst[quantize], float(abs(scores - expected).max()))
            assert int(scores.argmax()) == own
    print(f"\nonnx reranker vs torch, largest score difference: fp32 {worst[None]:.2e}, int8 {worst['int8']:.3f}")
    assert worst[None] < 1e-4
    assert worst["int8"] < 0.05


def test_the_onnx_backend_refuses_what_it_does_not_implement(onnx_cache: Path) -> None:
    config = EmbeddingModelConfig(
        provider="rerankers", model="embedded:all-minilm-l6-v2", backend="onnx", options={"cache_dir": str(onnx_cache)}
    )
    provider = OnnxCrossEncoderProvider("reranker", config, ProviderConfig(type="cross_encoder"))
    with pytest.raises(ProviderInitializationError, match="serves sequence-classification cross-encoders"):
        provider.load_blocking()


def test_the_onnx_reranker_is_served_like_the_torch_one(service: LiveServer) -> None:
    models = {m["name"]: m for m in httpx.get(f"{service.url}/api/v1/models").json()["models"]}
    assert models[ONNX_RERANKER]["kind"] == "rerank"
    assert models[ONNX_RERANKER]["max_input_tokens"] == models[RERANKER]["max_input_tokens"]
    for expected, query in enumerate(QUERIES):
        by_torch = _rerank(service, {"model": RERANKER, "query": query, "documents": PASSAGES}).json()
        by_onnx = _rerank(service, {"model": ONNX_RERANKER, "query": query, "documents": PASSAGES}).json()
        assert by_onnx["results"][0]["index"] == expected
        assert [r["index"] for r in by_onnx["results"]] == [r["index"] for r in by_torch["results"]]
        assert by_onnx["usage"] == by_torch["usage"]
        for mine, theirs in zip(by_onnx["results"], by_torch["results"], strict=True):
            assert mine["relevance_score"] == pytest.approx(theirs["relevance_score"], abs=1e-4)


# --- bad input ------------------------------------------------------------------------------------------------------

BAD_INPUT = [
    # (body, param, words the message must contain)
    ({"model": RERANKER, "query": "q", "documents": []}, "documents", "documents is empty"),
    (
        {"model": RERANKER, "query": "q", "documents": ["d"] * (MAX_DOCUMENTS + 1)},
        "documents",
        "too many documents: 101 > 100",
    ),
    ({"model": EMBEDDER, "query": "q", "documents": ["d"] * (MAX_DOCUMENTS + 1)}, "documents", "EMBEDDING_MAX_INPUTS"),
    ({"model": RERANKER, "query": "", "documents": ["d"]}, "query", "query is empty"),
    ({"model": EMBEDDER, "query": "   ", "documents": ["d"]}, "query", "query is empty"),
    ({"model": RERANKER, "query": "q", "documents": ["d", ""]}, "documents", "documents[1] is empty"),
    ({"model": RERANKER, "query": "q", "documents": ["d"], "top_n": 0}, "top_n", "at least 1"),
    ({"model": EMBEDDER, "query": "q", "documents": ["d"], "top_n": -3}, "top_n", "at least 1"),
    ({"model": "smollm2-135m", "query": "q", "documents": ["d"]}, "model", "generation model and cannot rerank"),
]


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize(("body", "param", "words"), BAD_INPUT)
def test_bad_input_is_a_clear_400(service: LiveServer, path: str, body: dict[str, Any], param: str, words: str) -> None:
    reply = _rerank(service, body, path)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert words in error["message"]
    if path.startswith("/v1"):  # OpenAI's shape
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param
        assert reply.headers["x-should-retry"] == "false"
    else:  # the native shape
        assert error["code"] in ("invalid_request", "unsupported_feature")
        assert "trace_id" in error


@pytest.mark.parametrize("path", SURFACES)
def test_unknown_model_is_a_404(service: LiveServer, path: str) -> None:
    reply = _rerank(service, {"model": "no-such-reranker", "query": "q", "documents": ["d"]}, path)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found"
    assert "'no-such-reranker' does not exist" in error["message"]
    assert RERANKER in error["message"] and EMBEDDER in error["message"]  # it says what can rerank


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"query": "q", "documents": ["d", 7]}, 'documents[1] must be a string or an object {"text"'),
        ({"query": "q", "documents": [{"title": "no text"}]}, "documents[0] must be a string"),
        ({"query": "q", "documents": "one string"}, "documents"),
        ({"documents": ["d"]}, "query"),
        ({"query": "q", "documents": ["d"], "top_n": "three"}, "top_n"),
    ],
)
@pytest.mark.parametrize("path", SURFACES)
def test_malformed_bodies_say_which_field(service: LiveServer, path: str, body: dict[str, Any], words: str) -> None:
    reply = _rerank(service, body, path)
    assert reply.status_code == (400 if path.startswith("/v1") else 422), reply.text
    assert words in reply.json()["error"]["message"]
