"""The migrations build exactly the tables the models describe: on a fresh database upgraded to head, Alembic's own
comparison (what `alembic revision --autogenerate` would write) finds nothing to change, on SQLite and on a
PostgreSQL that this test starts (and stops) itself on a free port. SQLite alone would miss what its type system
cannot hold (whether a timestamp has a time zone); PostgreSQL alone would leave SQLite's batch-mode migrations
untested. No difference is ignored on either."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import sop_llm.services
from sop_llm.infra.database import Base
from sop_llm.migrations import upgrade
from sop_llm.migrations.models import MODULES
from tests.system.servers import Postgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.system)])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    postgres: Postgres = request.getfixturevalue("postgres")
    return postgres.url  # a server of its own; nothing else uses its database


def _differences(connection: Connection) -> tuple[list[Any], str]:
    """The differences as `compare_metadata` lists them (it is `produce_migrations(…).upgrade_ops.as_diffs()`), and
    the migration that would remove them, as autogenerate would write it."""
    # Types are compared by default; server defaults only when asked (env.py asks too).
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    operations = produce_migrations(context, Base.metadata).upgrade_ops
    assert operations is not None
    return operations.as_diffs(), render_python_code(operations, migration_context=context)


async def test_a_database_upgraded_to_head_matches_the_models(fresh_database: str) -> None:
    await asyncio.to_thread(upgrade, fresh_database)
    engine = create_async_engine(fresh_database)
    try:
        async with engine.connect() as connection:
            differences, migration = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == [], f"the models and the migrations differ; the missing migration:\n{migration}"


def test_every_model_module_is_known_to_alembic() -> None:
    services = Path(sop_llm.services.__file__).parent
    on_disk = {f"sop_llm.services.{path.parent.name}.model" for path in services.glob("*/model.py")}
    assert {module.__name__ for module in MODULES} == on_disk


def test_autogenerate_through_env_py_sees_every_table(tmp_path: Path) -> None:
    """`alembic check` runs env.py as `alembic revision --autogenerate` does. In a fresh interpreter, so that only
    the models env.py itself imports are known (here the test has imported them all)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/fresh.db"
    upgrade(url)
    code = "import sys; from alembic import command; from sop_llm.migrations import alembic_config; "
    code += "command.check(alembic_config(sys.argv[1]))"
    checked = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr.strip().splitlines()[-1][:3000]  # Alembic's one-line verdict
