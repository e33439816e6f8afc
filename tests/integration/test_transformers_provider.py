"""The `transformers` provider on the embedded SmolLM2 GGUF (dequantized by transformers), constructed directly.

Loading takes ~12 s, so one provider serves the module; evidence of stopped work comes from its counters.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from sop_llm.infra.errors import ContextLengthExceededError, ProviderInitializationError
from sop_llm.infra.model_config import EmbeddingModelConfig, ModelConfig, ProviderConfig
from sop_llm.providers.local.sentence_transformers import SentenceTransformersProvider
from sop_llm.providers.local.transformers import TransformersProvider
from sop_llm.providers.types import ChatMessage, GenerationRequest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EMBEDDED = "embedded:smollm2-135m-instruct"
COUNTING = "1, 2, 3, 4, 5,"  # SmolLM2 keeps counting until max_tokens
# SmolLM2's tokenizer splits digits, spaces and commas: the prompt is 14 tokens, and every further number 3.
COUNTING_TOKENS = 14
CHAT = [ChatMessage(role="user", content="Describe the sea in one sentence.")]


def _provider(model: str = EMBEDDED, **options: object) -> TransformersProvider:
    config = ModelConfig(provider="hf", model=model, load_on_startup=False, options=options)
    return TransformersProvider("smollm2-hf", config, ProviderConfig(type="transformers"))


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[TransformersProvider]:
    loaded = _provider()
    await loaded.load()
    yield loaded
    await loaded.aclose()
    assert not (await loaded.health()).ok


def test_importing_the_module_does_not_import_torch() -> None:
    code = (
        "import sop_llm.providers.local.transformers, sys; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


async def test_health_and_capabilities(provider: TransformersProvider) -> None:
    health = await provider.health()
    assert health.ok
    assert "1 instance(s) loaded" in health.detail
    assert {c.value for c in provider.capabilities} == {"text_generation", "chat", "streaming"}
    assert provider.local


async def test_generate_capped_reports_length_and_real_usage(provider: TransformersProvider) -> None:
    before = provider.stats()
    result = await provider.generate(GenerationRequest(prompt=COUNTING, max_tokens=12, temperature=0))
    assert result.text == " 6, 7, 8, 9,"
    assert result.finish_reason == "length"
    assert result.usage.prompt_tokens == COUNTING_TOKENS
    assert result.usage.completion_tokens == 12
    after = provider.stats()
    assert after["tokens_generated"] - before["tokens_generated"] == 12
    assert after["generations"] == before["generations"] + 1
    assert after["idle_instances"] == 1


async def test_stream_concatenation_equals_greedy_generate(provider: TransformersProvider) -> None:
    request = GenerationRequest(messages=CHAT, max_tokens=24, temperature=0)
    whole = await provider.generate(request)
    chunks = [c async for c in provider.stream(request)]
    assert len(chunks) > 5
    assert "".join(c.text for c in chunks) == whole.text
    assert whole.text.strip()
    last = chunks[-1]
    assert last.finish_reason == whole.finish_reason
    assert last.usage == whole.usage
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_chat_request_stops_at_end_of_turn(provider: TransformersProvider) -> None:
    request = GenerationRequest(
        messages=[ChatMessage(role="user", content="Say hello.")], max_tokens=200, temperature=0
    )
    result = await provider.generate(request)
    assert result.text.strip()
    assert "<|im_end|>" not in result.text
    assert result.finish_reason == "stop"
    assert 0 < result.usage.completion_tokens < 200
    assert result.usage.prompt_tokens > 10  # the chat template's system turn and markers are counted


async def test_stop_strings_cut_text_and_generation_alike_in_both_modes(provider: TransformersProvider) -> None:
    request = GenerationRequest(prompt=COUNTING, max_tokens=40, temperature=0, stop=[" 9,", "never"])
    before = provider.stats()["tokens_generated"]
    result = await provider.generate(request)
    assert result.text == " 6, 7, 8,"
    assert result.finish_reason == "stop"
    assert provider.stats()["tokens_generated"] - before == 12  # generation ended with " 9,", not at max_tokens
    streamed = [c.text async for c in provider.stream(request)]
    assert "".join(streamed) == " 6, 7, 8,"


async def test_closing_the_stream_early_stops_generation(provider: TransformersProvider) -> None:
    before = provider.stats()
    stream = provider.stream(GenerationRequest(prompt=COUNTING, max_tokens=1500, temperature=0))
    received = 0
    async for chunk in stream:
        received += bool(chunk.text)
        if received == 5:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    after = provider.stats()
    generated = after["tokens_generated"] - before["tokens_generated"]
    assert after["cancelled"] == before["cancelled"] + 1
    assert 5 <= generated < 20, generated  # 1500 were asked for
    assert after["idle_instances"] == 1  # the instance is back: the worker thread has stopped
    await asyncio.sleep(0.3)
    assert provider.stats()["tokens_generated"] == after["tokens_generated"]  # and stays stopped


async def test_cancelling_a_non_streaming_generate_stops_it(provider: TransformersProvider) -> None:
    before = provider.stats()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await provider.generate(GenerationRequest(prompt=COUNTING, max_tokens=1500, temperature=0))
    after = provider.stats()
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["tokens_generated"] - before["tokens_generated"] < 100
    assert after["idle_instances"] == 1


async def test_sampling_with_a_seed_is_reproducible(provider: TransformersProvider) -> None:
    request = GenerationRequest(messages=CHAT, max_tokens=12, temperature=1.0, top_p=0.95, seed=7)
    first, second = await provider.generate(request), await provider.generate(request)
    assert first.text == second.text
    assert first.usage.completion_tokens > 0


async def test_prompt_longer_than_the_context_is_refused(provider: TransformersProvider) -> None:
    with pytest.raises(ContextLengthExceededError, match="context of 2048 tokens"):
        await provider.generate(GenerationRequest(prompt="1, " * 1500, max_tokens=8))
    assert provider.stats()["idle_instances"] == 1


async def test_unloaded_provider_refuses_clearly() -> None:
    with pytest.raises(ProviderInitializationError, match="not loaded"):
        await _provider().generate(GenerationRequest(prompt="hi"))


async def test_bad_options_are_initialization_errors() -> None:
    with pytest.raises(ProviderInitializationError, match="unknown torch_dtype 'float99'"):
        await _provider(torch_dtype="float99").load()
    with pytest.raises(ProviderInitializationError, match="quantize_8bit is CPU-only"):
        await _provider(quantize_8bit=True, device="cuda").load()


async def test_missing_local_path_is_a_clear_initialization_error() -> None:
    provider = _provider(model="/nonexistent/models/qwen")
    with pytest.raises(ProviderInitializationError, match=r"'/nonexistent/models/qwen'.*does not exist"):
        await provider.load()
    assert not (await provider.health()).ok


async def test_unreachable_hub_id_is_a_clear_initialization_error() -> None:
    # HF_HUB_OFFLINE=1 (tests/conftest.py): no network here, and the model is not in the cache.
    provider = _provider(model="sop-llm-tests/no-such-model")
    with pytest.raises(ProviderInitializationError, match="needs network access"):
        await provider.load()


async def test_8bit_quantized_model_loads_and_generates() -> None:
    provider = _provider(quantize_8bit=True)
    await provider.load()
    try:
        assert "int8" in (await provider.health()).detail
        result = await provider.generate(GenerationRequest(prompt=COUNTING, max_tokens=8, temperature=0))
        assert result.text.startswith(" 6, 7,")
        assert result.usage.completion_tokens == 8
    finally:
        await provider.aclose()


async def test_models_loaded_at_once_leave_transformers_whole() -> None:
    """transformers patches process-wide state while it builds a model (weight tying off, init functions, the
    default dtype) and restores what it saw on entry; two loads in two threads could leave the patches in place
    for good, and every later transformers model then answered with garbage. Models load in worker threads,
    several at once at startup, so loads take turns."""
    config = EmbeddingModelConfig(provider="local-embeddings", model="embedded:all-minilm-l6-v2")

    def load_embedding_models() -> None:
        for _ in range(10):
            SentenceTransformersProvider("twin", config, ProviderConfig(type="sentence_transformers")).load_blocking()

    await asyncio.gather(*(asyncio.to_thread(load_embedding_models) for _ in range(2)))
    provider = _provider()
    await provider.load()
    try:
        result = await provider.generate(GenerationRequest(prompt=COUNTING, max_tokens=12, temperature=0))
        assert result.text == " 6, 7, 8, 9,"
    finally:
        await provider.aclose()
