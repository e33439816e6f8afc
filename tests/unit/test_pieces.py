"""Small pieces on their own: cache, trace ids, SSE framing of errors, the batcher, the thread bridge."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest

from sop_llm.api.openai.streaming import openai_events
from sop_llm.infra.cache import MemoryCache
from sop_llm.infra.errors import AppError, OverloadedError, ProviderNotAvailableError
from sop_llm.infra.redis_keys import answer_key, circuit_key, embedding_key
from sop_llm.infra.trace import trace_id_from_headers
from sop_llm.providers.local.threaded import ThreadStream
from sop_llm.providers.types import Chunk, Usage, WorkClass
from sop_llm.services.embeddings.batcher import EmbeddingBatcher
from sop_llm.services.priority import work_class

pytestmark = pytest.mark.unit


async def test_memory_cache_ttl_and_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = MemoryCache(max_items=2, default_ttl=10)
    await cache.set_many([("a", b"1"), ("b", b"2")])
    assert await cache.get("a") == b"1"
    await cache.set("c", b"3")  # evicts the least recently used: b
    assert await cache.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 11)
    assert await cache.get("a") is None
    assert cache.stats.hits == 3
    assert cache.stats.misses == 2


def test_redis_keys_share_one_namespace() -> None:
    key = embedding_key("model", "text")
    assert key.startswith("sop-llm:emb:")
    assert key != embedding_key("model", "text2")
    assert answer_key("caller", "/v1/chat/completions", "{}").startswith("sop-llm:answer:")
    assert circuit_key("claude") == "sop-llm:circuit:claude"


def test_trace_ids() -> None:
    assert trace_id_from_headers("abc-1", None) == "abc-1"
    assert trace_id_from_headers("bad id with spaces", None) != "bad id with spaces"
    assert trace_id_from_headers(None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (
        "0af7651916cd43dd8448eb211c80319c"
    )
    assert len(trace_id_from_headers(None, "garbage")) == 32


async def test_openai_stream_error_after_start() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield Chunk(text="partial")
        raise ProviderNotAvailableError("upstream went away")

    frames = [f async for f in openai_events(chunks(), {"id": "x"}, lambda c: {"text": c.text if c else ""}, False)]
    assert frames[-1] == b"data: [DONE]\n\n"
    error = orjson.loads(frames[-2].removeprefix(b"data: "))
    assert error == {
        "error": {
            "message": "upstream went away",
            "type": "server_error",
            "param": None,
            "code": "provider_not_available",
        }
    }


async def test_openai_stream_usage_chunk() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield Chunk(text="hi")
        yield Chunk(finish_reason="stop", usage=Usage(3, 1))

    frames = [f async for f in openai_events(chunks(), {}, lambda c: {"t": c.text if c else None}, True)]
    usage = orjson.loads(frames[-2].removeprefix(b"data: "))
    assert usage == {
        "choices": [],
        "usage": {
            "prompt_tokens": 3,
            "completion_tokens": 1,
            "total_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }


def _encode(texts: list[str]) -> tuple[np.ndarray, list[int]]:
    # Deterministic "model": the vector holds the text's length, so results can be matched to inputs.
    return np.array([[len(t), 1.0] for t in texts], dtype=np.float32), [len(t) for t in texts]


async def test_batcher_coalesces_and_splits_large_requests() -> None:
    executor = ThreadPoolExecutor(1)
    batcher = EmbeddingBatcher(_encode, executor, batch_size=4, wait_s=0.005, max_queue=100)
    batcher.start()
    try:
        results = await asyncio.gather(
            batcher.submit(["a"]), batcher.submit(["bb", "ccc"]), batcher.submit(["d" * n for n in range(1, 8)])
        )
        assert results[0][0][:, 0].tolist() == [1]
        assert results[1][0][:, 0].tolist() == [2, 3]
        assert results[2][0][:, 0].tolist() == list(range(1, 8))
        assert batcher.stats.texts == 10
        assert batcher.stats.max_batch == 4
        assert batcher.stats.batches == 3
    finally:
        await batcher.aclose()
        executor.shutdown()


async def test_background_texts_yield_to_a_request_that_arrives_meanwhile() -> None:
    calls: list[list[str]] = []

    def slow_encode(texts: list[str]) -> tuple[np.ndarray, list[int]]:
        calls.append(texts)
        time.sleep(0.01)
        return _encode(texts)

    executor = ThreadPoolExecutor(1)
    batcher = EmbeddingBatcher(slow_encode, executor, batch_size=8, wait_s=0, max_queue=1000)
    batcher.start()

    async def in_background(texts: list[str]) -> tuple[np.ndarray, list[int]]:
        work_class.set(WorkClass.BATCH)
        return await batcher.submit(texts)

    try:
        queued = asyncio.create_task(in_background([f"b{i:03d}" for i in range(200)]))
        await asyncio.sleep(0.035)  # a few background batches in
        (vectors, _), background_result = await asyncio.gather(batcher.submit(["interactive"]), queued)
        assert vectors[:, 0].tolist() == [len("interactive")] and len(background_result[0]) == 200
        served = next(i for i, texts in enumerate(calls) if "interactive" in texts)
        before = [len(texts) for texts in calls[:served]]
        assert served < len(calls) - 10, "the request waited for the background texts"
        assert before[0] == 8  # full batches while nobody else asked
        after = [len(texts) for texts in calls[served + 1 :]]
        assert max(after) <= 4  # small ones while somebody did (within the last second)
    finally:
        await batcher.aclose()
        executor.shutdown()


async def test_batcher_refuses_when_full() -> None:
    executor = ThreadPoolExecutor(1)
    batcher = EmbeddingBatcher(_encode, executor, batch_size=4, wait_s=0, max_queue=3)
    with pytest.raises(OverloadedError):
        await batcher.submit(["a", "b", "c", "d"])
    executor.shutdown()


async def test_batcher_propagates_encode_errors() -> None:
    def broken(texts: list[str]) -> tuple[np.ndarray, list[int]]:
        raise RuntimeError("encoder failed")

    executor = ThreadPoolExecutor(1)
    batcher = EmbeddingBatcher(broken, executor, batch_size=4, wait_s=0, max_queue=10)
    batcher.start()
    with pytest.raises(RuntimeError, match="encoder failed"):
        await batcher.submit(["a"])
    await batcher.aclose()
    executor.shutdown()


async def test_thread_stream_cancels_producer_and_releases_once() -> None:
    executor = ThreadPoolExecutor(1)
    produced: list[int] = []
    released = threading.Event()

    def produce(emit, cancel: threading.Event) -> None:  # type: ignore[no-untyped-def]
        for i in range(10_000):
            if cancel.is_set():
                return
            produced.append(i)
            emit(i)
            time.sleep(0.001)

    stream = ThreadStream(executor, produce, released.set)
    seen = []
    async for item in stream:
        seen.append(item)
        if len(seen) == 3:
            break
    await asyncio.sleep(0.05)
    assert released.is_set()  # released after the producer stopped
    assert len(produced) < 100
    executor.shutdown()


async def test_thread_stream_raises_producer_errors() -> None:
    executor = ThreadPoolExecutor(1)

    def produce(emit, cancel):  # type: ignore[no-untyped-def]
        emit(1)
        raise AppError("boom")

    with pytest.raises(AppError, match="boom"):
        async for _ in ThreadStream(executor, produce):
            pass
    executor.shutdown()


async def test_openai_stream_ends_properly_after_an_unexpected_error() -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield Chunk(text="partial")
        raise RuntimeError("a bug")

    frames = [f async for f in openai_events(chunks(), {}, lambda c: {"t": c.text if c else None}, False)]
    assert frames[-1] == b"data: [DONE]\n\n"
    assert orjson.loads(frames[-2].removeprefix(b"data: "))["error"]["code"] == "internal_error"


async def test_unexpected_errors_answer_500_with_the_trace_header() -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    from sop_llm.api.middleware.trace import TraceMiddleware
    from sop_llm.services.monitoring.metrics import Metrics

    async def broken(request: object) -> None:
        raise RuntimeError("a bug")

    # As in create_app: user middleware sits inside Starlette's last-resort error handler.
    app = Starlette(
        routes=[Route("/v1/x", broken), Route("/api/v1/x", broken)],
        middleware=[Middleware(TraceMiddleware, metrics=Metrics([]))],
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        openai_style = await client.get("/v1/x", headers={"X-Request-ID": "abc"})
        native = await client.get("/api/v1/x", headers={"X-Request-ID": "def"})
    assert openai_style.status_code == 500
    assert openai_style.headers["x-request-id"] == "abc"
    assert openai_style.json()["error"]["code"] == "internal_error"
    assert "a bug" not in openai_style.text  # no internals in bodies
    assert native.json()["error"]["trace_id"] == "def"
    assert native.headers["x-request-id"] == "def"
