"""Pulled models served by a live server without a restart or a YAML edit: a GGUF pulled through
`POST /api/v1/models/pull` (progress as server-sent events) answers chats by name; an embedding model pulled with
the official `ollama` client answers /v1/embeddings; a model pulled by `sop-llm models pull` — another process —
is served from its next request; deleting one stops serving it. The hub is tests/fake_hub.py on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import pytest

from sop_llm.providers.local.embedded import resolve_model_path
from tests.fake_hub import FakeHub
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

GGUF = "test-org/SmolLM2-135M-Instruct-GGUF"
EMBEDDING = "test-org/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    gguf = Path(resolve_model_path("embedded:smollm2-135m-instruct"))
    embedding = Path(resolve_model_path("embedded:all-minilm-l6-v2"))
    files = {str(p.relative_to(embedding)): p for p in sorted(embedding.rglob("*")) if p.is_file()}
    with FakeHub() as started:
        started.add_repo(GGUF, {"SmolLM2-135M-Instruct-Q4_1.gguf": gguf, "SmolLM2-135M-Instruct-Q8_0.gguf": gguf})
        started.add_repo(EMBEDDING, files)
        yield started


@pytest.fixture(scope="module")
def served(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    from huggingface_hub import constants

    folder = tmp_path_factory.mktemp("pulled-served")
    cache, database = folder / "hf-home" / "hub", f"sqlite+aiosqlite:///{folder}/service.db"
    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False  # the session runs offline; this server reaches the hub on loopback only
    live = LiveServer(make_settings(DATABASE_URL=database, HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(cache))).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {"HF_ENDPOINT": hub.url, "HF_HOME": str(folder / "hf-home"), "HF_HUB_OFFLINE": "0", "DATABASE_URL": database}
    yield live, env
    live.stop()
    constants.HF_HUB_OFFLINE = offline


def _chat(server: LiveServer, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=180)


def test_a_gguf_pulled_over_http_answers_by_name(served: tuple[LiveServer, dict[str, str]]) -> None:
    server, _ = served
    name = f"{GGUF}:Q4_1"
    assert _chat(server, name).status_code == 404
    events: list[tuple[str, dict]] = []
    with httpx.stream("POST", f"{server.url}/api/v1/models/pull", json={"model": f"hf.co/{name}"}, timeout=180) as r:
        assert r.status_code == 200
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in events]
    assert "progress" in kinds and kinds[-1] == "done", kinds
    done = events[-1][1]
    assert done["name"] == name and done["kind"] == "gguf" and done["context_length"] == 8192
    downloaded = [e for k, e in events if k == "progress" and e["stage"] == "downloading"]
    assert downloaded[-1]["completed"] == downloaded[-1]["total"] == done["size_bytes"]
    answer = _chat(server, name)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == name
    assert _chat(server, f"hf.co/{name}").status_code == 200  # Ollama's spelling of the same model
    listed = {m["id"] for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert name in listed
    missing = httpx.post(f"{server.url}/api/v1/models/pull", json={"model": "test-org/nothing-here"})
    assert missing.status_code == 404 and "test-org/nothing-here" in missing.text
    no_such = httpx.post(f"{server.url}/api/v1/models/pull", json={"model": f"{GGUF}:Q2_K"})
    assert no_such.status_code == 400 and "Q4_1" in no_such.text  # it lists what the repository holds


def test_an_embedding_model_pulled_with_the_ollama_client_embeds_and_is_deleted(
    served: tuple[LiveServer, dict[str, str]],
) -> None:
    server, _ = served
    client = ollama.Client(host=server.url)
    progress = list(client.pull(f"hf.co/{EMBEDDING}", stream=True))
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.digest and p.total for p in progress)
    vectors = httpx.post(f"{server.url}/v1/embeddings", json={"model": EMBEDDING, "input": ["a cat"]}, timeout=120)
    assert vectors.status_code == 200, vectors.text
    shipped = httpx.post(f"{server.url}/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": ["a cat"]})
    # The shipped copy is served int8-quantized on onnxruntime, the pulled one on torch: the same model, near alike.
    a, b = (np.array(r.json()["data"][0]["embedding"]) for r in (vectors, shipped))
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99
    client.delete(EMBEDDING)
    gone = httpx.post(f"{server.url}/v1/embeddings", json={"model": EMBEDDING, "input": ["a cat"]})
    assert gone.status_code == 404
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete(EMBEDDING)
    assert missing.value.status_code == 404


def test_a_model_pulled_by_the_cli_is_served_from_its_next_request(
    served: tuple[LiveServer, dict[str, str]],
) -> None:
    server, env = served
    pulled = subprocess.run(
        [sys.executable, "-m", "sop_llm", "models", "pull", f"{GGUF}:Q8_0", "--name", "smol-q8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pulled.returncode == 0, pulled.stderr
    answer = _chat(server, "smol-q8")
    assert answer.status_code == 200, answer.text
    deleted = httpx.delete(f"{server.url}/api/v1/models/smol-q8")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert _chat(server, "smol-q8").status_code == 404
