"""`sop-llm models check`: load the startup models the way the server does, with a progress bar, then run one tiny
generation and one embedding — a quick way to see that an installation (or an image) works."""

from __future__ import annotations

import asyncio
import time

from tqdm import tqdm

from sop_llm.infra.logging import setup_logging
from sop_llm.infra.settings import Settings
from sop_llm.providers.types import GenerationRequest
from sop_llm.services.container import build_services

SETTLED = ("ready", "failed")


async def check_models(settings: Settings) -> int:
    setup_logging(settings)
    services = build_services(settings)
    names = services.local.default_names() + services.embeddings.default_names()
    started = time.perf_counter()
    services.local.start()
    services.embeddings.start()
    try:
        with tqdm(total=len(names), desc="loading models", unit="model") as bar:
            settled: dict[str, str] = {}
            while len(settled) < len(names):
                for name, state in services.ready()[1].items():
                    if state in SETTLED and name not in settled:
                        settled[name] = state
                        bar.set_postfix_str(f"{name}: {state}")
                        bar.update()
                await asyncio.sleep(0.05)
        print(f"loaded in {time.perf_counter() - started:.1f} s: " + ", ".join(f"{n} {s}" for n, s in settled.items()))
        if any(state == "failed" for state in settled.values()):
            return 1
        if services.local.default_names():
            began = time.perf_counter()
            model, completion = await services.router.generate_with_fallback(
                None, GenerationRequest(prompt="Hello", max_tokens=8)
            )
            print(f"{model}: {completion.usage.completion_tokens} tokens in {time.perf_counter() - began:.2f} s")
        if services.embeddings.default_names():
            began = time.perf_counter()
            result = await services.embeddings.embed(None, ["hello"])
            print(f"{result.model}: {result.vectors.shape[1]} dimensions in {time.perf_counter() - began:.2f} s")
    finally:
        await services.aclose()
    return 0
