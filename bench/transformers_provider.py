"""The `transformers` provider on the embedded SmolLM2 GGUF, float32 vs dynamic int8: load time, memory, tok/s.

Run with `python -m bench.transformers_provider`. Each variant runs in a fresh process so that its memory
figures are its own; the baseline RSS is taken after torch and transformers are imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import psutil

PROMPT = "1, 2, 3, 4, 5,"  # SmolLM2 keeps counting: every run generates exactly MAX_TOKENS tokens
MAX_TOKENS = 128
RUNS = 3
VARIANTS = {"float32": {}, "int8 (quantize_8bit)": {"quantize_8bit": True}}


async def measure(options: dict[str, object]) -> dict[str, float]:
    import torch
    import transformers  # noqa: F401 - imported before the baseline so that only the model is counted

    from sop_llm.infra.model_config import ModelConfig, ProviderConfig
    from sop_llm.providers.local.transformers import TransformersProvider
    from sop_llm.providers.types import GenerationRequest

    process = psutil.Process()
    rss_before = process.memory_info().rss
    config = ModelConfig(provider="hf", model="embedded:smollm2-135m-instruct", options=options)
    provider = TransformersProvider("bench", config, ProviderConfig(type="transformers"))
    started = time.perf_counter()
    await provider.load()
    load_s = time.perf_counter() - started
    rss_loaded = process.memory_info().rss

    request = GenerationRequest(prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    await provider.generate(GenerationRequest(prompt=PROMPT, max_tokens=16, temperature=0))  # warm-up
    rates, firsts = [], []
    for _ in range(RUNS):
        started = time.perf_counter()
        result = await provider.generate(request)
        rates.append(result.usage.completion_tokens / (time.perf_counter() - started))
        started = time.perf_counter()
        first = None
        async for _chunk in provider.stream(request):
            first = first or time.perf_counter() - started
        firsts.append(first or float("nan"))
    await provider.aclose()
    return {
        "load_s": load_s,
        "rss_increase_mb": (rss_loaded - rss_before) / 2**20,
        "rss_loaded_mb": rss_loaded / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tok_per_s": statistics.median(rates),
        "first_token_ms": statistics.median(firsts) * 1000,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--variant":
        print(json.dumps(asyncio.run(measure(VARIANTS[sys.argv[2]]))))
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"machine: {machine}; {MAX_TOKENS} greedy tokens, median of {RUNS} runs")
    for name in VARIANTS:
        out = subprocess.run(
            [sys.executable, "-m", "bench.transformers_provider", "--variant", name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{name}: load {r['load_s']:.1f} s | RSS +{r['rss_increase_mb']:.0f} MB "
            f"(process {r['rss_loaded_mb']:.0f} MB, peak {r['peak_rss_mb']:.0f} MB) | {r['tok_per_s']:.1f} tok/s | "
            f"first token {r['first_token_ms']:.0f} ms | torch threads {r['torch_threads']}"
        )


if __name__ == "__main__":
    main()
