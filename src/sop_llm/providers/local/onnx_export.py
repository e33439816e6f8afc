"""Export a sentence-transformers model's transformer to ONNX once, into a cache folder; optionally quantize it.

Two kinds of graph: an embedding model's token embeddings (`embeddings`, served by onnx_embeddings.py) and a
cross-encoder's scores (`scores`: the sequence-classification logits, served by onnx_cross_encoder.py).

Exporting needs torch and transformers (installed for the torch backend anyway) and happens once: `make install`
runs `sop-llm models export-onnx` (cli.py), which exports every embedding model configured with `backend: onnx`.
Serving the exported file needs only onnxruntime (see `onnx_embeddings.py`).

Steps: `torch.onnx.export` of the transformer (token embeddings out; pooling and normalisation stay outside the
graph, as the model's sentence-transformers config says), onnxruntime's offline transformer optimizer (attention,
LayerNorm and GELU fused into single operators), and for `quantize: int8` dynamic int8 quantization of the fused
graph's weights (onnxruntime.quantization). Each file is written under a temporary name and renamed into place, so a
reader never sees half a file.

The folder's name carries a fingerprint of the weights it came from (path, size and modification time of the files,
the model's config.json) and of this exporter's version, so a changed model is exported again and a stale file is
never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from loguru import logger

from sop_llm.infra.errors import ProviderInitializationError
from sop_llm.providers.local.hf_loading import model_construction

Quantize = Literal["int8"] | None
Kind = Literal["embeddings", "scores"]

# Bump when the exported graph changes (inputs, outputs, optimizer or quantization settings).
EXPORT_VERSION = 2
OPSET = 17
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "sop-llm" / "onnx"


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ProviderInitializationError(f"cannot read {path}: {exc}") from exc


def transformer_dir(model_dir: Path) -> Path:
    """The folder of the model's Transformer module (modules.json), which holds the weights and tokenizer."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return model_dir
    for module in read_json(modules_file):
        if str(module.get("type", "")).endswith(".Transformer"):
            return model_dir / str(module.get("path", ""))
    raise ProviderInitializationError(f"{modules_file} names no Transformer module; use `backend: torch`")


def fingerprint(model_dir: Path) -> str:
    source = transformer_dir(model_dir)
    digest = hashlib.sha256(f"v{EXPORT_VERSION}:opset{OPSET}:{source.resolve()}".encode())
    config = source / "config.json"
    if not config.is_file():
        raise ProviderInitializationError(f"{source} has no config.json: not a transformers model folder")
    digest.update(config.read_bytes())
    weights = [source / name for name in _WEIGHT_FILES if (source / name).is_file()]
    if not weights:
        raise ProviderInitializationError(f"{source} holds no weights ({' or '.join(_WEIGHT_FILES)})")
    for path in weights:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def exported_path(model: str, model_dir: Path, cache_dir: Path, quantize: Quantize, kind: Kind = "embeddings") -> Path:
    """Where the export of `model` (its config id, e.g. `embedded:all-minilm-l6-v2`) lives in `cache_dir`."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", model.removeprefix("embedded:")).strip("-.")[-60:] or "model"
    stem = "model" if kind == "embeddings" else "scores"
    name = f"{stem}.int8.onnx" if quantize == "int8" else f"{stem}.onnx"
    return cache_dir / f"{label}-{fingerprint(model_dir)}" / name


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary_path)`, then rename the result to `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".onnx")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _export_fp32(model_dir: Path, target: Path, kind: Kind) -> None:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    source = transformer_dir(model_dir)
    loader = AutoModel if kind == "embeddings" else AutoModelForSequenceClassification
    output = "token_embeddings" if kind == "embeddings" else "logits"
    # The eager attention exports as plain MatMul/Softmax, the pattern onnxruntime's optimizer fuses.
    with model_construction:
        model = loader.from_pretrained(str(source), local_files_only=True, attn_implementation="eager")
    model.eval()
    names = ["input_ids", "attention_mask"]
    if model.config.model_type in {"bert", "xlm-roberta", "roberta", "electra"} and model.config.type_vocab_size > 1:
        names.append("token_type_ids")

    class Outputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            result = self.model(**dict(zip(names, inputs, strict=True)))
            return result.last_hidden_state if kind == "embeddings" else result.logits  # type: ignore[no-any-return]

    sample = tuple(torch.ones((2, 8), dtype=torch.long) for _ in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch", 1: "sequence"} if kind == "embeddings" else {0: "batch"}

    def write(path: Path) -> None:
        with torch.inference_mode():
            torch.onnx.export(
                Outputs(),
                sample,
                str(path),
                input_names=names,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
        _optimize(path, model.config)

    _write_atomically(target, write)


def _optimize(path: Path, config: Any) -> None:
    """Fuse attention, LayerNorm and GELU (onnxruntime's transformer optimizer) in place, for BERT-like models."""
    if config.model_type not in {"bert", "roberta", "xlm-roberta", "electra", "mpnet"}:
        return
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=0,  # only the fusions; onnxruntime applies its own graph optimizations when it loads the file
    )
    optimized.save_model_to_file(str(path))


