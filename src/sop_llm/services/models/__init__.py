"""Models pulled from a Hugging Face hub, as `ollama pull` pulls them, and the registry that remembers them.

    spec.py        `<owner>/<repo>[:<quantization or file>]` (also `hf.co/…`) and the name it is served under
    hub.py         the hub and its cache (huggingface_hub); the hub's errors translated into ours
    choice.py      which files of a repository make the model (pure)
    plan.py        a spec to a pull plan: commit, kind (gguf / embedding / rerank) and files
    transfer.py    bytes to disk over HTTP: resumed, hashed while they arrive
    download.py    one file into the huggingface_hub cache, checked against the hub's checksum
    facts.py       what the model says about itself: context length, chat template, dimensions
    progress.py    progress events, for a bar or a stream
    puller.py      ModelPuller: all of the above, then registration
    model.py       the pulled_models table
    repository.py  PulledModels: add, get, list, remove (deleting files nothing else uses)
    serving.py     a pulled model as the ModelConfig / EmbeddingModelConfig the service serves

Nothing here is imported at startup unless asked for: huggingface_hub is imported where the hub is reached.
"""
