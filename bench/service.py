"""Start the service as its own process, the way `make run` does, and time its liveness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {
            **os.environ,
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(self.port),
            "LOG_LEVEL": "WARNING",
            "LLM_MAX_QUEUED_REQUESTS": "1000",
            **env,
        }
        self._process: subprocess.Popen[bytes] | None = None
        self.liveness_s = float("nan")
        self.ready_s = float("nan")

    def __enter__(self) -> Service:
        started = time.perf_counter()
        self._process = subprocess.Popen([sys.executable, "-m", "sop_llm", "serve"], env=self._env)
        while True:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    self.liveness_s = time.perf_counter() - started
                    break
            except httpx.TransportError:
                time.sleep(0.01)
        while httpx.get(f"{self.url}/api/v1/health/ready", timeout=5).status_code != 200:
            time.sleep(0.05)
        self.ready_s = time.perf_counter() - started
        return self

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        self._process.terminate()
        self._process.wait(timeout=30)
