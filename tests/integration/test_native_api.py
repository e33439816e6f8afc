"""The native API: health, readiness, models, generate, load/unload."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.live_server import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.api]


def test_health_and_ready(base_url: str) -> None:
    health = httpx.get(f"{base_url}/api/v1/health").json()
    assert health["status"] == "ok"
    assert health["components"]["models"] == {"smollm2-135m": "ready", "all-minilm-l6-v2": "ready"}
    assert httpx.get(f"{base_url}/api/v1/health/ready").json()["ready"] is True


def test_models_listing(base_url: str) -> None:
    listing = httpx.get(f"{base_url}/api/v1/models").json()
    by_name = {m["name"]: m for m in listing["models"]}
    smol = by_name["smollm2-135m"]
    assert smol["state"] == "ready"
    assert smol["default"] is True
    assert "json_schema" in smol["capabilities"]
    assert by_name["all-minilm-l6-v2"]["dimensions"] == 384


def test_generate_json(base_url: str) -> None:
    reply = httpx.post(
        f"{base_url}/api/v1/models/generate",
        json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, "temperature": 0},
        timeout=60,
    ).json()
    assert reply["model"] == "smollm2-135m"
    assert reply["text"]
    assert reply["usage"]["completion_tokens"] <= 8


def test_generate_with_json_schema(base_url: str) -> None:
    schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    reply = httpx.post(
        f"{base_url}/api/v1/models/generate",
        json={"prompt": "Favourite color as JSON:", "json_schema": schema, "max_tokens": 40, "temperature": 0},
        timeout=60,
    ).json()
    assert isinstance(json.loads(reply["text"])["color"], str)


def test_an_unloaded_model_loads_again_on_its_next_request(server: LiveServer) -> None:
    url = server.url
    loads = httpx.get(f"{url}/api/v1/models").json()
    before = next(m for m in loads["models"] if m["name"] == "smollm2-135m")["loads"]
    assert httpx.post(f"{url}/api/v1/models/smollm2/unload").json()["state"] == "unloaded"
    assert httpx.get(f"{url}/api/v1/health/ready").status_code == 200  # it still serves: on demand
    answered = httpx.post(f"{url}/api/v1/models/generate", json={"prompt": "hi", "max_tokens": 2}, timeout=120)
    assert answered.status_code == 200, answered.text
    entry = next(m for m in httpx.get(f"{url}/api/v1/models").json()["models"] if m["name"] == "smollm2-135m")
    assert entry["state"] == "ready"
    assert entry["loads"] == before + 1
    assert httpx.post(f"{url}/api/v1/models/smollm2/load").status_code == 200  # loaded already


def test_an_unloaded_embedding_model_loads_again_on_its_next_request(server: LiveServer) -> None:
    url = server.url
    assert httpx.post(f"{url}/api/v1/models/text-embedding-3-small/unload").json()["name"] == "all-minilm-l6-v2"
    assert httpx.post(f"{url}/api/v1/embeddings", json={"texts": ["x"]}, timeout=120).status_code == 200
    assert httpx.post(f"{url}/api/v1/models/all-minilm-l6-v2/load").status_code == 200  # loaded already


def test_loading_a_loaded_model_changes_nothing(server: LiveServer) -> None:
    url = server.url
    server.wait_ready(time.monotonic() + 60)
    before = server.model_stats("smollm2-135m")["slots"]
    for name in ("smollm2", "all-minilm-l6-v2"):
        again = httpx.post(f"{url}/api/v1/models/{name}/load")
        assert again.status_code == 200
        assert again.json()["state"] == "ready"
    assert httpx.get(f"{url}/api/v1/health/ready").status_code == 200  # no reload started
    assert server.model_stats("smollm2-135m")["slots"] == before  # no second llama.cpp context
