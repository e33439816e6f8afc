"""Rate limits in one process (memory counters; tests/system/test_redis_limits.py covers Redis and replicas): per
client IP with auth off, requests per minute and tokens per minute, charged from what answers report."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]


@pytest.fixture(scope="module")
def metered() -> Iterator[LiveServer]:
    live = LiveServer(make_settings(RATE_LIMIT_TOKENS_PER_MINUTE=60, RATE_LIMIT_REQUESTS_PER_MINUTE=1000)).start()
    yield live
    live.stop()


def _chat(server: LiveServer, stream: bool = False) -> httpx.Response:
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Count from one"}],
        "max_tokens": 12,
        "temperature": 0,
        "stream": stream,
        "stream_options": {"include_usage": True},
    }
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


def test_tokens_per_minute_are_charged_from_usage(metered: LiveServer) -> None:
    first = _chat(metered)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert 12 < used < 60
    answered = 1
    while (response := _chat(metered, stream=answered % 2 == 1)).status_code == 200:  # streams are charged too
        answered += 1
        assert answered * used < 60 + used, "the token budget was not enforced"
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "tokens" in error["message"]
    assert int(response.headers["Retry-After"]) >= 1
    assert answered == -(-60 // used)  # the request that crosses the budget completes; the next waits


def test_health_is_never_limited(metered: LiveServer) -> None:
    for _ in range(5):
        assert httpx.get(f"{metered.url}/api/v1/health").status_code == 200
