from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.live_server import LiveServer, make_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The main test server serves the shipped config (the batched scheduler: its slots bound the generations running at
# once) and lets 3 more requests wait; LLM_MAX_CONCURRENT_REQUESTS bounds models that do not queue themselves.
MAX_CONCURRENT = 2
MAX_QUEUED = 3


@pytest.fixture(scope="session")
def server() -> Iterator[LiveServer]:
    live = LiveServer(
        make_settings(
            LLM_MAX_CONCURRENT_REQUESTS=MAX_CONCURRENT,
            LLM_MAX_QUEUED_REQUESTS=MAX_QUEUED,
            LLM_MAX_PROMPT_CHARS=8000,
        )
    ).start()
    yield live
    live.stop()


@pytest.fixture(scope="session")
def base_url(server: LiveServer) -> str:
    return server.url
