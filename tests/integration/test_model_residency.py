"""Local models in memory, through a live server: loaded on the first request (once, however many arrive
together), unloaded after their keep-alive, and kept within MODEL_MEMORY_BUDGET by unloading the least recently
used idle model — never one with a request in flight. Evidence comes from the replies, GET /api/v1/models and the
process's resident memory, not from timing."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from tests.live_server import LiveServer, make_settings, smollm2_config

pytestmark = [pytest.mark.integration, pytest.mark.api]

NAMES = ("alpha", "beta", "gamma")
FIELDS: dict[str, Any] = {"load_on_startup": False, "context_length": 512, "parallel": 2}


def _three_models(folder: Path, **fields: Any) -> Path:
    """The embedded SmolLM2 served under three names, none loaded at startup."""
    smollm2_config(folder, **FIELDS, **fields)
    entry = yaml.safe_load((folder / "models.yaml").read_text())["models"]["smollm2-135m"]
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": {name: entry for name in NAMES}}))
    return folder


def _held_by_one(serve: Any) -> int:
    """What one of the three counts against the budget once loaded (the larger of its estimate and the growth
    measured across its load, which depends on the machine), from a server of its own."""
    probe = serve()
    assert _ask(probe, "alpha").status_code == 200
    held: int = _models(probe)["alpha"]["memory"]["held_bytes"]
    assert held > 0
    probe.stop()
    return held


def _models(server: LiveServer) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in httpx.get(f"{server.url}/api/v1/models").json()["models"] if m["name"] in NAMES}


def _ask(server: LiveServer, model: str, **body: Any) -> httpx.Response:
    payload = {"model": model, "prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0, **body}
    return httpx.post(f"{server.url}/api/v1/models/generate", json=payload, timeout=180)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    started: list[LiveServer] = []

    def start(**settings: Any) -> LiveServer:
        folder = tmp_path / f"config-{len(started)}"
        folder.mkdir()
        _three_models(folder, **settings.pop("fields", {}))
        live = LiveServer(make_settings(CONFIG_DIR=str(folder), **settings)).start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.stop()


async def test_concurrent_first_requests_share_one_load(serve: Any) -> None:
    server = serve()
    assert _models(server)["alpha"]["state"] == "unloaded"
    assert httpx.get(f"{server.url}/api/v1/health/ready").status_code == 200  # nothing loads at startup
    async with httpx.AsyncClient(timeout=180) as client:
        body = {"model": "alpha", "prompt": "1, 2, 3,", "max_tokens": 4, "temperature": 0}
        replies = await asyncio.gather(
            *(client.post(f"{server.url}/api/v1/models/generate", json=body) for _ in range(10))
        )
    assert [r.status_code for r in replies] == [200] * 10, [r.text for r in replies if r.status_code != 200]
    assert len({r.json()["text"] for r in replies}) == 1
    alpha = _models(server)["alpha"]
    assert alpha["state"] == "ready"
    assert alpha["loads"] == 1
    assert alpha["memory"]["estimated_bytes"] > 0


def test_keep_alive_zero_unloads_after_the_answer(serve: Any) -> None:
    server = serve(fields={"keep_alive": "1h"})
    first = _ask(server, "alpha")
    assert first.status_code == 200
    assert _models(server)["alpha"]["state"] == "ready"  # its own keep-alive: an hour
    again = _ask(server, "alpha", keep_alive=0)  # this request's: unload once answered
    assert again.status_code == 200
    assert again.json()["text"] == first.json()["text"]
    deadline = time.monotonic() + 30
    while _models(server)["alpha"]["state"] != "unloaded":
        assert time.monotonic() < deadline, _models(server)["alpha"]
        time.sleep(0.05)
    assert _ask(server, "alpha").status_code == 200  # and loads again on demand
    assert _models(server)["alpha"]["loads"] == 2
    refused = _ask(server, "alpha", keep_alive="5 minutes")
    assert refused.status_code == 422
    assert "5m" in refused.text


def test_a_budget_for_two_never_holds_three_and_never_unloads_a_busy_model(serve: Any) -> None:
    budget = int(_held_by_one(serve) * 2.5)
    server = serve(MODEL_MEMORY_BUDGET=str(budget))
    process = psutil.Process()
    baseline = process.memory_info().rss
    loaded_at_once: list[int] = []
    peak_rss = [baseline]
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            states = _models(server)
            loaded_at_once.append(sum(m["memory"]["held_bytes"] > 0 for m in states.values()))
            peak_rss.append(process.memory_info().rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(2):
            for name in NAMES:
                assert _ask(server, name).status_code == 200
        # alpha is busy with a long answer while beta and gamma take turns: the room is made from the idle one.
        with httpx.stream(
            "POST",
            f"{server.url}/api/v1/models/generate",
            json={"model": "alpha", "prompt": "1, 2, 3,", "max_tokens": 200, "temperature": 0, "stream": True},
            timeout=180,
        ) as busy:
            events = busy.iter_lines()
            next(line for line in events if line.startswith("data:"))  # alpha is generating
            for name in ("beta", "gamma", "beta"):
                assert _ask(server, name).status_code == 200
                assert _models(server)["alpha"]["state"] == "ready"
            rest = "\n".join(events)
        assert "event: done" in rest and "event: error" not in rest
    finally:
        watching.set()
        watcher.join()
    assert max(loaded_at_once) <= 2, loaded_at_once
    assert max(loaded_at_once) == 2
    assert sum(m["loads"] for m in _models(server).values()) > 3  # models were unloaded and loaded again
    assert max(peak_rss) - baseline <= budget, (max(peak_rss) - baseline, budget)


def test_a_model_too_big_for_the_budget_is_refused_before_it_loads(serve: Any) -> None:
    server = serve(MODEL_MEMORY_BUDGET="64MB")
    refused = _ask(server, "alpha")
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_too_large"
    assert "MODEL_MEMORY_BUDGET" in error["message"]
    alpha = _models(server)["alpha"]
    assert alpha["memory"]["measured_bytes"] == 0  # the provider never loaded
    assert alpha["state"] == "failed"
    assert _ask(server, "alpha").json()["error"]["code"] == "model_too_large"  # said again, not retried
