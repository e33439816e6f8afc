"""The batched scheduler's sampler checks a grammar after the draw and applies it to the whole vocabulary only when
the drawn token breaks it. Fed the same logits, it must pick exactly what a chain with the grammar applied first
picks, and the text must follow the grammar, including the draws the grammar refused and made again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from sop_llm.providers.local.batching.sampling import Sampler, SamplingParams
from sop_llm.providers.local.embedded import resolve_model_path

pytestmark = [pytest.mark.integration]

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
    },
    "required": ["name", "age", "pets"],
    "additionalProperties": False,
}
PROMPT = "<|im_start|>user\nDescribe a person as JSON.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def llama() -> Iterator[Any]:
    from llama_cpp import Llama

    model = Llama(
        model_path=resolve_model_path("embedded:smollm2-135m-instruct"), n_ctx=512, n_threads=1, verbose=False
    )
    yield model
    model.close()


def _grammar_first(vocab: Any, text: str) -> Any:
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_grammar(vocab, text.encode(), b"root"))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    return chain


def test_a_grammar_checked_after_the_draw_picks_what_the_grammar_applied_first_picks(llama: Any) -> None:
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    text = json_schema_to_gbnf(json.dumps(SCHEMA))
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    sampler = Sampler(vocab, llama.n_vocab(), SamplingParams(temperature=0, grammar=(text, "root")))
    reference = _grammar_first(vocab, text)
    try:
        llama.reset()
        llama.eval(llama.tokenize(PROMPT.encode(), add_bos=False, special=True))
        written: list[int] = []
        for _ in range(120):
            token = sampler.sample(llama.ctx, -1)
            assert token == llama_cpp.llama_sampler_sample(reference, llama.ctx, -1), llama.detokenize(written)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                break
            written.append(token)
            llama.eval([token])
        else:
            pytest.fail(f"the JSON did not end within 120 tokens: {llama.detokenize(written)!r}")
    finally:
        sampler.free()
        llama_cpp.llama_sampler_free(reference)
    answer = json.loads(llama.detokenize(written))
    jsonschema.validate(answer, SCHEMA)
    # The model's own first choices break the grammar somewhere (it would not write bare JSON), so the test saw
    # both kinds of draw: kept at once and made again under the grammar.
    assert 0 < sampler.redraws < len(written), (sampler.redraws, len(written))
