"""`cross_encoder`: a sentence-transformers CrossEncoder in-process, scoring (query, document) pairs to rerank.
This is the `torch` backend; `backend: onnx` is onnx_cross_encoder.py.

The model comes from a local folder or from the local Hugging Face cache (a hub id); nothing is downloaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.infra.model_config import EmbeddingModelConfig, ProviderConfig
from sop_llm.providers.base import RerankProvider
from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.providers.local.hf_loading import model_construction
from sop_llm.providers.registry import register_provider

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import CrossEncoder

_WARM_UP = [f"warm up {'word ' * n}".strip() for n in range(32)]
# The heads a scoring checkpoint carries: a one-label classifier (BERT-style rerankers) or a causal LM whose
# yes/no logits sentence-transformers turns into a score (Qwen3-Reranker-style).
_SCORING_HEADS = ("ForSequenceClassification", "ForCausalLM")


@register_provider("cross_encoder")
class CrossEncoderProvider(RerankProvider):
    """Options (embeddings.yaml `options:`): `device` (default cpu), `max_seq_length` (query and document
    together), `batch_size` (pairs per forward pass, default 32), `threads`."""

    _model: CrossEncoder | None = None

    def __init__(self, name: str, model: EmbeddingModelConfig, provider: ProviderConfig) -> None:
        super().__init__(name, model, provider)
        self._batch_size = int(model.options.get("batch_size", 32))

    @property
    def max_input_tokens(self) -> int:
        model = self._loaded()
        # sentence-transformers 6 renamed `max_length` to `max_seq_length`; keep working with both.
        limit = getattr(model, "max_seq_length", None) or getattr(model, "max_length", None)
        return int(limit or 512)

    def _loaded(self) -> CrossEncoder:
        if self._model is None:
            raise ProviderInitializationError(f"reranker '{self.name}' is not loaded")
        return self._model

    def load_blocking(self) -> None:
        path = resolve_model_path(self.model_config.model)
        options: dict[str, Any] = dict(self.model_config.options)
        try:
            import torch
            from sentence_transformers import CrossEncoder

            if "threads" in options:
                torch.set_num_threads(int(options["threads"]))
            max_length = int(options["max_seq_length"]) if "max_seq_length" in options else None
            with model_construction:
                model = CrossEncoder(
                    path, device=options.get("device", "cpu"), local_files_only=True, max_length=max_length
                )
        except OSError as exc:
            raise ProviderInitializationError(
                f"cannot load reranker '{self.model_config.model}': {exc}. Nothing is downloaded: give a local "
                "folder, or a hub id that is already in the Hugging Face cache (HF_HOME)"
            ) from exc
        architectures = list(getattr(model.model.config, "architectures", None) or []) if model.model else []
        if not any(arch.endswith(_SCORING_HEADS) for arch in architectures):
            raise ProviderInitializationError(
                f"'{self.model_config.model}' is not a cross-encoder: its checkpoint has no scoring head "
                f"(architectures: {architectures}); an embedding model belongs to an embedding provider"
            )
        if model.num_labels != 1:
            raise ProviderInitializationError(
                f"'{self.model_config.model}' outputs {model.num_labels} labels; a reranker outputs one score"
            )
        model.eval()
        self._model = model
        # The first forward passes of each shape are slow (kernels are built and cached); pay for them now.
        for size in (1, 8, 32):
            self.score_blocking("warm up", _WARM_UP[:size])

    def score_blocking(self, query: str, documents: list[str]) -> tuple[np.ndarray, list[int]]:
        model = self._loaded()
        # Pairs longer than max_input_tokens are truncated, the longer of the two texts first (documented
        # policy, as in sentence-transformers); count the tokens that were read.
        encoded = model.tokenizer(
            [query] * len(documents), documents, truncation="longest_first", max_length=self.max_input_tokens
        )
        tokens = [len(ids) for ids in encoded["input_ids"]]
        scores = model.predict(
            [(query, document) for document in documents],
            batch_size=self._batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        import numpy as np

        return np.asarray(scores, dtype=np.float32).reshape(len(documents)), tokens

    def close_blocking(self) -> None:
        self._model = None
