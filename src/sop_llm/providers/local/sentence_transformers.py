"""`sentence_transformers`: embedding models in-process (the embedded default is all-MiniLM-L6-v2)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.providers.base import EmbeddingProvider
from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.providers.local.hf_loading import model_construction
from sop_llm.providers.registry import register_provider

if TYPE_CHECKING:
    import numpy as np
    from sentence_transformers import SentenceTransformer


_WARM_UP = [[f"warm up {'word ' * n}".strip() for n in range(size)] for size in (1, 2, 8, 32)]


@register_provider("sentence_transformers")
class SentenceTransformersProvider(EmbeddingProvider):
    """Options (embeddings.yaml `options:`): `device` (default cpu), `max_seq_length`, `threads`."""

    _model: SentenceTransformer | None = None

    @property
    def dimensions(self) -> int:
        model = self._loaded()
        # sentence-transformers 5.2 renamed the method; keep working with both.
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dims = getter()
        if dims is None:
            raise ProviderInitializationError(f"embedding model '{self.name}' does not report its dimensions")
        return int(dims)

    @property
    def max_input_tokens(self) -> int:
        return int(self._loaded().max_seq_length or 512)

    def _loaded(self) -> SentenceTransformer:
        if self._model is None:
            raise ProviderInitializationError(f"embedding model '{self.name}' is not loaded")
        return self._model

    def load_blocking(self) -> None:
        path = resolve_model_path(self.model_config.model)
        local = os.path.exists(path)
        options: dict[str, Any] = dict(self.model_config.options)
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            if "threads" in options:
                torch.set_num_threads(int(options["threads"]))
            with model_construction:
                model = SentenceTransformer(path, device=options.get("device", "cpu"), local_files_only=local)
        except OSError as exc:
            raise ProviderInitializationError(
                f"cannot load embedding model '{self.model_config.model}': {exc}. "
                "A hub id needs network access; use a local path or an embedded: model offline"
            ) from exc
        if "max_seq_length" in options:
            model.max_seq_length = int(options["max_seq_length"])
        model.eval()
        self._model = model
        # The first forward passes of each shape build and cache kernels (hundreds of ms each); do that now, so
        # "ready" means the first requests are served at full speed.
        for texts in _WARM_UP:
            self.encode_blocking(texts)

    def encode_blocking(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        model = self._loaded()
        # Inputs longer than max_seq_length tokens are truncated (documented policy); count what was used.
        encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length, padding=False)
        tokens = [len(ids) for ids in encoded["input_ids"]]
        vectors = model.encode(
            texts,
            batch_size=len(texts),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        import numpy as np

        return np.asarray(vectors, dtype=np.float32), tokens

    def close_blocking(self) -> None:
        self._model = None
