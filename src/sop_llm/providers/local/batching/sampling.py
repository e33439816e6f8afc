"""A per-sequence `llama_sampler` chain built from a request's sampling settings.

The chain mirrors what llama-cpp-python's `create_completion` (the serial path) builds, so a request samples from
the same distribution on both schedulers: penalties, grammar, then greedy at temperature 0, else top-k, typical,
top-p, min-p, temperature and a seeded draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOP_K = 40  # create_completion's defaults, kept so both schedulers sample alike
DEFAULT_MIN_P = 0.05
PENALTY_LAST_N = 64


def sampling_settings(request: Any) -> dict[str, Any]:
    """A GenerationRequest's settings beyond temperature, top_p and seed, with the defaults filled in: the keyword
    arguments both schedulers take (SamplingParams and llama-cpp-python's `create_completion` share the names)."""
    return {
        "top_k": DEFAULT_TOP_K if request.top_k is None else request.top_k,
        "min_p": DEFAULT_MIN_P if request.min_p is None else request.min_p,
        "repeat_penalty": request.repetition_penalty,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "logit_bias": dict(request.logit_bias or {}),
    }


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = DEFAULT_TOP_K
    min_p: float = DEFAULT_MIN_P
    seed: int | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: tuple[str, str] | None = None  # (GBNF text, root rule)


class GrammarError(ValueError):
    """llama.cpp refused the grammar text."""


def build_sampler(vocab: Any, n_vocab: int, params: SamplingParams) -> Any:
    """A new sampler chain; free it with `free_sampler`. Raises GrammarError for a grammar llama.cpp cannot parse."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    if params.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
        for i, (token, bias) in enumerate(params.logit_bias.items()):
            biases[i].token = token  # type: ignore[assignment]  # ctypes converts the int
            biases[i].bias = bias
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
    if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
        add(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, params.repeat_penalty, params.frequency_penalty, params.presence_penalty
            )
        )
    if params.grammar is not None:
        text, root = params.grammar
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), root.encode("utf-8"))
        if not grammar:
            llama_cpp.llama_sampler_free(chain)
            raise GrammarError("llama.cpp could not parse the grammar")
        add(grammar)
    if params.temperature <= 0:
        add(llama_cpp.llama_sampler_init_greedy())
    else:
        add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        add(llama_cpp.llama_sampler_init_typical(1.0, 1))
        add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED
        add(llama_cpp.llama_sampler_init_dist(seed))
    return chain


def free_sampler(chain: Any) -> None:
    import llama_cpp

    llama_cpp.llama_sampler_free(chain)
