"""Ollama's `options` onto the service's sampling settings.

Applied: `temperature`, `top_p`, `top_k`, `min_p`, `seed` (negative: a random one), `num_predict` (the answer's
length; zero or negative: as long as the context allows), `stop`, `repeat_penalty`, `presence_penalty`,
`frequency_penalty`. Accepted and left alone: the settings Ollama applies when it loads a model (`num_ctx`,
`num_batch`, `num_gpu`, `num_thread`, `use_mmap`, …) — here each model's context and threads are configured in
models.yaml — and `num_keep`, `penalize_newline`. Refused with a 400 when they would change the answer and cannot be
honoured: `mirostat` other than 0, `typical_p` or `tfs_z` other than 1, `repeat_last_n` other than 64 (the window
the service's samplers use). Unknown keys are ignored, as Ollama ignores them; a value of the wrong type is a 400.
"""

from __future__ import annotations

from typing import Any

from sop_llm.infra.errors import BadRequestError, UnsupportedFeatureError
from sop_llm.providers.types import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, SEED_MAX, SEED_MIN

REPEAT_LAST_N = 64  # the tokens the local samplers' repetition penalties look back over
_NUMBERS = frozenset(
    {
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "tfs_z",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "mirostat_tau",
        "mirostat_eta",
    }
)
_INTEGERS = frozenset(
    {
        "top_k",
        "seed",
        "num_predict",
        "num_keep",
        "repeat_last_n",
        "mirostat",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "draft_num_predict",
    }
)
_BOOLEANS = frozenset(
    {
        "numa",
        "low_vram",
        "f16_kv",
        "logits_all",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "embedding_only",
        "penalize_newline",
    }
)
# Settings that change the answer, with the one value the service's samplers honour.
_NEUTRAL: dict[str, tuple[float, str]] = {
    "mirostat": (0, "Mirostat sampling"),
    "typical_p": (1, "locally typical sampling"),
    "tfs_z": (1, "tail-free sampling"),
    "repeat_last_n": (REPEAT_LAST_N, f"a repetition window other than {REPEAT_LAST_N} tokens"),
}
# (low, high, whether low itself is allowed) for the applied numbers.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "temperature": (0, 2, True),
    "top_p": (0, 1, True),
    "min_p": (0, 1, True),
    "top_k": (0, 100_000, True),
    "repeat_penalty": (0, 2, False),
    "presence_penalty": (-2, 2, True),
    "frequency_penalty": (-2, 2, True),
}


def _checked(key: str, value: Any) -> Any:
    where = f"options.{key}"
    if key in _NUMBERS or key in _INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "a number" if key in _NUMBERS else "an integer"
            raise BadRequestError(f"{where} must be {kind}, not {value!r}", param=where)
        return int(value) if key in _INTEGERS else float(value)
    if key in _BOOLEANS:
        if not isinstance(value, bool):
            raise BadRequestError(f"{where} must be true or false, not {value!r}", param=where)
        return value
    if key == "stop":
        stops = [value] if isinstance(value, str) else value
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise BadRequestError(f"{where} must be a list of non-empty strings", param=where)
        return stops
    return value


def _in_range(key: str, value: float) -> None:
    low, high, low_allowed = _RANGES[key]
    if value > high or value < low or (value == low and not low_allowed):
        bounds = f"{low}..{high}" if low_allowed else f"above {low}, at most {high}"
        raise BadRequestError(f"options.{key} must lie in {bounds}, not {value}", param=f"options.{key}")


def sampling(options: dict[str, Any] | None, default_max_tokens: int) -> dict[str, Any]:
    """The GenerationRequest fields that `options` set (defaults for those it leaves out)."""
    given = {key: _checked(key, value) for key, value in (options or {}).items() if value is not None}
    for key, (neutral, what) in _NEUTRAL.items():
        if key in given and given[key] != neutral:
            raise UnsupportedFeatureError(
                f"options.{key}: {given[key]} asks for {what}, which the service's samplers do not do; "
                f"leave it out or send {neutral}",
                param=f"options.{key}",
            )
    for key in _RANGES.keys() & given.keys():
        _in_range(key, given[key])
    seed = given.get("seed")
    if seed is not None and not SEED_MIN <= seed <= SEED_MAX:
        raise BadRequestError(f"options.seed must lie in {SEED_MIN}..{SEED_MAX}", param="options.seed")
    predict = given.get("num_predict")
    return {
        # num_predict caps the answer, which ends earlier if the prompt leaves less room in the context (as Ollama).
        "max_tokens": predict if predict is not None and predict > 0 else default_max_tokens,
        "temperature": given.get("temperature", DEFAULT_TEMPERATURE),
        "top_p": given.get("top_p", DEFAULT_TOP_P),
        "top_k": given.get("top_k"),
        "min_p": given.get("min_p"),
        "seed": seed if seed is not None and seed >= 0 else None,
        "stop": given.get("stop", []),
        "repetition_penalty": given.get("repeat_penalty", 1.0),
        "presence_penalty": given.get("presence_penalty", 0.0),
        "frequency_penalty": given.get("frequency_penalty", 0.0),
    }
