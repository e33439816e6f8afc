"""llama-cpp-python's own OpenAI-compatible server (`llama_cpp.server`) on the embedded GGUF, on a free loopback
port: a real upstream nobody here wrote, for the tests of the `openai` provider."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from sop_llm.providers.local.embedded import resolve_model_path
from tests.live_server import free_port


@contextmanager
def running_llama_server() -> Iterator[str]:
    """Start the server (model alias `smollm2`), yield its base URL (`…/v1`), stop it.

    By default the server ends a running stream early (a bare `[DONE]`) whenever another request arrives — the
    service's periodic health check (GET /v1/models) included — so that is switched off: requests wait their turn.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", resolve_model_path("embedded:smollm2-135m-instruct"),
        "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
        "--interrupt_requests", "false",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("llama_cpp.server did not start")
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)
