"""Pulling models from a hub (tests/fake_hub.py on 127.0.0.1) through the library and through `sop-llm models`.

The hub serves the GGUF and the embedding model that ship in PyPI packages, tiny GGUF files written here (several
quantizations, a split model) and a cross-encoder saved here; every pulled model is checked byte for byte and the
real ones are loaded by llama.cpp and sentence-transformers once.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from sop_llm.infra.errors import (
    ChecksumMismatchError,
    ConflictError,
    HubRepoNotFoundError,
    ModelChoiceError,
)
from sop_llm.infra.model_config import ConfigError, EmbeddingModelConfig, ModelConfig, ProviderConfig
from sop_llm.migrations import upgrade
from sop_llm.providers.local.embedded import resolve_model_path
from sop_llm.services.models.hub import Hub
from sop_llm.services.models.progress import PullDone, PullProgress
from sop_llm.services.models.puller import ModelPuller
from sop_llm.services.models.repository import PulledModels
from sop_llm.services.models.serving import serving_config
from tests.fake_hub import FakeHub

pytestmark = [pytest.mark.integration]

GGUF = "test-org/SmolLM2-135M-Instruct-GGUF"
Q4, Q8 = "SmolLM2-135M-Instruct-Q4_1.gguf", "SmolLM2-135M-Instruct-Q8_0.gguf"
TINY = "test-org/Tiny-GGUF"
SPLIT_GGUF = "test-org/SmolLM2-split-GGUF"
EMBEDDING = "test-org/all-MiniLM-L6-v2"
CORRUPT_GGUF = "test-org/Corrupt-GGUF"
CORRUPT_EMBEDDING = "test-org/corrupt-MiniLM"
CROSS_ENCODER = "test-org/tiny-cross-encoder"
PLAIN_CROSS_ENCODER = "test-org/plain-cross-encoder"
# What a sentence-transformers model loads: its embedded copy's files but the README, .gitattributes and training data.
EMBEDDING_FILES = {
    "1_Pooling/config.json",
    "config.json",
    "config_sentence_transformers.json",
    "model.safetensors",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
}
SHIPPED_PROVIDERS = {
    "llamacpp": ProviderConfig(type="llamacpp"),
    "local-embeddings": ProviderConfig(type="sentence_transformers"),
}


def tiny_gguf(path: Path, context: int, split: bool = False, template: str | None = None) -> list[Path]:
    """A small GGUF file (two tensors) declaring `context`; `split`: as two parts, one tensor each."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "llama", split_max_tensors=1 if split else 0)
    writer.add_name(path.stem)
    writer.add_context_length(context)
    if template is not None:
        writer.add_chat_template(template)
    writer.add_tensor("first", np.arange(64, dtype=np.float32))
    writer.add_tensor("second", np.arange(64, dtype=np.float32) * 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(path)


def split_gguf(source: Path, target: Path) -> list[Path]:
    """`source` rewritten as a GGUF split in two parts (`<target stem>-0000N-of-00002.gguf`), as gguf-split makes."""
    import gguf

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(
        target, reader.fields["general.architecture"].contents(), split_max_tensors=(len(reader.tensors) + 1) // 2
    )
    for field in reader.fields.values():
        if field.name != "general.architecture" and not field.name.startswith("GGUF."):
            kind = field.types[0]
            item_kind = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=item_kind)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return writer.format_shard_names(target)


