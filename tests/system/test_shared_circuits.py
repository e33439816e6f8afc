"""Circuit state shared through a redis-server this module starts: when one replica's breaker opens, the other
stops calling the failing deployment too, within about a second, without a failing call of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, make_settings
from tests.system.servers import Redis

pytestmark = [pytest.mark.system]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer, FakeOpenAI]]:
    upstream = FakeOpenAI().start()
    redis = Redis()
    redis.start()
    folder = Path(tmp_path_factory.mktemp("shared-circuits"))
    (folder / "providers.yaml").write_text(f'providers:\n  fake: {{type: openai, base_url: "{upstream.url}"}}\n')
    (folder / "models.yaml").write_text(
        "models:\n  good: {provider: fake, model: ok}\n  flaky: {provider: fake, model: fail-500}\n"
    )
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    settings = {
        "CONFIG_DIR": str(folder),
        "LLM_DEFAULT_MODEL": "good",
        "JSON_FIXER_MODEL": "good",
        "LLM_RETRIES": 0,
        "CIRCUIT_FAILURE_THRESHOLD": 3,
        "CIRCUIT_COOLDOWN_SECONDS": 60,
        "REDIS_URL": redis.url,
    }
    first = LiveServer(make_settings(**settings)).start()
    second = LiveServer(make_settings(**settings)).start()
    yield first, second, upstream
    first.stop()
    second.stop()
    redis.remove()
    upstream.stop()


def _circuit(server: LiveServer, name: str) -> dict:
    providers = httpx.get(f"{server.url}/api/v1/providers").json()["providers"]
    circuit: dict = next(p for p in providers if p["name"] == name)["circuit"]
    return circuit


def _ask(server: LiveServer, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=30)


def test_a_breaker_opened_by_one_replica_opens_on_the_other(
    replicas: tuple[LiveServer, LiveServer, FakeOpenAI],
) -> None:
    first, second, upstream = replicas
    for _ in range(3):
        assert _ask(first, "flaky").status_code >= 500
    assert upstream.count("fail-500") == 3
    assert _circuit(first, "flaky")["state"] == "open"
    deadline = time.monotonic() + 5
    while _circuit(second, "flaky")["state"] != "open":
        assert time.monotonic() < deadline, "the other replica never heard of the open breaker"
        time.sleep(0.1)
    assert _circuit(second, "flaky")["opened_elsewhere"] == 1
    refused = _ask(second, "flaky")
    assert refused.status_code == 503
    assert upstream.count("fail-500") == 3  # the second replica did not call the failing upstream at all
    assert _ask(second, "good").status_code == 200  # other deployments are untouched
    assert _circuit(second, "good")["state"] == "closed"
