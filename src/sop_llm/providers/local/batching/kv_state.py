"""Copying a sequence's KV cells out of the context and back, for a preempted request.

A restored sequence lands in an emptied slot from its first cell on, the cells it had when it was copied: the
same cell for the same position, so attention sums the same numbers in the same order as before.
"""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp


def save_sequence(ctx: Any, seq_id: int) -> bytes | None:
    size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
    if size <= 0:
        return None
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id)
    return ctypes.string_at(buffer, written) if written else None


def restore_sequence(ctx: Any, memory: Any, seq_id: int, data: bytes) -> bool:
    """Put the saved cells into the (emptied) sequence `seq_id`; False when llama.cpp could not."""
    llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if llama_cpp.llama_state_seq_set_data(ctx, buffer, len(data), seq_id) == 0:
        llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
        return False
    return True
