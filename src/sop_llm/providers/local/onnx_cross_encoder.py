"""The `onnx` backend of `cross_encoder` rerankers: onnxruntime and tokenizers, no torch on the way to ready.

The checkpoint's sequence-classification model runs as an ONNX graph exported once from its own weights
(`onnx_export.py`, kind `scores`; `make install` does it for the configured models). Pairs are tokenized as the
torch path does (the model's own tokenizer.json, the longer text truncated first) and the one logit goes through
the activation the model's config names (sigmoid by default for a one-score model), so the scores are the torch
path's. Pairs of similar length run together (`length_groups`), so little of each run is padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.infra.model_config import EmbeddingModelConfig, ProviderConfig
from sop_llm.providers.base import RerankProvider
from sop_llm.providers.local.onnx_embeddings import length_groups, open_session
from sop_llm.providers.local.onnx_export import local_model_dir, read_json, served_graph, transformer_dir
from sop_llm.providers.registry import register_backend

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

_WARM_UP = [f"warm up {'word ' * n}".strip() for n in range(32)]
_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity"}


@dataclass(frozen=True)
class ScoringConfig:
    """What the checkpoint says about turning a pair into one score."""

    activation: str  # "sigmoid" or "identity"
    max_length: int  # query and document together, special tokens included


def read_scoring_config(source: Path) -> ScoringConfig:
    """Read config.json (and sentence_bert_config.json / tokenizer_config.json for the length limit); refuse what
    this backend does not implement."""
    config = read_json(source / "config.json")
    architectures = [str(a) for a in config.get("architectures") or []]
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ProviderInitializationError(
            f"{source}: `backend: onnx` serves sequence-classification cross-encoders (BERT-style); this checkpoint "
            f"is {architectures or 'of no known architecture'}; use `backend: torch`"
        )
    labels = len(config.get("id2label") or {}) or 1
    if labels != 1:
        raise ProviderInitializationError(f"{source} outputs {labels} labels; a reranker outputs one score")
    named = str((config.get("sentence_transformers") or {}).get("activation_fn") or "torch.nn.Sigmoid")
    activation = _ACTIVATIONS.get(named.rsplit(".", 1)[-1])
    if activation is None:
        raise ProviderInitializationError(
            f"{source}: the activation '{named}' is not implemented by `backend: onnx`; use `backend: torch`"
        )
    limit = int(config.get("max_position_embeddings", 512))
    bert_config = source / "sentence_bert_config.json"
    tokenizer_config = source / "tokenizer_config.json"
    configured = read_json(bert_config).get("max_seq_length") if bert_config.is_file() else None
    if configured is None and tokenizer_config.is_file():
        configured = read_json(tokenizer_config).get("model_max_length")
    return ScoringConfig(activation, min(int(configured or limit), limit))


@register_backend("cross_encoder", "onnx")
class OnnxCrossEncoderProvider(RerankProvider):
    """Options (embeddings.yaml `options:`): `threads` (onnxruntime intra-op threads, default 1), `batch_size`
    (pairs per run, default 32), `max_seq_length` (query and document together), `cache_dir` (where the exported
    files live; default ~/.cache/sop-llm/onnx). `quantize: int8` on the model serves the dynamically quantized
    graph."""

    _session: onnxruntime.InferenceSession | None = None
    _tokenizer: Tokenizer | None = None
    _scoring: ScoringConfig | None = None
    _input_names: tuple[str, ...] = ()

    def __init__(self, name: str, model: EmbeddingModelConfig, provider: ProviderConfig) -> None:
        super().__init__(name, model, provider)
        self._batch_size = int(model.options.get("batch_size", 32))

    @property
    def max_input_tokens(self) -> int:
        return self._loaded()[2].max_length

    def _loaded(self) -> tuple[onnxruntime.InferenceSession, Tokenizer, ScoringConfig]:
        if self._session is None or self._tokenizer is None or self._scoring is None:
            raise ProviderInitializationError(f"reranker '{self.name}' is not loaded")
        return self._session, self._tokenizer, self._scoring

    def load_blocking(self) -> None:
        model, quantize = self.model_config.model, self.model_config.quantize
        model_dir = local_model_dir("the reranker", model)
        options: dict[str, Any] = dict(self.model_config.options)
        source = transformer_dir(model_dir)
        scoring = read_scoring_config(source)
        if "max_seq_length" in options:
            scoring = ScoringConfig(scoring.activation, int(options["max_seq_length"]))
        path = served_graph(f"reranker '{self.name}'", model, model_dir, options, quantize, "scores")
        self._session = open_session(path, int(options.get("threads") or 1))
        self._input_names = tuple(i.name for i in self._session.get_inputs())
        self._tokenizer = _open_pair_tokenizer(source, scoring.max_length)
        self._scoring = scoring
        for size in (1, 8, 32):
            self.score_blocking("warm up", _WARM_UP[:size])

    def score_blocking(self, query: str, documents: list[str]) -> tuple[np.ndarray, list[int]]:
        import numpy as np

        _, tokenizer, scoring = self._loaded()
        encodings = tokenizer.encode_batch([(query, document) for document in documents])
        tokens = [len(encoding.ids) for encoding in encodings]
        scores = np.empty(len(documents), dtype=np.float32)
        for group in length_groups(tokens):
            for start in range(0, len(group), self._batch_size):
                rows = group[start : start + self._batch_size]
                scores[rows] = self._run([encodings[row] for row in rows])
        if scoring.activation == "sigmoid":
            return np.asarray(1.0 / (1.0 + np.exp(-scores)), dtype=np.float32), tokens
        return scores, tokens

    def _run(self, encodings: list[Any]) -> np.ndarray:
        """Pairs padded to the longest of them, through the graph: one logit each."""
        import numpy as np

        session, _, _ = self._loaded()
        length = max(len(encoding.ids) for encoding in encodings)
        feeds = {name: np.zeros((len(encodings), length), dtype=np.int64) for name in self._input_names}
        for row, encoding in enumerate(encodings):
            width = len(encoding.ids)
            feeds["input_ids"][row, :width] = encoding.ids
            feeds["attention_mask"][row, :width] = 1
            if "token_type_ids" in feeds:
                feeds["token_type_ids"][row, :width] = encoding.type_ids
        (logits,) = session.run(None, feeds)
        return np.asarray(logits, dtype=np.float32).reshape(len(encodings))

    def close_blocking(self) -> None:
        self._session = None
        self._tokenizer = None


def _open_pair_tokenizer(source: Path, max_length: int) -> Tokenizer:
    from tokenizers import Tokenizer

    path = source / "tokenizer.json"
    if not path.is_file():
        raise ProviderInitializationError(f"{source} has no tokenizer.json (a fast tokenizer); use `backend: torch`")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
    return tokenizer
