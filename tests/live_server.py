"""A real uvicorn server on a free port, in a thread of the test process, serving `create_app(settings)`."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from sop_llm.app import create_app
from sop_llm.infra.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "LOG_LEVEL": "WARNING",
        "CONFIG_DIR": "config",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='sop-llm-test-')}/tasks.db",
        "TASKS_POLL_INTERVAL": 0.1,
        # Webhooks go to the tests' own receivers on loopback, which the service refuses unless allowed.
        "WEBHOOK_ALLOWED_HOSTS": ["127.0.0.1"],
        # The test process hosts many servers one after another; freezing each one's startup objects (GC_TUNING)
        # would keep them all until the session ends. Server processes (system tests, bench) run with it on.
        "GC_TUNING": False,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)

    def start(self, wait_ready: bool = True, timeout: float = 180.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        if wait_ready:
            self.wait_ready(deadline)
        return self

    def wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/api/v1/health/ready").status_code == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"models did not load: {httpx.get(f'{self.url}/api/v1/health').text}")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    @property
    def running(self) -> bool:
        """False once the server has stopped (after `stop`: it stopped within the 30 s that waits)."""
        return self._thread.is_alive()

    def model_stats(self, name: str) -> dict[str, Any]:
        models = httpx.get(f"{self.url}/api/v1/models").json()["models"]
        entry = next(m for m in models if m["name"] == name)
        stats: dict[str, Any] = entry["stats"]
        return stats


def smollm2_config(folder: Path, **fields: object) -> Path:
    """A config folder serving only the embedded SmolLM2 as `smollm2-135m` with these models.yaml fields (one
    llama.cpp thread: no OpenMP barriers spinning on a busy machine), the shipped providers and no embedding model."""
    shutil.copy("config/providers.yaml", folder / "providers.yaml")
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    entry = {"provider": "llamacpp", "model": "embedded:smollm2-135m-instruct", **fields, "options": {"n_threads": 1}}
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": {"smollm2-135m": entry}}))
    return folder
