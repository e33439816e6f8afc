"""The `onnx` backend of `sentence_transformers` embedding models: onnxruntime, tokenizers and numpy — no torch.

The transformer runs as an ONNX graph exported once from the model's own weights (`onnx_export.py`; `make install`
does it); pooling and normalisation follow the model's sentence-transformers files (modules.json,
1_Pooling/config.json, sentence_bert_config.json), so the vectors are those of the torch path. Encoding is split in
two steps that the batcher runs on two threads — tokenizing the next batch while the current one runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.providers.base import EmbeddingProvider
from sop_llm.providers.local.onnx_export import local_model_dir, read_json, served_graph, transformer_dir
from sop_llm.providers.registry import register_backend

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

# sentence-transformers concatenates the pooled vectors in this order when several modes are on.
_POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "lasttoken")
# onnxruntime compiles nothing per shape (unlike torch); two small runs allocate its buffers before "ready".
_WARM_UP = [["warm up"], [f"warm up {'word ' * n}".strip() for n in range(8)]]


@dataclass(frozen=True)
class SentenceConfig:
    """What a sentence-transformers model folder says about turning token embeddings into one vector."""

    pooling: tuple[str, ...]
    normalize: bool
    max_seq_length: int
    lowercase: bool


def read_sentence_config(model_dir: Path) -> SentenceConfig:
    """Read modules.json and the files it points to; refuse modules this backend does not implement."""
    source = transformer_dir(model_dir)
    modules = read_json(model_dir / "modules.json") if (model_dir / "modules.json").is_file() else []
    pooling: tuple[str, ...] = ("mean_tokens",)  # sentence-transformers' default for a plain transformers folder
    normalize = False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            config = read_json(model_dir / str(module.get("path", "")) / "config.json")
            pooling = tuple(mode for mode in _POOLING_MODES if config.get(f"pooling_mode_{mode}"))
            other = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k[13:] not in pooling]
            if other or not pooling:
                missing = other or "none"
                raise ProviderInitializationError(
                    f"{model_dir}: pooling {missing} is not implemented by `backend: onnx`; use `backend: torch`"
                )
        elif kind == "Normalize":
            normalize = True
        elif kind != "Transformer":
            raise ProviderInitializationError(
                f"{model_dir}: the module '{kind}' is not implemented by `backend: onnx`; use `backend: torch`"
            )
    bert_config_file = source / "sentence_bert_config.json"
    bert_config = read_json(bert_config_file) if bert_config_file.is_file() else {}
    model_config = read_json(source / "config.json")
    limit = int(model_config.get("max_position_embeddings", 512))
    max_seq_length = min(int(bert_config.get("max_seq_length") or limit), limit)
    return SentenceConfig(pooling, normalize, max_seq_length, bool(bert_config.get("do_lower_case", False)))


def pool(hidden: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """Token embeddings [n, length, dims] and the attention mask [n, length] -> one vector per text."""
    import numpy as np

    weights = mask.astype(np.float32)
    parts = []
    for mode in modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(np.where(weights[:, :, None] > 0, hidden, np.float32(-1e9)).max(axis=1))
        elif mode == "lasttoken":
            last = np.maximum(weights.sum(axis=1).astype(np.int64) - 1, 0)
            parts.append(hidden[np.arange(hidden.shape[0]), last])
        else:
            summed = np.einsum("nld,nl->nd", hidden, weights)
            counts = np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
            parts.append(summed / (counts if mode == "mean_tokens" else np.sqrt(counts)))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


# A run of the graph costs about this many tokens' worth of work on top of its tokens (all-MiniLM-L6-v2 int8 on 2
# cores: ~2.5 ms a call plus ~85 us a token, and small batches use the cores less well).
_RUN_COST_TOKENS = 32


def length_groups(lengths: list[int]) -> list[list[int]]:
    """Row numbers grouped by length, shortest first, so that each group pads its rows to its longest one and the
    whole costs the least: a group costs its rows times its longest length, plus `_RUN_COST_TOKENS` for the run.

    One-sentence texts of 13 to 20 tokens split into two to four groups (a quarter of a batch of 64 was padding;
    grouped, under a tenth), and a long document gets a group of its own."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if not order:
        return []
    distinct: list[int] = []  # distinct lengths, ascending, and how many rows have each
    counts: list[int] = []
    for row in order:
        if distinct and distinct[-1] == lengths[row]:
            counts[-1] += 1
        else:
            distinct.append(lengths[row])
            counts.append(1)
    # best[j]: the least cost of the rows with the first j distinct lengths; cut[j]: where its last group starts.
    best = [0] + [0] * len(distinct)
    cut = [0] * (len(distinct) + 1)
    for end in range(1, len(distinct) + 1):
        rows = 0
        best[end] = -1
        for start in range(end, 0, -1):
            rows += counts[start - 1]
            cost = best[start - 1] + _RUN_COST_TOKENS + rows * distinct[end - 1]
            if best[end] < 0 or cost < best[end]:
                best[end], cut[end] = cost, start - 1
    bounds = []
    end = len(distinct)
    while end:
        bounds.append(sum(counts[: cut[end]]))
        end = cut[end]
    groups = []
    stop = len(order)
    for begin in bounds:
        groups.append(order[begin:stop])
        stop = begin
    return groups[::-1]


