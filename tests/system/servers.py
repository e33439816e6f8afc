"""PostgreSQL and redis-server processes that a test starts, stops, pauses and kills itself, on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.live_server import free_port


def _binary(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        pytest.fail(f"{name} is not installed (PostgreSQL server binaries / redis-server)")
    return str(found)


def _as_server_user() -> list[str]:
    """PostgreSQL refuses to run as root; these machines (and CI) run as root, so use the `postgres` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Postgres:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sop-llm-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        initdb = [_binary("initdb"), "-D", str(self.folder / "data"), "-U", "postgres", "--auth=trust"]
        subprocess.run([*_as_server_user(), *initdb], check=True, capture_output=True)

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        command = [*_as_server_user(), _binary("pg_ctl"), "-D", str(self.folder / "data"), *args]
        return subprocess.run(command, capture_output=True)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._ctl("-o", options, "-w", "-l", str(self.folder / "log"), "start").check_returncode()

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Redis:
    """A redis-server with an append-only file, as a broker should run: a restart keeps the stream."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sop-llm-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            _binary("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.folder / "log"),
        ]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 10
        while (
            subprocess.run([_binary("redis-cli"), "-p", str(self.port), "ping"], capture_output=True).stdout
            != b"PONG\n"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(self.folder / 'log').read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def wipe(self) -> None:
        """Forget everything (as a restart without persistence would); only while stopped."""
        assert self.process is None
        for path in self.folder.iterdir():
            if path.name != "log":
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def remove(self) -> None:
        if self.process is not None:
            self.resume()
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Service:
    """One `sop-llm` process (serve or worker) with its output in a log file."""

    def __init__(self, command: str, env: dict[str, str], port: int | None = None) -> None:
        self.command, self.env, self.port = command, env, port
        self.log = Path(tempfile.mkstemp(prefix=f"sop-llm-{command}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        args = [sys.executable, "-m", "sop_llm", self.command]
        if self.port:
            args += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_healthy(url: str, service: Service, timeout: float = 180, ready: bool = False) -> None:
    """Until the process answers /health (or, with `ready`, until its startup models are loaded)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/health{'/ready' if ready else ''}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{service.command} did not start:\n{service.log.read_text()[-3000:]}")