def _quantize_int8(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    keep_float = _sensitive_nodes(onnx.load(str(source), load_external_data=False).graph)

    def write(path: Path) -> None:
        quantize_dynamic(
            str(source),
            str(path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=keep_float,
            # Fused operators (Attention, SkipLayerNormalization) have no shape inference in onnx itself.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )

    _write_atomically(target, write)


def _sensitive_nodes(graph: Any) -> list[str]:
    """Nodes left in float32: the whole first layer, and the feed-forward output projections of the first half of
    the layers. Those projections' inputs (after GELU) have large outliers that int8 clips, and most in the early
    layers (all-MiniLM-L6-v2: up to 25 in layers 1-3, 6-14 in layers 4-6). Quantizing every node cost that model the
    most accuracy: the worst of 512 sentences fell from cosine 0.991 to 0.976-0.983 against float32; quantizing the
    later half's projections too keeps 0.990-0.992 and runs ~10 % faster than keeping them all in float32."""
    nodes = list(graph.node)
    made_by = {output: node for node in nodes for output in node.output}
    projections = [
        node.name
        for node in nodes
        if node.op_type == "MatMul"
        and node.input[0] in made_by
        and made_by[node.input[0]].op_type in {"Gelu", "BiasGelu", "FastGelu"}
    ]
    keep = projections[: (len(projections) + 1) // 2]
    attention = [i for i, node in enumerate(nodes) if node.op_type == "Attention"]
    if len(attention) > 1:
        keep += [node.name for node in nodes[: attention[1]] if node.op_type in {"MatMul", "Attention"}]
    return list(dict.fromkeys(keep))


def ensure_exported(
    model: str, model_dir: Path, cache_dir: Path, quantize: Quantize, kind: Kind = "embeddings"
) -> Path:
    """Export (and quantize) unless the file for these weights is already in `cache_dir`; return its path."""
    fp32 = exported_path(model, model_dir, cache_dir, None, kind)
    wanted = exported_path(model, model_dir, cache_dir, quantize, kind)
    if wanted.is_file():
        return wanted
    started = time.perf_counter()
    if not fp32.is_file():
        logger.info("exporting embedding model {} to ONNX: {}", model, fp32)
        try:
            _export_fp32(model_dir, fp32, kind)
        except ImportError as exc:
            raise ProviderInitializationError(
                f"exporting {model} to ONNX needs torch and transformers ({exc}); run the export where they are "
                "installed (`make install`), or use `backend: torch`"
            ) from exc
    if quantize == "int8":
        logger.info("quantizing {} to int8: {}", model, wanted)
        _quantize_int8(fp32, wanted)
    logger.info("exported {} in {:.1f} s", model, time.perf_counter() - started)
    return wanted


def export_in_child(model: str, model_dir: Path, cache_dir: Path, quantize: Quantize, kind: Kind) -> Path:
    """`ensure_exported` in a child process: a server that lacks an export makes it without importing torch, and
    torch's tracer, which is not thread-safe, never runs beside a model serving on torch in the same process."""
    command = [sys.executable, "-m", "sop_llm", "models", "export-onnx"]  # cli.py
    command += ["--model", model, "--kind", kind, "--cache-dir", str(cache_dir)]
    if quantize:
        command += ["--quantize", quantize]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProviderInitializationError(f"exporting {model} to ONNX failed: {last[:500]}")
    return exported_path(model, model_dir, cache_dir, quantize, kind)


def local_model_dir(what: str, model: str) -> Path:
    """The folder an onnx provider loads `model` from; `what` names the model in the message (e.g. "a reranker")."""
    from sop_llm.providers.local.embedded import resolve_model_path

    model_dir = Path(resolve_model_path(model))
    if not model_dir.is_dir():
        raise ProviderInitializationError(
            f"`backend: onnx` needs {what} as a local folder (or embedded:<name>); '{model}' is not one"
        )
    return model_dir


def served_graph(
    name: str, model: str, model_dir: Path, options: dict[str, Any], quantize: Quantize, kind: Kind
) -> Path:
    """The exported graph an onnx provider serves: the cached file or, with a warning naming `name`, one exported
    now in a child process."""
    cache_dir = cache_dir_option(options)
    path = exported_path(model, model_dir, cache_dir, quantize, kind)
    if not path.is_file():
        logger.warning(
            "{}: no ONNX export in {}; exporting now in a child process (slow, needs torch). `make install`, or "
            "`sop-llm models export-onnx`, does this ahead of time",
            name,
            cache_dir,
        )
        path = export_in_child(model, model_dir, cache_dir, quantize, kind)
    return path


def cache_dir_option(options: dict[str, Any]) -> Path:
    """The model's `options.cache_dir` (`~` expanded), or the default folder."""
    value = options.get("cache_dir")
    return Path(str(value)).expanduser() if value else default_cache_dir()
