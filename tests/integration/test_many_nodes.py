"""One model served by several deployments (nodes), through the live service against scripted OpenAI-compatible
nodes (tests/fakes/openai_server.py): each strategy's choice as clients see it (`X-Served-By`), retries on another
node, breakers taking a failing node out and letting it back, a node's own max_parallel / rpm / tpm, and a
configuration reload that keeps the requests in flight."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from sop_llm.infra.model_config import ConfigError, load_service_config
from sop_llm.providers.registry import provider_types
from sop_llm.services.routing.build import plan_deployments
from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, free_port, make_settings
from tests.minute import clear_of_the_minute_turn

pytestmark = [pytest.mark.integration, pytest.mark.api]

COOLDOWN = 1.0


@pytest.fixture(scope="module")
def nodes() -> Iterator[dict[str, FakeOpenAI]]:
    started = {name: FakeOpenAI().start() for name in ("a", "b", "c")}
    yield started
    for node in started.values():
        node.stop()


def _models(nodes: dict[str, FakeOpenAI], dead: str, moving_to: str = "a") -> str:
    a, b, c = (nodes[n].url for n in ("a", "b", "c"))
    return f"""
models:
  spread:
    deployments:
      - {{provider: node, base_url: "{a}", model: sleep-300, name: spread-a}}
      - {{provider: node, base_url: "{b}", model: sleep-300, name: spread-b}}
  weighted:
    strategy: weighted
    deployments:
      - {{provider: node, base_url: "{a}", model: ok, weight: 3, name: heavy}}
      - {{provider: node, base_url: "{b}", model: ok, name: light}}
  sticky:
    strategy: prefix_affinity
    deployments:
      - {{provider: node, base_url: "{a}", model: ok, name: sticky-a}}
      - {{provider: node, base_url: "{b}", model: ok, name: sticky-b}}
      - {{provider: node, base_url: "{c}", model: ok, name: sticky-c}}
  survivor:
    deployments:
      - {{provider: node, base_url: "{dead}", model: ok, name: dead}}
      - {{provider: node, base_url: "{c}", model: ok, name: alive}}
  flaky:
    deployments:
      - {{provider: node, base_url: "{a}", model: flaky, name: flaky-a}}
      - {{provider: node, base_url: "{b}", model: ok, name: flaky-b}}
  capped:
    deployments:
      - {{provider: node, base_url: "{c}", model: sleep-200, max_parallel: 2, name: capped-c}}
  rationed:
    strategy: weighted
    deployments:
      - {{provider: node, base_url: "{a}", model: rationed, rpm: 3, weight: 100, name: by-minute}}
      - {{provider: node, base_url: "{b}", model: ok, name: overflow}}
  metered:
    strategy: weighted
    deployments:
      - {{provider: node, base_url: "{a}", model: metered, tpm: 20, weight: 100, name: by-tokens}}
      - {{provider: node, base_url: "{b}", model: ok, name: spill}}
  moving:
    deployments:
      - {{provider: node, base_url: "{nodes[moving_to].url}", model: sleep-1500, name: moving-{moving_to}}}
