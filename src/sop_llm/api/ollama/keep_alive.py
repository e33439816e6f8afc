"""`keep_alive`: how long a request's model stays loaded after answering, in Ollama's forms — a duration string as Go
writes it (`"5m"`, `"1h30m"`, `"10s"`, `"250ms"`), a number of seconds, a negative value for "forever", `0` for
"unload once answered" — read into seconds: `None` (not given: the model's own keep-alive), `math.inf` or a number.

`apply_keep_alive` is the one place an Ollama request's keep_alive is applied to its model."""

from __future__ import annotations

from sop_llm.infra.errors import UnsupportedFeatureError
from sop_llm.infra.units import parse_duration
from sop_llm.providers.types import GenerationRequest
from sop_llm.services.container import Services


def parse_keep_alive(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError('keep_alive must be a duration such as "5m" or "1h30m", or a number of seconds')
    seconds = parse_duration(value)
    if seconds != seconds:  # NaN
        raise ValueError("keep_alive must be a number of seconds, not NaN")
    return seconds


def apply_keep_alive(
    services: Services, model: str, seconds: float | None, generation: GenerationRequest | None = None
) -> None:
    """Apply a request's keep_alive to `model` (canonical name), before it is answered.

    A generation carries it to the local model's residency, which keeps the model loaded that long once the answer
    is done (0: unloads it then); a remote model has nothing to keep loaded. Without a generation (Ollama's load
    request, which names a model and nothing to generate) a local generation model is kept that long from now;
    its unload request (keep_alive 0) is answered by the route. Embedding models stay loaded as configured: a
    duration is met already, and 0, which asks for an unload, is refused."""
    if generation is not None:
        generation.keep_alive = seconds
        return
    if seconds is not None and seconds > 0 and model in services.local:
        services.local.residency.hold(model, seconds)
    if seconds == 0 and model in services.embeddings.names():
        raise UnsupportedFeatureError(
            f"keep_alive: 0 asks to unload '{model}'; embedding models are not unloaded through Ollama's API (an "
            f"admin can: POST /api/v1/models/{model}/unload). Leave keep_alive out or give a duration",
            param="keep_alive",
        )
