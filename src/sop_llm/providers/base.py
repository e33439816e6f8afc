"""The provider contracts: one small async interface for generation, one for embeddings, one for reranking."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, ClassVar

from sop_llm.infra.errors import UnsupportedFeatureError
from sop_llm.providers.types import AdmissionLimits, Capability, Chunk, Completion, GenerationRequest, Health

if TYPE_CHECKING:
    import numpy as np

    from sop_llm.infra.model_config import EmbeddingModelConfig, ModelConfig, ProviderConfig


class GenerationProvider(ABC):
    """Serves one configured model. Local providers load weights in `load()`; remote ones open clients."""

    capabilities: ClassVar[frozenset[Capability]]
    local: ClassVar[bool] = False

    def __init__(self, name: str, model: ModelConfig, provider: ProviderConfig) -> None:
        self.name = name
        self.model_config = model
        self.provider_config = provider

    @property
    def queues_requests(self) -> bool:
        """Whether it queues and admits requests itself (fairly by caller and class, within `AdmissionLimits`),
        so the model manager does not hold them back with its own slots."""
        return False

    def set_admission_limits(self, limits: AdmissionLimits) -> None:  # noqa: B027 - only self-queueing providers
        """The queue bounds a self-queueing provider applies (from the settings)."""

    @property
    def logprobs(self) -> bool:
        """Whether it reports tokens' log probabilities (GenerationRequest.logprobs)."""
        return False

    async def load(self) -> None:  # noqa: B027 - providers without a load step keep the default
        """Load weights or open connections. Runs in the background at startup or on request."""

    def memory_estimate(self) -> int:
        """The bytes of memory loading the model will take, judged from its files before loading (blocking file
        reads: call it off the event loop). 0 for providers that hold no model in this process."""
        return 0

    @abstractmethod
    async def generate(self, request: GenerationRequest) -> Completion: ...

    @abstractmethod
    def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]: ...

    @abstractmethod
    async def health(self) -> Health: ...

    async def aclose(self) -> None:  # noqa: B027
        """Release weights, threads and connections."""

    def stats(self) -> dict[str, int]:
        return {}

    async def tokenize(self, request: GenerationRequest, special: bool = True) -> list[int]:
        """The token ids the model reads for this prompt or these messages (chat template applied); `special`:
        with the start token and special-token markup, as a generation reads them."""
        raise UnsupportedFeatureError(f"model '{self.name}' cannot tokenize here: only llamacpp models can")

    async def detokenize(self, tokens: list[int]) -> str:
        raise UnsupportedFeatureError(f"model '{self.name}' cannot detokenize here: only llamacpp models can")


class EncoderProvider(ABC):
    """A model configured in embeddings.yaml: loaded, used and released on one worker thread of its own."""

    def __init__(self, name: str, model: EmbeddingModelConfig, provider: ProviderConfig) -> None:
        self.name = name
        self.model_config = model
        self.provider_config = provider

    @property
    @abstractmethod
    def max_input_tokens(self) -> int:
        """The longest input it reads; longer ones are truncated."""

    @abstractmethod
    def load_blocking(self) -> None:
        """Load the model; called in a worker thread."""

    def close_blocking(self) -> None:  # noqa: B027
        """Release the model."""


class EmbeddingProvider(EncoderProvider):
    """Encodes batches of texts into L2-normalised float32 vectors."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.EMBEDDINGS})

    @property
    @abstractmethod
    def dimensions(self) -> int: ...

    @abstractmethod
    def encode_blocking(self, texts: list[str]) -> tuple[np.ndarray, list[int]]:
        """Encode texts in one batch; returns (vectors [n, dims] float32 normalised, token counts).

        Called in a worker thread, never concurrently with itself.
        """


class RerankProvider(EncoderProvider):
    """Scores how relevant each document is to a query by reading the two together (a cross-encoder). Configured
    in embeddings.yaml and loaded, unloaded and listed like an embedding model, but it produces no vectors. Its
    `max_input_tokens` counts query and document together; longer pairs are truncated (the longer text first)."""

    @abstractmethod
    def score_blocking(self, query: str, documents: list[str]) -> tuple[np.ndarray, list[int]]:
        """Score each document against the query in one batch; returns (scores [n] float32, higher is more
        relevant; the tokens each pair used).

        Called in a worker thread, never concurrently with itself.
        """
