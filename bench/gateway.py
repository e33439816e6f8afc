"""Gateway overhead: a static mock OpenAI upstream (nginx) hit directly, through a minimal pass-through proxy, and
through the service's `openai` provider; wrk drives the load. Added latency at concurrency 1 and throughput at
concurrency 64, measured in one run."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.service import free_port

COMPLETION = {
    "id": "chatcmpl-mock",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-mock",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
}
REQUEST = {"model": "gpt-mock", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 32}
# The same question on the other client surfaces the service translates onto chat generation.
SURFACES = {
    "chat": ("/chat/completions", REQUEST),
    "messages": ("/messages", {**REQUEST, "max_tokens": 32}),
    "responses": ("/responses", {"model": "gpt-mock", "input": "Hello there", "max_output_tokens": 32, "store": False}),
}
NGINX_CONF = """
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{ default_type application/json; return 200 '{body}'; }}
        location = /v1/models {{ default_type application/json; return 200 '{{"object":"list","data":[]}}'; }}
    }}
}}
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _require(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if path is None:
        sys.exit(f"the gateway benchmark needs {tool}: apt-get install -y nginx-light wrk")
    return path


def _wait(url: str, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, json=REQUEST, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def _process(command: list[str], env: dict[str, str] | None = None) -> Iterator[None]:
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def mock_upstream() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory() as prefix:
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, body=json.dumps(COMPLETION)))
        with _process([_require("nginx"), "-p", prefix, "-c", str(conf), "-g", "daemon off;"]):
            url = f"http://127.0.0.1:{port}/v1"
            _wait(f"{url}/chat/completions")
            yield url


@contextmanager
def passthrough(upstream: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bench.passthrough:app", "--port", str(port), "--no-access-log"]
    with _process(command, {"UPSTREAM": upstream}):
        url = f"http://127.0.0.1:{port}/v1"
        _wait(f"{url}/chat/completions")
        yield url


@contextmanager
def service(upstream: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """The service as teams run it: auth on, every request counted per key (usage accounting is on by default);
    `env` overrides or adds settings (the request-log phase starts it with REQUEST_LOG=off, with tracing on)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder)
        (config / "providers.yaml").write_text(f"providers:\n  mock: {{type: openai, base_url: '{upstream}'}}\n")
        (config / "models.yaml").write_text("models:\n  gpt-mock: {provider: mock, model: gpt-mock}\n")
        (config / "embeddings.yaml").write_text("embeddings: {}\n")
        env = {
            "CONFIG_DIR": folder,
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(port),
            "LOG_LEVEL": "WARNING",
            "AUTH_ENABLED": "true",
            "DATABASE_URL": f"sqlite+aiosqlite:///{folder}/bench.db",
            **(env or {}),
        }
        created = subprocess.run(
            [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "bench"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        headers = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
        with _process([sys.executable, "-m", "sop_llm", "serve"], env):
            url = f"http://127.0.0.1:{port}/v1"
            _wait(f"{url}/chat/completions", headers)
            yield url, headers


def wrk(
    url: str, connections: int, seconds: int, headers: dict[str, str] | None = None, surface: str = "chat"
) -> dict[str, float]:
    path, body = SURFACES[surface]
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            + "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in (headers or {}).items())
            + f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    threads = min(2, connections)
    command = [_require("wrk"), f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name]
    out = subprocess.run([*command, f"{url}{path}"], capture_output=True, text=True, check=True).stdout
    os.unlink(script.name)
    if "Non-2xx" in out:
        raise RuntimeError(f"errors while benchmarking {url}:\n{out}")
    percentiles = {m[0]: float(m[1]) * _UNITS[m[2]] for m in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", out)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"p50_ms": percentiles["50"], "p99_ms": percentiles["99"], "rps": rps}


def run(seconds: int = 3, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Rounds alternate the targets so that drifts in machine speed hit all of them alike; medians are kept."""
    samples: dict[str, list[dict[str, float]]] = {}
    with mock_upstream() as upstream, passthrough(upstream) as proxy, service(upstream) as (gateway, headers):
        targets = {"direct": (upstream, {}), "passthrough": (proxy, headers), "service": (gateway, headers)}
        for url, sent in targets.values():
            wrk(url, 64, 1, sent)  # warm up connections and code paths
        for _ in range(rounds):
            for connections in (1, 64):
                for name, (url, sent) in targets.items():
                    samples.setdefault(f"{name}_c{connections}", []).append(wrk(url, connections, seconds, sent))
            for surface in ("messages", "responses"):  # the translated surfaces, at concurrency 1
                samples.setdefault(f"service_{surface}_c1", []).append(wrk(gateway, 1, seconds, headers, surface))
    results = {
        key: {metric: statistics.median(run[metric] for run in runs) for metric in runs[0]}
        for key, runs in samples.items()
    }
    direct = results["direct_c1"]
    results["summary"] = {
        "passthrough_added_p50_ms": results["passthrough_c1"]["p50_ms"] - direct["p50_ms"],
        "passthrough_added_p99_ms": results["passthrough_c1"]["p99_ms"] - direct["p99_ms"],
        "service_added_p50_ms": results["service_c1"]["p50_ms"] - direct["p50_ms"],
        "service_added_p99_ms": results["service_c1"]["p99_ms"] - direct["p99_ms"],
        "service_vs_passthrough_c64": results["service_c64"]["rps"] / results["passthrough_c64"]["rps"],
        "messages_vs_chat_p50_ms": results["service_messages_c1"]["p50_ms"] - results["service_c1"]["p50_ms"],
        "responses_vs_chat_p50_ms": results["service_responses_c1"]["p50_ms"] - results["service_c1"]["p50_ms"],
    }
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
