"""`python -m sop_llm serve` as a user starts it: liveness first, readiness once models load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_app_import_pulls_in_no_heavy_library() -> None:
    # Liveness must not wait for torch / llama.cpp: importing and building the app loads neither.
    code = (
        "import sys; from sop_llm.app import create_app; create_app(); "
        "heavy = {'torch', 'llama_cpp', 'sentence_transformers', 'transformers'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_answers_health_then_turns_ready() -> None:
    port = free_port()
    env = {**os.environ, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "sop_llm", "serve"], env=env)
    try:
        url = f"http://127.0.0.1:{port}/api/v1"
        first_health = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{url}/health", timeout=1)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            first_health = first_health or health.json()
            if httpx.get(f"{url}/health/ready").status_code == 200:
                break
            time.sleep(0.2)
        assert first_health is not None
        assert first_health["status"] == "ok"
        assert httpx.get(f"{url}/health/ready").json()["ready"] is True
    finally:
        process.terminate()
        # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean exit.
        assert process.wait(timeout=30) in (0, -15)


def test_bad_config_is_refused_with_file_and_key(tmp_path: object) -> None:
    import pathlib

    folder = pathlib.Path(str(tmp_path))
    (folder / "providers.yaml").write_text("providers:\n  p:\n    type: nonexistent\n")
    (folder / "models.yaml").write_text("models: {}\n")
    (folder / "embeddings.yaml").write_text("embeddings: {}\n")
    env = {**os.environ, "CONFIG_DIR": str(folder), "SERVER_PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-m", "sop_llm", "serve"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "providers.yaml: providers.p.type: unknown provider type 'nonexistent'" in result.stderr


def test_db_upgrade_creates_the_task_table(tmp_path: object) -> None:
    import sqlite3

    database = f"{tmp_path}/tasks.db"
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    result = subprocess.run([sys.executable, "-m", "sop_llm", "db", "upgrade"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "revision head" in result.stdout
    tables = {
        name for (name,) in sqlite3.connect(database).execute("select name from sqlite_master where type='table'")
    }
    assert {"tasks", "alembic_version"} <= tables


def test_worker_without_a_broker_says_what_to_set() -> None:
    env = {key: value for key, value in os.environ.items() if key != "BROKER_URL"}
    done = subprocess.run([sys.executable, "-m", "sop_llm", "worker"], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert "BROKER_URL" in done.stderr


def test_models_check_loads_with_progress_and_tries_each_model(tmp_path: object) -> None:
    env = {**os.environ, "LOG_LEVEL": "WARNING", "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/check.db"}
    done = subprocess.run([sys.executable, "-m", "sop_llm", "models", "check"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "loading models: 100%" in done.stderr  # the progress bar
    assert "smollm2-135m ready" in done.stdout
    assert "384 dimensions" in done.stdout


def test_export_onnx_is_a_light_no_op_once_the_files_are_there() -> None:
    # `make run` runs it whenever the config changed: with the graphs exported it must not import torch or the app.
    subprocess.run([sys.executable, "-m", "sop_llm", "models", "export-onnx"], capture_output=True, check=True)
    code = (
        "import sys\n"
        "from sop_llm.cli import main\n"
        "try:\n"
        "    main(['models', 'export-onnx'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = {'torch', 'transformers', 'fastapi', 'llama_cpp'} & set(sys.modules)\n"
        "print('heavy:', sorted(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    *exported, heavy = done.stdout.splitlines()
    assert heavy == "heavy: []"
    assert exported, "the shipped config serves an embedding model with `backend: onnx`"
    assert all(Path(line.split(": ", 1)[1]).is_file() for line in exported)  # the lines the Makefile's stamp reads
