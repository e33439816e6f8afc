"""One Hugging Face model construction at a time in this process.

transformers builds a model inside context managers that change process-wide state until the load ends: torch's
default dtype, `PreTrainedModel.tie_weights` (a no-op meanwhile), torch's init functions and `torch.linspace`. Two
loads in two threads therefore corrupt each other: a model can come out with an output layer that was never tied
to its embeddings (it answers with garbage) or with weights left on the meta device. Models load in worker
threads, several at once at startup, so every provider that builds a transformers model (causal language models,
sentence-transformers, cross-encoders, the ONNX export) holds this lock while it does.
"""

from __future__ import annotations

import threading

model_construction = threading.Lock()