@register_backend("sentence_transformers", "onnx")
class OnnxEmbeddingsProvider(EmbeddingProvider):
    """Options (embeddings.yaml `options:`): `threads` (onnxruntime intra-op threads, default 1: on a small shared
    machine the event loop, the tokenizer thread and other processes need the other cores), `max_seq_length`,
    `cache_dir` (where the exported files live; default ~/.cache/sop-llm/onnx). `quantize: int8` on the model
    serves the dynamically quantized graph."""

    _session: onnxruntime.InferenceSession | None = None
    _tokenizer: Tokenizer | None = None
    _sentence: SentenceConfig | None = None
    _input_names: tuple[str, ...] = ()
    _dimensions = 0

    @property
    def dimensions(self) -> int:
        self._loaded()
        return self._dimensions

    @property
    def max_input_tokens(self) -> int:
        return self._loaded()[2].max_seq_length

    def _loaded(self) -> tuple[onnxruntime.InferenceSession, Tokenizer, SentenceConfig]:
        if self._session is None or self._tokenizer is None or self._sentence is None:
            raise ProviderInitializationError(f"embedding model '{self.name}' is not loaded")
        return self._session, self._tokenizer, self._sentence

    def load_blocking(self) -> None:
        model, quantize = self.model_config.model, self.model_config.quantize
        model_dir = local_model_dir("the model", model)
        options: dict[str, Any] = dict(self.model_config.options)
        sentence = read_sentence_config(model_dir)
        if "max_seq_length" in options:
            sentence = SentenceConfig(
                sentence.pooling, sentence.normalize, int(options["max_seq_length"]), sentence.lowercase
            )
        path = served_graph(f"embedding model '{self.name}'", model, model_dir, options, quantize, "embeddings")
        self._session = open_session(path, int(options.get("threads") or 1))
        self._input_names = tuple(i.name for i in self._session.get_inputs())
        self._tokenizer = _open_tokenizer(transformer_dir(model_dir), sentence.max_seq_length)
        self._sentence = sentence
        for texts in _WARM_UP:
            vectors, _ = self.encode_blocking(texts)
        self._dimensions = int(vectors.shape[1])

    def tokenize_blocking(self, texts: list[str]) -> list[np.ndarray]:
        """Token ids per text, truncated to max_seq_length (special tokens included)."""
        import numpy as np

        _, tokenizer, sentence = self._loaded()
        if sentence.lowercase:
            texts = [text.lower() for text in texts]
        return [np.asarray(encoding.ids, dtype=np.int64) for encoding in tokenizer.encode_batch(texts)]

    def forward_blocking(self, ids: list[np.ndarray]) -> np.ndarray:
        """One batch of tokenized texts -> vectors [n, dims] float32.

        The texts run in groups of similar length (see `length_groups`): little of each run is padding, a few long
        texts do not pad every short one to their length, and with int8 the short ones are not quantized on the long
        ones' scale.
        """
        import numpy as np

        groups = length_groups([len(row) for row in ids])
        if len(groups) == 1:
            return self._run(ids)
        vectors: np.ndarray | None = None
        for rows in groups:
            part = self._run([ids[row] for row in rows])
            if vectors is None:
                vectors = np.empty((len(ids), part.shape[1]), dtype=np.float32)
            vectors[rows] = part
        assert vectors is not None
        return vectors

    def _run(self, ids: list[np.ndarray]) -> np.ndarray:
        """Texts padded to the longest of them, through the graph, pooled and normalised."""
        import numpy as np

        session, _, sentence = self._loaded()
        length = max(len(row) for row in ids)
        input_ids = np.zeros((len(ids), length), dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(input_ids)}
        (hidden,) = session.run(None, {name: feeds[name] for name in self._input_names})
        vectors = pool(np.asarray(hidden, dtype=np.float32), mask, sentence.pooling)
        if sentence.normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_blocking(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        ids = self.tokenize_blocking(texts)
        return self.forward_blocking(ids), [len(row) for row in ids]

    def close_blocking(self) -> None:
        self._session = None
        self._tokenizer = None


def open_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: on a shared machine spinning takes cores from the event loop,
    # the tokenizer thread and other processes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable or corrupt files
        raise ProviderInitializationError(
            f"cannot open {path}: {exc}; delete it and run `sop-llm models export-onnx`"
        ) from exc


def _open_tokenizer(source: Path, max_seq_length: int) -> Tokenizer:
    from tokenizers import Tokenizer

    path = source / "tokenizer.json"
    if not path.is_file():
        raise ProviderInitializationError(f"{source} has no tokenizer.json (a fast tokenizer); use `backend: torch`")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    return tokenizer
