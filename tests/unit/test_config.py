from __future__ import annotations

from pathlib import Path

import pytest

from sop_llm.infra.model_config import ConfigError, load_service_config
from sop_llm.infra.settings import Settings
from sop_llm.providers.registry import provider_types

pytestmark = pytest.mark.unit
TYPES = {"llamacpp", "sentence_transformers"}


def write(folder: Path, providers: str, models: str, embeddings: str = "embeddings: {}\n") -> Path:
    (folder / "providers.yaml").write_text(providers)
    (folder / "models.yaml").write_text(models)
    (folder / "embeddings.yaml").write_text(embeddings)
    return folder


def test_shipped_config_is_valid() -> None:
    config = load_service_config(Path("config"), provider_types())
    assert config.models["smollm2-135m"].provider == "llamacpp"
    assert "text-embedding-3-small" in config.embeddings["all-minilm-l6-v2"].aliases


@pytest.mark.parametrize(
    ("providers", "models", "message"),
    [
        (
            "providers:\n  p: {type: llamacpp}\n",
            "models:\n  m: {provider: q, model: x}\n",
            "models.yaml: models.m.provider: 'q' is not defined",
        ),
        (
            "providers:\n  p: {type: llamacpp}\n",
            "models:\n  m: {provider: p}\n",
            "models.yaml: models.m.model: Field required",
        ),
        (
            "providers:\n  p: {type: llamacpp}\n",
            "models:\n  m: {provider: p, model: x, colour: red}\n",
            "models.m.colour: Extra inputs are not permitted",
        ),
        (
            "providers:\n  p: {type: llamacpp}\n",
            "models:\n  m: {provider: p, model: x, context_length: 1}\n",
            "models.m.context_length",
        ),
        (
            "providers:\n  p: {type: foo}\n",
            "models: {}\n",
            "providers.yaml: providers.p.type: unknown provider type 'foo'",
        ),
        ("providers: [1, 2]\n", "models: {}\n", "providers.yaml: providers: must be a mapping"),
        ("providers: {}\nextra: 1\n", "models: {}\n", "unknown top-level key(s) ['extra']"),
        ("providers: {\n", "models: {}\n", "providers.yaml: not valid YAML"),
        (
            "providers:\n  p: {type: llamacpp}\n",
            "models:\n  a: {provider: p, model: x, aliases: [z]}\n  b: {provider: p, model: y, aliases: [z]}\n",
            "models.b: name or alias 'z' is used twice",
        ),
    ],
)
def test_config_errors_name_file_and_key(tmp_path: Path, providers: str, models: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_service_config(write(tmp_path, providers, models), TYPES)
    assert message in str(caught.value)


def test_missing_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"file not found .*CONFIG_DIR"):
        load_service_config(tmp_path, TYPES)


def test_settings_use_the_seed_names() -> None:
    settings = Settings(_env_file=None, SERVER_PORT=9000, LLM_MAX_CONCURRENT_REQUESTS=3, ENVIRONMENT="production")  # type: ignore[call-arg]
    assert settings.server_port == 9000
    assert settings.llm_max_concurrent_requests == 3
    assert settings.json_logs is True
    assert Settings(_env_file=None).server_port == 8023  # type: ignore[call-arg]


def test_settings_refuse_fixer_without_model() -> None:
    with pytest.raises(ValueError, match="JSON_FIXER_MODEL"):
        Settings(_env_file=None, JSON_FIXER_ENABLED=True, JSON_FIXER_MODEL="")  # type: ignore[call-arg]


def test_env_references_are_expanded(tmp_path: Path) -> None:
    folder = write(
        tmp_path,
        "providers:\n  p: {type: llamacpp, api_key: '${SOME_KEY}', base_url: '${BASE:-http://x/v1}'}\n",
        "models: {}\n",
    )
    config = load_service_config(folder, TYPES, {"SOME_KEY": "s3cret"})
    provider = config.providers["p"]
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(provider)
    assert provider.base_url == "http://x/v1"
    with pytest.raises(ConfigError, match="SOME_KEY is not set"):
        load_service_config(folder, TYPES, {})


def test_fallbacks_must_name_models(tmp_path: Path) -> None:
    folder = write(
        tmp_path, "providers:\n  p: {type: llamacpp}\n", "models:\n  a: {provider: p, model: x, fallbacks: [b]}\n"
    )
    with pytest.raises(ConfigError, match=r"models.a.fallbacks: 'b' is not a model"):
        load_service_config(folder, TYPES)


def test_config_files_see_values_from_dot_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sop_llm.services.container import config_environment

    (tmp_path / ".env").write_text("SOP_TEST_FROM_FILE=file\nSOP_TEST_BOTH=file\n")
    monkeypatch.setenv("SOP_TEST_BOTH", "process")
    env = config_environment(str(tmp_path / ".env"))
    assert env["SOP_TEST_FROM_FILE"] == "file"
    assert env["SOP_TEST_BOTH"] == "process"  # the process environment wins, as in Settings


def test_startup_knows_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    from sop_llm.migrations import HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD


async def test_startup_migrates_a_database_only_when_it_is_behind(tmp_path: Path) -> None:
    import asyncio

    from sop_llm.infra.database import create_engine
    from sop_llm.migrations import needs_upgrade, upgrade

    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    engine = create_engine(Settings(_env_file=None, DATABASE_URL=url))  # type: ignore[call-arg]
    try:
        assert await needs_upgrade(engine)
        await asyncio.to_thread(upgrade, url, "0007")
        assert await needs_upgrade(engine)
        await asyncio.to_thread(upgrade, url)
        assert not await needs_upgrade(engine)
    finally:
        await engine.dispose()


def test_a_server_process_settles_its_garbage_collector_after_startup() -> None:
    import subprocess
    import sys

    code = (
        "import gc; from sop_llm.infra.gc_tuning import YOUNG_THRESHOLD, settle_after_startup; "
        "settle_after_startup(); print(gc.get_threshold()[0] == YOUNG_THRESHOLD, gc.get_freeze_count() > 1000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