def folder_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    made = tmp_path_factory.mktemp("hub-files")
    gguf = Path(resolve_model_path("embedded:smollm2-135m-instruct"))
    embedding = folder_files(Path(resolve_model_path("embedded:all-minilm-l6-v2")))
    tiny: dict[str, Path | bytes] = {}
    for quantization in ("Q4_K_M", "Q4_K_S", "Q8_0"):
        tiny |= {p.name: p for p in tiny_gguf(made / f"tiny-{quantization}.gguf", 4096, template="{{ messages }}")}
    tiny |= {p.name: p for p in tiny_gguf(made / "tiny-F16.gguf", 1024, split=True)}
    tiny["mmproj-tiny-f16.gguf"] = tiny_gguf(made / "mmproj-tiny-f16.gguf", 1024)[0]
    decoys: dict[str, Path | bytes] = {
        "onnx/model.onnx": b"\0" * 4096,
        "openvino/openvino_model.xml": b"<net/>",
        "pytorch_model.bin": b"pickled weights beside the safetensors",
        "rust_model.ot": b"rust weights",
    }
    with FakeHub() as started:
        started.add_repo(GGUF, {Q4: gguf, Q8: gguf, "README.md": b"# SmolLM2 135M Instruct GGUF\n"})
        started.add_repo(TINY, {**tiny, "README.md": b"# tiny\n"})
        started.add_repo(EMBEDDING, {**embedding, **decoys})
        started.add_repo(CORRUPT_GGUF, {"tiny-Q4_K_M.gguf": made / "tiny-Q4_K_M.gguf"})
        started.add_repo(CORRUPT_EMBEDDING, dict(embedding))
        started.corrupt(CORRUPT_GGUF, "tiny-Q4_K_M.gguf")
        started.corrupt(CORRUPT_EMBEDDING, "tokenizer_config.json")
        yield started


@pytest.fixture(autouse=True)
def hub_reachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test session runs with HF_HUB_OFFLINE=1; these tests reach the fake hub (only: every call names it)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    url = f"sqlite+aiosqlite:///{tmp_path}/models.db"
    await asyncio.to_thread(upgrade, url)
    engine = create_async_engine(url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.fixture
def registry(hub: FakeHub, sessions: async_sessionmaker[AsyncSession], tmp_path: Path) -> PulledModels:
    return PulledModels(sessions, Hub(endpoint=hub.url, cache_dir=tmp_path / "hub"))


@pytest.fixture
def puller(registry: PulledModels) -> ModelPuller:
    return ModelPuller(registry)


def sha256(path: Path) -> str:
    with path.open("rb") as content:
        return hashlib.file_digest(content, "sha256").hexdigest()


def cache_files(hub_cache: Path, repo: str) -> list[Path]:
    folder = hub_cache / f"models--{repo.replace('/', '--')}"
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()) if folder.exists() else []


