"""A per-sequence `llama_sampler` chain built from a request's sampling settings.

The chain mirrors what llama-cpp-python's `create_completion` (the serial path) builds, so a request samples from
the same distribution on both schedulers: logit bias, penalties, grammar, then greedy at temperature 0, else top-k,
typical, top-p, min-p, temperature and a seeded draw. The grammar is applied only when the draw without it breaks
the grammar (`Sampler`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


class Sampler:
    """A request's sampler chain and, kept apart from it, its grammar.

    A grammar is expensive to apply to the whole vocabulary (llama.cpp walks every token's text through it), and it
    runs on the decode thread, so every sequence in the batch would wait for it at every step. The chain therefore
    draws first without the grammar; only when the grammar refuses that token is the draw made again with the
    grammar applied to every candidate (what llama.cpp's own server does). At temperature 0 this picks the same
    token as applying the grammar first. For a draw it is rejection sampling: a token the grammar accepts comes
    with the probability it has among the tokens the grammar accepts, as long as top-k, top-p and min-p keep the
    same tokens either way.
    """

    def __init__(self, vocab: Any, n_vocab: int, params: SamplingParams) -> None:
        import llama_cpp

        self._chain = _chain(n_vocab, params)
        self.redraws = 0  # draws the grammar refused, made again with the grammar applied first
        self._grammar: Any = None
        self._candidates: np.ndarray | None = None
        if params.grammar is not None:
            text, root = params.grammar
            self._grammar = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), root.encode("utf-8"))
            if not self._grammar:
                llama_cpp.llama_sampler_free(self._chain)
                raise GrammarError("llama.cpp could not parse the grammar")
            self._candidates = np.zeros(n_vocab, dtype=_TOKEN_DATA)
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._all = llama_cpp.llama_token_data_array(
                self._candidates.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), n_vocab, -1, False
            )
            self._one = llama_cpp.llama_token_data()
            self._single = llama_cpp.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)

    def sample(self, ctx: Any, row: int) -> int:
        """Draw the next token from the logits at batch row `row`, and move the sampler past it."""
        import llama_cpp

        if self._grammar is None:
            return int(llama_cpp.llama_sampler_sample(self._chain, ctx, row))
        token = self._draw(ctx, row, grammar_first=False)
        if not self._allows(token):
            self.redraws += 1
            token = self._draw(ctx, row, grammar_first=True)
        llama_cpp.llama_sampler_accept(self._grammar, token)
        llama_cpp.llama_sampler_accept(self._chain, token)
        return token

    def _draw(self, ctx: Any, row: int, grammar_first: bool) -> int:
        import llama_cpp

        candidates = self._candidates
        assert candidates is not None
        n_vocab = len(candidates)
        candidates["id"] = self._ids
        candidates["logit"] = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, row), shape=(n_vocab,))
        candidates["p"] = 0.0
        self._all.size, self._all.selected, self._all.sorted = n_vocab, -1, False
        if grammar_first:
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._all))
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(self._all))
        return int(candidates["id"][self._all.selected])

    def _allows(self, token: int) -> bool:
        import llama_cpp

        self._one.id, self._one.logit, self._one.p = token, 1.0, 0.0  # type: ignore[assignment]  # ctypes converts
        self._single.size, self._single.selected, self._single.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(self._single))
        return bool(np.isfinite(self._one.logit))

    def free(self) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_free(self._chain)
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data


def _chain(n_vocab: int, params: SamplingParams) -> Any:
    """The chain without the grammar: logit bias, penalties, then greedy or the truncations and a seeded draw."""
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
