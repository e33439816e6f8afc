"""Embeddings and similarity through the live server, including micro-batching under concurrency."""

from __future__ import annotations

import asyncio
import base64

import httpx
import numpy as np
import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.api]


async def test_concurrent_requests_coalesce_into_batches(server: LiveServer) -> None:
    before = server.model_stats("all-minilm-l6-v2")
    requests = 64
    texts = [f"Sentence number {i} about the coalescing test of embeddings." for i in range(requests)]
    async with httpx.AsyncClient(timeout=60) as client:
        replies = await asyncio.gather(
            *(client.post(f"{server.url}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": t}) for t in texts)
        )
    assert all(r.status_code == 200 for r in replies)
    after = server.model_stats("all-minilm-l6-v2")
    batches = after["batches"] - before["batches"]
    encoded = after["texts"] - before["texts"]
    assert encoded == requests
    assert batches < requests  # requests were coalesced...
    assert after["max_batch"] > 1  # ...into batches larger than one
    # Each answer is its own text's vector, not a neighbour's from the same batch.
    solo = httpx.post(f"{server.url}/api/v1/embeddings", json={"texts": [texts[7]]}).json()["embeddings"][0]
    np.testing.assert_allclose(replies[7].json()["data"][0]["embedding"], solo, atol=1e-5)


def test_base64_matches_float(base_url: str) -> None:
    body = {"model": "all-minilm-l6-v2", "input": ["base64 check"]}
    floats = httpx.post(f"{base_url}/v1/embeddings", json=body).json()["data"][0]["embedding"]
    encoded = httpx.post(f"{base_url}/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, floats, atol=1e-7)


def test_cached_texts_are_served_from_cache(server: LiveServer) -> None:
    text = ["a sentence that will be cached exactly once"]
    first = httpx.post(f"{server.url}/api/v1/embeddings", json={"texts": text}).json()
    encoded_before = server.model_stats("all-minilm-l6-v2")["texts"]
    second = httpx.post(f"{server.url}/api/v1/embeddings", json={"texts": text}).json()
    assert server.model_stats("all-minilm-l6-v2")["texts"] == encoded_before
    assert first["embeddings"] == second["embeddings"]
    assert first["usage"] == second["usage"]


def test_similarity_pair_and_ranking(base_url: str) -> None:
    pair = httpx.post(f"{base_url}/api/v1/similarity", json={"text1": "a cat", "text2": "a kitten"}).json()
    far = httpx.post(f"{base_url}/api/v1/similarity", json={"text1": "a cat", "text2": "tax law"}).json()
    assert pair["similarity"] > far["similarity"]
    assert -1.0 <= far["similarity"] <= 1.0
    ranked = httpx.post(
        f"{base_url}/api/v1/similarity",
        json={"query": "pets", "candidates": ["stock market", "dogs and cats", "volcanoes"], "top_k": 2},
    ).json()
    assert ranked["results"][0]["index"] == 1
    assert len(ranked["results"]) == 2
    assert ranked["results"][0]["similarity"] >= ranked["results"][1]["similarity"]


def test_native_embeddings_many_texts(base_url: str) -> None:
    texts = [f"text {i}" for i in range(150)]  # more than one batch of 64
    reply = httpx.post(f"{base_url}/api/v1/embeddings", json={"texts": texts, "input_type": "query"}).json()
    assert reply["dimensions"] == 384
    vectors = np.array(reply["embeddings"])
    assert vectors.shape == (150, 384)
    assert reply["usage"]["prompt_tokens"] >= 150
