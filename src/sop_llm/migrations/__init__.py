"""Alembic migrations of the task database. `upgrade(url)` is what `sop-llm db upgrade` and development startup run."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking: run it in a thread from async code (the migration environment runs its own event loop)."""
    command.upgrade(alembic_config(database_url), revision)