"""


@pytest.fixture(scope="module")
def service(nodes: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    folder = Path(tmp_path_factory.mktemp("many-nodes"))
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    (folder / "providers.yaml").write_text("providers:\n  node: {type: openai, base_url: http://127.0.0.1:9/v1}\n")
    (folder / "models.yaml").write_text(_models(nodes, dead))
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    live = LiveServer(
        make_settings(
            CONFIG_DIR=str(folder),
            LLM_DEFAULT_MODEL="weighted",
            JSON_FIXER_MODEL="weighted",
            LLM_RETRIES=0,
            CIRCUIT_FAILURE_THRESHOLD=2,
            CIRCUIT_COOLDOWN_SECONDS=COOLDOWN,
        )
    ).start()
    live.folder = folder  # type: ignore[attr-defined]
    live.dead = dead  # type: ignore[attr-defined]
    yield live
    live.stop()


def _ask(service: LiveServer, model: str, text: str = "hi", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 5, **extra}
    return httpx.post(f"{service.url}/v1/chat/completions", json=body, timeout=30)


def _deployment(service: LiveServer, name: str) -> dict[str, Any]:
    providers = httpx.get(f"{service.url}/api/v1/providers").json()["providers"]
    return next(p for p in providers if p["name"] == name)  # type: ignore[no-any-return]


def test_weights_share_the_traffic_evenly_spread(service: LiveServer) -> None:
    served = [_ask(service, "weighted").headers["x-served-by"] for _ in range(40)]
    assert Counter(served) == {"heavy": 30, "light": 10}
    assert "heavy,heavy,heavy" not in ",".join(served[:8]) or served[:4].count("light") == 1


def test_least_outstanding_spreads_requests_in_flight(service: LiveServer, nodes: dict[str, FakeOpenAI]) -> None:
    before = {name: nodes[name].count("sleep-300") for name in ("a", "b")}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _ask(service, "spread"), range(8)))
    assert all(answer.status_code == 200 for answer in answers)
    assert Counter(answer.headers["x-served-by"] for answer in answers) == {"spread-a": 4, "spread-b": 4}
    assert {name: nodes[name].count("sleep-300") - before[name] for name in ("a", "b")} == {"a": 4, "b": 4}


def test_prefix_affinity_sends_the_second_turn_where_the_first_went(service: LiveServer) -> None:
    homes = []
    for index in range(24):
        opening = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Tell me about {index}"}]
        first = httpx.post(
            f"{service.url}/v1/chat/completions", json={"model": "sticky", "messages": opening, "max_tokens": 5}
        )
        follow_up = [*opening, {"role": "assistant", "content": "fake answer"}, {"role": "user", "content": "more"}]
        second = httpx.post(
            f"{service.url}/v1/chat/completions", json={"model": "sticky", "messages": follow_up, "max_tokens": 5}
        )
        assert second.headers["x-served-by"] == first.headers["x-served-by"]
        homes.append(first.headers["x-served-by"])
    assert len(set(homes)) == 3  # the conversations spread over every node


def test_a_refused_connection_is_retried_on_another_node_and_the_node_is_taken_out(service: LiveServer) -> None:
    for _ in range(6):
        answer = _ask(service, "survivor")
        assert answer.status_code == 200
        assert answer.headers["x-served-by"] == "alive"
    dead = _deployment(service, "dead")
    assert dead["stats"]["failures"] <= 2  # the breaker opened after two failures; the node was passed over after
    with httpx.stream(
        "POST",
        f"{service.url}/v1/chat/completions",
        json={"model": "survivor", "messages": [{"role": "user", "content": "hi"}], "stream": True},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["x-served-by"] == "alive"
        assert "[DONE]" in stream.read().decode()


def test_a_failing_node_is_ejected_then_probed_back(service: LiveServer, nodes: dict[str, FakeOpenAI]) -> None:
    nodes["a"].set_mode("flaky", "fail-500")
    for _ in range(6):
        answer = _ask(service, "flaky")
        assert answer.status_code == 200  # every request answered, by the other node when this one failed
    assert _deployment(service, "flaky-a")["state"] == "ejected"
    failed_calls = nodes["a"].count("flaky")
    assert failed_calls == 2
    nodes["a"].set_mode("flaky", "ok")
    time.sleep(COOLDOWN + 0.2)
    served = Counter(_ask(service, "flaky").headers["x-served-by"] for _ in range(6))
    assert served["flaky-a"] >= 2  # back in the rotation once its probe succeeded
    assert _deployment(service, "flaky-a")["state"] in ("healthy", "unknown")


def test_max_parallel_holds_requests_until_the_node_has_room(service: LiveServer, nodes: dict[str, FakeOpenAI]) -> None:
    nodes["c"].peak = 0
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _ask(service, "capped"), range(6)))
    assert [answer.status_code for answer in answers] == [200] * 6
    assert nodes["c"].peak == 2


def test_rpm_and_tpm_send_the_rest_elsewhere(service: LiveServer, nodes: dict[str, FakeOpenAI]) -> None:
    clear_of_the_minute_turn()
    served = Counter(_ask(service, "rationed").headers["x-served-by"] for _ in range(8))
    assert served == {"by-minute": 3, "overflow": 5}
    assert nodes["a"].count("rationed") == 3
    # Each answer uses 7 tokens: asked at 0, 7 and 14 tokens used this minute, the node takes 3; at 21 it is over 20.
    served = Counter(_ask(service, "metered").headers["x-served-by"] for _ in range(6))
    assert served == {"by-tokens": 3, "spill": 3}
    limits = _deployment(service, "by-tokens")["limits"]
    assert limits["tpm"] == 20 and limits["refused"]["tpm"] == 3


def test_providers_show_each_nodes_load_latency_and_state(service: LiveServer) -> None:
    _ask(service, "weighted")
    heavy = _deployment(service, "heavy")
    assert heavy["model"] == "weighted" and heavy["weight"] == 3
    assert heavy["state"] in ("healthy", "unknown")
    assert heavy["load"]["served"] >= 1 and heavy["load"]["in_flight"] == 0
    assert heavy["load"]["per_token_ms"] > 0
    assert heavy["load"]["prompt_tokens"] >= 5 and heavy["load"]["cached_prompt_tokens"] == 0
    model = next(m for m in httpx.get(f"{service.url}/api/v1/models").json()["models"] if m["name"] == "sticky")
    assert model["strategy"] == "prefix_affinity"
    assert model["deployments"] == ["sticky-a", "sticky-b", "sticky-c"]


def test_a_reload_moves_new_requests_and_keeps_those_in_flight(
    service: LiveServer, nodes: dict[str, FakeOpenAI]
) -> None:
    folder: Path = service.folder  # type: ignore[attr-defined]
    results: dict[str, httpx.Response] = {}
    slow = threading.Thread(target=lambda: results.setdefault("slow", _ask(service, "moving")))
    slow.start()
    deadline = time.monotonic() + 5
    while nodes["a"].count("sleep-1500") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (folder / "models.yaml").write_text(_models(nodes, service.dead, moving_to="b"))  # type: ignore[attr-defined]
    reloaded = httpx.post(f"{service.url}/api/v1/config/reload")
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["changed"] == ["moving"]
    assert "weighted" in reloaded.json()["unchanged"]
    slow.join(10)
    assert results["slow"].status_code == 200
    assert results["slow"].headers["x-served-by"] == "moving-a"  # it finished where it started
    after = _ask(service, "moving")
    assert after.status_code == 200 and after.headers["x-served-by"] == "moving-b"


def test_an_invalid_reload_changes_nothing_and_says_why(service: LiveServer) -> None:
    folder: Path = service.folder  # type: ignore[attr-defined]
    good = (folder / "models.yaml").read_text()
    (folder / "models.yaml").write_text(good.replace("strategy: weighted", "strategy: fastest", 1))
    try:
        refused = httpx.post(f"{service.url}/api/v1/config/reload")
    finally:
        (folder / "models.yaml").write_text(good)
    assert refused.status_code == 400
    assert "strategy" in refused.json()["error"]["message"] and "nothing changed" in refused.json()["error"]["message"]
    assert _ask(service, "weighted").status_code == 200


def test_deployments_must_be_nodes_elsewhere(tmp_path: Path) -> None:
    (tmp_path / "providers.yaml").write_text("providers:\n  llamacpp: {type: llamacpp}\n  node: {type: openai}\n")
    (tmp_path / "embeddings.yaml").write_text("embeddings: {}\n")
    (tmp_path / "models.yaml").write_text(
        "models:\n  m:\n    deployments:\n      - {provider: llamacpp, model: embedded:smollm2-135m-instruct}\n"
    )
    with pytest.raises(ConfigError, match=r"deployments\.0\.provider: 'llamacpp' runs the model in this process"):
        plan_deployments(load_service_config(tmp_path, provider_types()))
    (tmp_path / "models.yaml").write_text("models:\n  m:\n    deployments:\n      - {provider: nowhere, model: x}\n")
    with pytest.raises(ConfigError, match=r"deployments\.0\.provider: 'nowhere' is not defined"):
        load_service_config(tmp_path, provider_types())
