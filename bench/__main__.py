"""Run every benchmark in one process and print the figures (`make bench`)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from tqdm import tqdm

from bench import (
    affinity,
    batches,
    batching,
    cold_load,
    embeddings,
    fairness,
    gateway,
    generation,
    pull,
    request_log,
    routing,
    structured,
    tasks,
)
from bench.service import Service

PHASES = [
    "gateway",
    "request log",
    "startup",
    "generation",
    "embeddings",
    "batch API",
    "structured output",
    "fairness",
    "tasks",
    "batching",
    "pull",
    "cold load",
    "routing",
    "prefix affinity",
]


def cpu_model() -> str:
    """The `model name` line of /proc/cpuinfo (Linux), else what the platform module knows."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    machine = {"cpu_model": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version()}
    print(f"machine: {machine['cpu_model']}, {machine['cpus']} cores, Python {machine['python']}")
    results: dict[str, object] = {"machine": machine}
    progress = tqdm(total=len(PHASES), desc="benchmarks", unit="phase")

    def step(name: str) -> None:
        progress.set_postfix_str(name)
        progress.update()

    # First, before this process loads any model for the raw measurements: their threads and memory
    # would weigh on the CPU-bound gateway figures.
    gw = gateway.run()
    step("gateway")
    results["gateway"] = gw
    summary = gw["summary"]
    print(
        "gateway (static mock upstream; auth on, usage counted per key): added latency at c1 p50 "
        f"{summary['service_added_p50_ms']:.2f} ms, "
        f"p99 {summary['service_added_p99_ms']:.2f} ms (pass-through: {summary['passthrough_added_p50_ms']:.2f} / "
        f"{summary['passthrough_added_p99_ms']:.2f} ms) | c64: service {gw['service_c64']['rps']:.0f}/s vs "
        f"pass-through {gw['passthrough_c64']['rps']:.0f}/s ({summary['service_vs_passthrough_c64']:.0%}), "
        f"direct {gw['direct_c64']['rps']:.0f}/s | /v1/messages p50 {summary['messages_vs_chat_p50_ms']:+.2f} ms and "
        f"/v1/responses {summary['responses_vs_chat_p50_ms']:+.2f} ms vs /v1/chat/completions at c1"
    )
    # Also CPU-bound gateway figures, so also before any model is loaded here.
    results["request_log"] = logged = request_log.run()
    step("request log")
    print(request_log.summary(logged))
    with Service() as service:
        results["startup"] = {"liveness_s": service.liveness_s, "ready_s": service.ready_s}
        print(f"startup: liveness (/api/v1/health 200) {service.liveness_s:.2f} s after start (target <= 1 s)")
        print(f"startup: readiness (/api/v1/health/ready 200) {service.ready_s:.2f} s after start (target <= 4 s)")
        step("startup")
        gen = generation.run(service.url)
        step("generation")
        results["generation"] = gen
        print(
            f"generation: raw {gen['raw_tok_per_s']:.1f} tok/s | API {gen['api_tok_per_s']:.1f} tok/s "
            f"({gen['ratio']:.1%}) | first token raw {gen['raw_first_token_ms']:.1f} ms, API "
            f"{gen['api_first_token_ms']:.1f} ms (+{gen['first_token_overhead_ms']:.1f} ms) | "
            f"8 concurrent: {gen['concurrent_8_complete']}/8 complete in {gen['concurrent_8_seconds']:.1f} s"
        )
        emb = embeddings.run(service.url)
        step("embeddings")
        results["embeddings"] = emb
        print(embeddings.summary(emb))
        batch_api = batches.run(service.url)
        step("batch API")
        results["batch_api"] = batch_api
        print(batches.summary(batch_api))
        json_counts = structured.run(service.url)
        step("structured output")
        results["structured_output"] = json_counts
        print(f"structured output (30 json_schema prompts, SmolLM2 generator and fixer): {json_counts}")
    fair = fairness.run()  # its own service: the shipped config with auth on
    step("fairness")
    results["fairness"] = fair
    print(fairness.summary(fair))
    queue = tasks.run()
    step("tasks")
    results["tasks"] = queue
    many_users = batching.run()
    step("batching")
    results["batching"] = many_users
    print(
        "tasks (PostgreSQL + Redis Streams, 2 workers): "
        + " | ".join(
            f"{name} {r['tasks_per_s']:.1f} tasks/s ({r['tasks']} in {r['seconds']:.1f} s, accepted at "
            f"{r['submit_per_s']:.0f}/s, {r['failed']} failed)"
            for name, r in queue.items()
        )
    )
    print(batching.summary(many_users))
    results["pull"] = pulled = pull.run()
    step("pull")
    print(pull.summary(pulled))
    results["cold_load"] = cold = cold_load.run()
    step("cold load")
    print(cold_load.summary(cold))
    results["routing"] = routed = routing.run()  # three simulated nodes behind the service as a gateway
    step("routing")
    print(routing.summary(routed))
    results["prefix_affinity"] = affine = affinity.run()  # two replicas of the service behind a third
    step("prefix affinity")
    print(affinity.summary(affine))
    progress.close()
    out = Path("bench/results/latest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
