"""What the batched scheduler reports: a snapshot read by `stats()` and the Prometheus collector."""

from __future__ import annotations

from dataclasses import dataclass, field

# Sequences decoded together in one llama_decode call.
BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


@dataclass
class SchedulerSnapshot:
    slots: int
    running: int
    waiting: int
    kv_cells_used: int
    kv_cells_total: int
    steps: int
    prompt_tokens_evaluated: int
    prompt_tokens_reused: int
    slots_freed_by_cancel: int
    running_by_class: dict[int, int] = field(default_factory=dict)  # WorkClass value -> sequences in slots
    waiting_by_class: dict[int, int] = field(default_factory=dict)
    slots_by_caller: dict[str, int] = field(default_factory=dict)
    preemptions: int = 0
    peak_running: int = 0
    preempted_waiting: int = 0  # preempted requests waiting to resume
    parked_kv_cells: int = 0  # KV cells of preempted requests copied out of the context
    batch_size_buckets: tuple[int, ...] = BATCH_SIZE_BUCKETS
    batch_size_counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; the last is +Inf
    batch_size_sum: int = 0
