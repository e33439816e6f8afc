"""A deployment's max_parallel, rpm and tpm counted in a redis-server this module starts, by two gateway replicas
at once: the node never holds more than max_parallel requests, and takes exactly rpm requests and as many answers
as fit in its tpm, whichever replica sends them; the rest waits or goes to the model's other node."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.live_server import LiveServer, make_settings
from tests.minute import clear_of_the_minute_turn
from tests.system.servers import Redis

pytestmark = [pytest.mark.system]

Replicas = tuple[LiveServer, LiveServer, FakeOpenAI, FakeOpenAI]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    limited, other = FakeOpenAI().start(), FakeOpenAI().start()
    redis = Redis()
    redis.start()
    folder = Path(tmp_path_factory.mktemp("node-limits"))
    (folder / "providers.yaml").write_text("providers:\n  node: {type: openai, base_url: http://127.0.0.1:9/v1}\n")
    (folder / "models.yaml").write_text(
        f"""
models:
  capped:
    deployments:
      - {{provider: node, base_url: "{limited.url}", model: sleep-300, max_parallel: 2, name: capped-node}}
  rationed:
    strategy: weighted
    deployments:
      - {{provider: node, base_url: "{limited.url}", model: rationed, rpm: 5, weight: 100, name: by-minute}}
      - {{provider: node, base_url: "{other.url}", model: ok, name: overflow}}
  metered:
    strategy: weighted
    deployments:
      - {{provider: node, base_url: "{limited.url}", model: metered, tpm: 30, weight: 100, name: by-tokens}}
      - {{provider: node, base_url: "{other.url}", model: ok, name: spill}}
"""
    )
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    settings = {
        "CONFIG_DIR": str(folder),
        "LLM_DEFAULT_MODEL": "rationed",
        "JSON_FIXER_MODEL": "rationed",
        "REDIS_URL": redis.url,
    }
    first = LiveServer(make_settings(**settings)).start()
    second = LiveServer(make_settings(**settings)).start()
    yield first, second, limited, other
    first.stop()
    second.stop()
    redis.remove()
    limited.stop()
    other.stop()


def _ask(server: LiveServer, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)


def test_max_parallel_holds_across_replicas(replicas: Replicas) -> None:
    first, second, limited, _ = replicas
    limited.peak = 0
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: _ask((first, second)[i % 2], "capped"), range(10)))
    assert [answer.status_code for answer in answers] == [200] * 10
    assert limited.count("sleep-300") == 10
    assert limited.peak == 2  # never more than max_parallel in flight, though each replica alone would allow 2


def test_rpm_and_tpm_are_exact_across_replicas(replicas: Replicas) -> None:
    first, second, limited, _ = replicas
    clear_of_the_minute_turn()
    served = Counter(_ask((first, second)[i % 2], "rationed").headers["x-served-by"] for i in range(12))
    assert served == {"by-minute": 5, "overflow": 7}
    assert limited.count("rationed") == 5
    # 7 tokens an answer: asked at 0, 7, 14, 21 and 28 tokens used this minute the node takes it; at 35 it is over.
    served = Counter(_ask((first, second)[i % 2], "metered").headers["x-served-by"] for i in range(8))
    assert served == {"by-tokens": 5, "spill": 3}
    assert limited.count("metered") == 5