async def test_pull_gguf_by_quantization(hub: FakeHub, puller: ModelPuller, registry: PulledModels) -> None:
    import gguf

    before = len(hub.requests)
    row = await puller.pull(f"hf.co/{GGUF}:q4_1")

    entry = hub.repos[GGUF].files[Q4]
    assert row.name == f"{GGUF}:q4_1"
    assert (row.kind, row.repo, row.revision) == ("gguf", GGUF, hub.repos[GGUF].commit)
    assert Path(row.path).name == Q4
    assert sha256(Path(row.path)) == entry.sha256
    assert row.files == [{"path": Q4, "size": entry.size, "sha256": entry.sha256}]
    assert row.size_bytes == entry.size
    # The defaults come from the file's own header, as the gguf package reads it.
    reader = gguf.GGUFReader(row.path)
    assert row.architecture == reader.fields["general.architecture"].contents()
    assert row.context_length == reader.fields[f"{row.architecture}.context_length"].contents()
    assert row.chat_template == reader.fields["tokenizer.chat_template"].contents()
    # Only the chosen quantization came, not the other one or the README.
    assert [r.path for r in hub.requests[before:] if r.method == "GET" and "/resolve/" in r.path] == [
        f"/{GGUF}/resolve/{row.revision}/{Q4}"
    ]
    assert sorted(p.name for p in Path(row.path).parent.iterdir()) == [Q4]

    assert (await registry.get(f"hf.co/{GGUF}:q4_1")).path == row.path
    assert [r.name for r in await registry.list()] == [row.name]
    config = serving_config(row, SHIPPED_PROVIDERS)
    assert config == ModelConfig(
        provider="llamacpp",
        model=row.path,
        aliases=[f"hf.co/{row.name}"],
        context_length=min(row.context_length or 0, 8192),
        load_on_startup=False,
    )

    from llama_cpp import Llama

    llama = Llama(model_path=row.path, n_ctx=256, n_threads=1, verbose=False)
    answer = llama.create_chat_completion([{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0)
    assert answer["choices"][0]["message"]["content"]
    llama.close()


async def test_pull_embedding_model_takes_only_what_it_loads(
    hub: FakeHub, puller: ModelPuller, registry: PulledModels
) -> None:
    row = await puller.pull(EMBEDDING)

    repo = hub.repos[EMBEDDING]
    assert (row.name, row.kind, row.dimensions) == (EMBEDDING, "embedding", 384)
    assert {f["path"] for f in row.files} == EMBEDDING_FILES
    assert all(f["sha256"] == repo.files[f["path"]].sha256 for f in row.files)
    assert row.size_bytes == sum(repo.files[path].size for path in EMBEDDING_FILES)
    folder = Path(row.path)
    assert folder == registry.hub.snapshot(EMBEDDING, repo.commit)
    assert set(folder_files(folder)) == EMBEDDING_FILES
    assert serving_config(row, SHIPPED_PROVIDERS) == EmbeddingModelConfig(
        provider="local-embeddings", model=row.path, aliases=[f"hf.co/{EMBEDDING}"], load_on_startup=False
    )

    from sentence_transformers import SentenceTransformer

    pulled = SentenceTransformer(row.path, device="cpu", local_files_only=True)
    shipped = SentenceTransformer(resolve_model_path("embedded:all-minilm-l6-v2"), device="cpu", local_files_only=True)
    texts = ["pulled from the hub", "a second sentence"]
    assert pulled.encode(texts).tolist() == shipped.encode(texts).tolist()


async def test_a_gguf_repository_needs_a_choice_among_its_models(hub: FakeHub, puller: ModelPuller) -> None:
    with pytest.raises(ModelChoiceError) as no_choice:
        await puller.pull(TINY)
    assert no_choice.value.status_code == 400
    assert no_choice.value.details["choices"] == [f"{TINY}:F16", f"{TINY}:Q4_K_M", f"{TINY}:Q4_K_S", f"{TINY}:Q8_0"]

    with pytest.raises(ModelChoiceError) as missing:
        await puller.pull(f"{TINY}:Q5_K_M")
    assert missing.value.status_code == 400
    assert f"{TINY}:Q4_K_M" in str(missing.value) and "Q5_K_M" in str(missing.value)

    with pytest.raises(ModelChoiceError) as ambiguous:
        await puller.pull(f"{TINY}:Q4_K")
    assert ambiguous.value.details["choices"] == [f"{TINY}:Q4_K_M", f"{TINY}:Q4_K_S"]

    by_file = await puller.pull(f"{TINY}:tiny-Q8_0.gguf")
    assert [f["path"] for f in by_file.files] == ["tiny-Q8_0.gguf"]
    assert (by_file.context_length, by_file.chat_template, by_file.architecture) == (4096, "{{ messages }}", "llama")

    split = await puller.pull(f"{TINY}:f16")
    assert [f["path"] for f in split.files] == ["tiny-F16-00001-of-00002.gguf", "tiny-F16-00002-of-00002.gguf"]
    assert Path(split.path).name == "tiny-F16-00001-of-00002.gguf"
    assert (split.context_length, split.chat_template) == (1024, None)
    for file in split.files:
        assert sha256(Path(split.path).parent / file["path"]) == hub.repos[TINY].files[file["path"]].sha256


async def test_a_split_gguf_is_pulled_whole_and_loads_from_its_first_part(
    hub: FakeHub, puller: ModelPuller, tmp_path: Path
) -> None:
    import gguf

    source = Path(resolve_model_path("embedded:smollm2-135m-instruct"))
    parts = split_gguf(source, tmp_path / "SmolLM2-Q4_1.gguf")
    hub.add_repo(SPLIT_GGUF, {part.name: part for part in parts})
    declared = gguf.GGUFReader(source).fields["llama.context_length"].contents()

    row = await puller.pull(f"hf.co/{SPLIT_GGUF}")

    assert [f["path"] for f in row.files] == [part.name for part in parts]
    assert Path(row.path).name == "SmolLM2-Q4_1-00001-of-00002.gguf"
    assert row.size_bytes == sum(part.stat().st_size for part in parts)
    assert (row.architecture, row.context_length) == ("llama", declared)
    from llama_cpp import Llama

    llama = Llama(model_path=row.path, n_ctx=256, n_threads=1, verbose=False)  # finds part 2 beside part 1
    answer = llama.create_chat_completion([{"role": "user", "content": "Say hi"}], max_tokens=4, temperature=0)
    assert answer["choices"][0]["message"]["content"]
    llama.close()


async def test_a_missing_repository_is_a_404_that_names_it(puller: ModelPuller) -> None:
    with pytest.raises(HubRepoNotFoundError) as missing:
        await puller.pull("test-org/no-such-model:Q4_K_M")
    assert missing.value.status_code == 404
    assert "test-org/no-such-model" in missing.value.message


@pytest.mark.parametrize(
    ("repo", "bad_file"), [(CORRUPT_GGUF, "tiny-Q4_K_M.gguf"), (CORRUPT_EMBEDDING, "tokenizer_config.json")]
)
async def test_a_corrupted_file_is_refused_and_nothing_kept(
    hub: FakeHub, puller: ModelPuller, registry: PulledModels, repo: str, bad_file: str
) -> None:
    with pytest.raises(ChecksumMismatchError) as refused:
        await puller.pull(repo)

    assert refused.value.status_code == 502
    assert bad_file in refused.value.message
    assert await registry.list() == []
    left = cache_files(registry.hub.cache(), repo)
    assert not [p for p in left if p.name.endswith(".incomplete")]
    assert hub.repos[repo].files[bad_file].git_oid not in {p.name for p in left}
    assert hub.repos[repo].files[bad_file].sha256 not in {p.name for p in left}
    assert not (registry.hub.snapshot(repo, hub.repos[repo].commit) / bad_file).exists()


async def test_a_cut_download_resumes_with_a_range_request(hub: FakeHub, puller: ModelPuller) -> None:
    size = hub.repos[GGUF].files[Q4].size
    hub.cut_after(GGUF, Q4, size // 2)

    row = await puller.pull(f"{GGUF}:Q4_1")

    first, second = hub.downloads(GGUF, Q4)[-2:]
    assert (first.range, first.sent) == (None, size // 2)
    assert (second.range, second.sent) == (f"bytes={size // 2}-", size - size // 2)
    assert sha256(Path(row.path)) == hub.repos[GGUF].files[Q4].sha256


async def test_stream_reports_progress_and_a_stopped_pull_resumes(
    hub: FakeHub, puller: ModelPuller, registry: PulledModels
) -> None:
    size = hub.repos[GGUF].files[Q4].size
    held = hub.stall_after(GGUF, Q4, size // 2)
    events: list[Any] = []
    async with aclosing(puller.stream(f"{GGUF}:Q4_1")) as stream:
        async for event in stream:
            events.append(event)
            if isinstance(event, PullProgress) and event.completed > 0:
                await asyncio.to_thread(held.wait, 30)
                asyncio.get_running_loop().call_later(0.2, hub.release)
                break
    assert events[0].stage == "resolving"
    assert events[-1].stage == "downloading" and events[-1].total == size and events[-1].pull_total == size
    assert await registry.list() == []
    (partial,) = [p for p in cache_files(registry.hub.cache(), GGUF) if p.name.endswith(".incomplete")]
    kept = partial.stat().st_size
    assert 0 < kept < size

    events = [event async for event in puller.stream(f"{GGUF}:Q4_1")]

    resumed = hub.downloads(GGUF, Q4)[-1]
    assert (resumed.range, resumed.sent) == (f"bytes={kept}-", size - kept)
    done = events[-1]
    assert isinstance(done, PullDone) and done.model.name == f"{GGUF}:Q4_1"
    assert sha256(Path(done.model.path)) == hub.repos[GGUF].files[Q4].sha256
    progress = [e for e in events if isinstance(e, PullProgress)]
    assert [e.stage for e in progress if e.stage != "downloading"] == ["resolving", "verified"]
    assert progress[-1].pull_completed == progress[-1].pull_total == size
    assert {e.sha256 for e in progress[1:]} == {hub.repos[GGUF].files[Q4].sha256}
    assert [e.completed for e in progress[1:-1]] == sorted(e.completed for e in progress[1:-1])


async def test_lfs_files_come_from_the_cdn_the_hub_redirects_to_without_the_token(
    hub: FakeHub, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    puller = ModelPuller(PulledModels(sessions, Hub(endpoint=hub.url, token="hf_secret", cache_dir=tmp_path / "hub")))
    hub.redirect_lfs = True
    before = len(hub.requests)
    try:
        row = await puller.pull(f"{TINY}:Q4_K_M")
    finally:
        hub.redirect_lfs = False

    entry = hub.repos[TINY].files["tiny-Q4_K_M.gguf"]
    assert sha256(Path(row.path)) == entry.sha256
    requests = hub.requests[before:]
    (download,) = [r for r in requests if r.method == "GET" and not r.path.startswith("/api/")]
    assert download.path == f"/cdn/{TINY}/{row.revision}/tiny-Q4_K_M.gguf"
    assert download.authorization is None  # the token stays with the hub
    assert {r.authorization for r in requests if not r.path.startswith("/cdn/")} == {"Bearer hf_secret"}
    assert [r.status for r in requests if "/resolve/" in r.path] == [302, 302]  # our HEAD, huggingface_hub's HEAD


async def test_pulling_again_checks_the_cache_and_a_taken_name_is_refused(
    hub: FakeHub, puller: ModelPuller, registry: PulledModels
) -> None:
    first = await puller.pull(f"{TINY}:Q8_0")
    gets = len(hub.downloads(TINY, "tiny-Q8_0.gguf"))

    again = await puller.pull(f"{TINY}:Q8_0")

    assert len(hub.downloads(TINY, "tiny-Q8_0.gguf")) == gets  # verified where it lay, not downloaded again
    assert again.path == first.path and again.pulled_at >= first.pulled_at
    assert sha256(Path(again.path)) == hub.repos[TINY].files["tiny-Q8_0.gguf"].sha256  # replacing it kept its file
    assert [r.name for r in await registry.list()] == [f"{TINY}:Q8_0"]
    with pytest.raises(ConflictError) as taken:
        await puller.pull(f"{TINY}:Q4_K_M", name=f"hf.co/{TINY}:Q8_0")
    assert taken.value.status_code == 409


async def test_cross_encoders_are_pulled_as_rerankers(
    hub: FakeHub, puller: ModelPuller, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from sentence_transformers import CrossEncoder

    from sop_llm.providers.local.hf_loading import model_construction

    folder = tmp_path_factory.mktemp("cross-encoder")
    with model_construction:
        CrossEncoder(resolve_model_path("embedded:all-minilm-l6-v2"), num_labels=1, local_files_only=True).save(
            str(folder)
        )
    saved = folder_files(folder)
    hub.add_repo(CROSS_ENCODER, dict(saved))
    plain = {
        path: file for path, file in saved.items() if path not in ("modules.json", "config_sentence_transformers.json")
    }
    hub.add_repo(PLAIN_CROSS_ENCODER, dict(plain))

    for repo, expected in ((CROSS_ENCODER, saved), (PLAIN_CROSS_ENCODER, plain)):
        row = await puller.pull(repo)
        assert row.kind == "rerank"
        assert {f["path"] for f in row.files} == {path for path in expected if path != "README.md"}
        assert serving_config(row, {**SHIPPED_PROVIDERS, "rerankers": ProviderConfig(type="cross_encoder")}) == (
            EmbeddingModelConfig(provider="rerankers", model=row.path, aliases=[f"hf.co/{repo}"], load_on_startup=False)
        )
        with pytest.raises(ConfigError, match="cross_encoder"):
            serving_config(row, SHIPPED_PROVIDERS)
        with model_construction:
            scores = CrossEncoder(row.path, device="cpu", local_files_only=True).predict([("a query", "a passage")])
        assert len(scores) == 1


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sop_llm", "models", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def cli_env(hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "DATABASE_URL"}
    return env | {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "ENVIRONMENT": "development",
    }


@pytest.mark.slow
def test_cli_pulls_lists_and_removes(hub: FakeHub, cli_env: dict[str, str]) -> None:
    size = hub.repos[GGUF].files[Q8].size
    pulled = run_cli(["pull", f"hf.co/{GGUF}:Q8_0"], cli_env)
    assert pulled.returncode == 0, pulled.stderr
    assert f"pulled {GGUF}:Q8_0 (gguf, {size / 1e6:.1f} MB)" in pulled.stdout
    assert "B/s" in pulled.stderr  # the progress bar
    named = run_cli(["pull", f"{GGUF}:Q4_1", "--name", "smol"], cli_env)
    assert named.returncode == 0, named.stderr

    listed = run_cli(["ls"], cli_env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SIZE", "PULLED"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["smol", "gguf", f"{size / 1e6:.1f}", "MB"],
        [f"{GGUF}:Q8_0", "gguf", f"{size / 1e6:.1f}", "MB"],
    ]

    cache = Path(cli_env["HF_HOME"]) / "hub"
    shared = run_cli(["rm", "smol"], cli_env)  # the two names are one GGUF: its blob stays for the other
    assert shared.returncode == 0, shared.stderr
    assert shared.stdout.strip() == "removed smol: freed 0 B"
    assert [p.name for p in cache_files(cache, GGUF) if p.is_symlink()] == [Q8]
    last = run_cli(["rm", f"hf.co/{GGUF}:Q8_0"], cli_env)
    assert last.returncode == 0, last.stderr
    assert last.stdout.strip() == f"removed {GGUF}:Q8_0: freed {size / 1e6:.1f} MB"
    assert cache_files(cache, GGUF) == []
    assert run_cli(["ls"], cli_env).stdout.startswith("no pulled models")

    for failing, says in (
        (["rm", "smol"], "no pulled model 'smol'"),
        (["pull", "test-org/no-such-model"], "test-org/no-such-model"),
        (["pull", f"{TINY}:Q5_K_M"], f"{TINY}:Q4_K_M"),
    ):
        failed = run_cli(failing, cli_env)
        assert failed.returncode == 1
        (line,) = failed.stderr.splitlines()
        assert line.startswith("error: ") and says in line


@pytest.mark.slow
def test_a_killed_cli_pull_continues_where_it_stopped(hub: FakeHub, cli_env: dict[str, str]) -> None:
    size = hub.repos[GGUF].files[Q4].size
    held = hub.stall_after(GGUF, Q4, size // 2)
    process = subprocess.Popen(
        [sys.executable, "-m", "sop_llm", "models", "pull", f"{GGUF}:Q4_1"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert held.wait(120), "the pull did not start"
        cache = Path(cli_env["HF_HOME"]) / "hub"
        kept, deadline = -1, time.monotonic() + 30
        while time.monotonic() < deadline:  # until what arrived is on disk
            partials = [p for p in cache_files(cache, GGUF) if p.name.endswith(".incomplete")]
            now = partials[0].stat().st_size if partials else -1
            if now == kept and now > 0:
                break
            kept = now
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        hub.release()
    assert 0 < kept < size

    again = run_cli(["pull", f"{GGUF}:Q4_1"], cli_env)

    assert again.returncode == 0, again.stderr
    resumed = hub.downloads(GGUF, Q4)[-1]
    assert (resumed.range, resumed.sent) == (f"bytes={kept}-", size - kept)
    (served,) = [p for p in cache_files(cache, GGUF) if p.is_symlink()]
    assert sha256(served) == hub.repos[GGUF].files[Q4].sha256
    assert not [p for p in cache_files(cache, GGUF) if p.name.endswith(".incomplete")]
    shutil.rmtree(cache, ignore_errors=True)
