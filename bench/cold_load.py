"""A cold first request: the chat model is not loaded, a chat names it, and the answer comes within raw
llama-cpp-python's load time + 0.3 s.

The service runs the shipped config/ with the chat model's `load_on_startup` off, so it loads on demand. Raw: this
process loads the same GGUF with llama-cpp-python (the shipped context length, every core) and writes one token of
the same chat. Service: that chat (`max_tokens` 1) over HTTP to the unloaded model, end to end; then the model is
unloaded (POST /api/v1/models/{name}/unload) for the next round. 3 rounds each, taking turns; medians. Both read
the file from the same page cache.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.service import Service

MODEL = "smollm2-135m"
ROUNDS = 3
CHAT = [{"role": "user", "content": "Say hello."}]
SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "config"


def _config() -> str:
    folder = Path(tempfile.mkdtemp(prefix="sop-llm-bench-cold-"))
    for name in ("providers.yaml", "embeddings.yaml", "models.yaml"):
        shutil.copy(SHIPPED_CONFIG / name, folder / name)
    models = yaml.safe_load((folder / "models.yaml").read_text())
    models["models"][MODEL]["load_on_startup"] = False
    (folder / "models.yaml").write_text(yaml.safe_dump(models))
    return str(folder)


def _raw_seconds() -> float:
    from llama_cpp import Llama

    from sop_llm.providers.local.embedded import resolve_model_path

    context = yaml.safe_load((SHIPPED_CONFIG / "models.yaml").read_text())["models"][MODEL]["context_length"]
    started = time.perf_counter()
    llama = Llama(
        model_path=resolve_model_path("embedded:smollm2-135m-instruct"),
        n_ctx=context,
        n_threads=os.cpu_count() or 1,
        verbose=False,
    )
    llama.create_chat_completion(CHAT, max_tokens=1, temperature=0)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    llama.close()
    return seconds


def _service_seconds(url: str) -> float:
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 1, "temperature": 0}
    started = time.perf_counter()
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    seconds = time.perf_counter() - started
    reply.raise_for_status()
    httpx.post(f"{url}/api/v1/models/{MODEL}/unload", timeout=60).raise_for_status()
    return seconds


def run() -> dict[str, Any]:
    raw: list[float] = []
    served: list[float] = []
    with Service(CONFIG_DIR=_config()) as service:
        for i in range(ROUNDS):
            if i % 2:
                raw.append(_raw_seconds())
                served.append(_service_seconds(service.url))
            else:
                served.append(_service_seconds(service.url))
                raw.append(_raw_seconds())
    raw_s, served_s = statistics.median(raw), statistics.median(served)
    return {"raw_load_s": raw_s, "service_cold_s": served_s, "added_s": served_s - raw_s, "rounds": ROUNDS}


def summary(r: dict[str, Any]) -> str:
    return (
        f"cold first request (chat model loaded on demand): {r['service_cold_s']:.2f} s through the service vs raw "
        f"llama-cpp-python load + one token {r['raw_load_s']:.2f} s (+{r['added_s']:.2f} s; target <= +0.3 s; "
        f"medians of {r['rounds']})"
    )
