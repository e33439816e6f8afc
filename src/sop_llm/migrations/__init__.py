"""Alembic migrations of the task database. `upgrade(url)` is what `sop-llm db upgrade` and development startup run;
startup first asks `needs_upgrade`, which reads one row instead of importing and running Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine

# The newest revision in versions/ (tests/unit/test_config.py checks it against Alembic's own view).
HEAD = "0010"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking: run it in a thread from async code (the migration environment runs its own event loop)."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


async def needs_upgrade(engine: AsyncEngine) -> bool:
    """Whether the database is behind HEAD (or has no schema yet)."""
    try:
        async with engine.connect() as connection:
            version = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    except (SQLAlchemyError, OSError):
        return True
    return bool(version != HEAD)
