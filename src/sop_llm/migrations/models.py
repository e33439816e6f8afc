"""Every module that defines tables, imported so that `Base.metadata` (infra/database.py) holds every table:
Alembic's autogenerate (env.py) compares the database against it, and so does
tests/integration/test_migrations_match_models.py. A new `services/<concern>/model.py` belongs in MODULES (that test
fails until it is there).

It lives here, not in infra/database.py, because infra must not import services."""

from __future__ import annotations

from types import ModuleType

from sop_llm.services.auth import model as auth
from sop_llm.services.batches import model as batches
from sop_llm.services.files import model as files
from sop_llm.services.logs import model as logs
from sop_llm.services.models import model as pulled_models
from sop_llm.services.responses import model as responses
from sop_llm.services.tasks import model as tasks
from sop_llm.services.usage import model as usage

MODULES: tuple[ModuleType, ...] = (auth, batches, files, logs, pulled_models, responses, tasks, usage)
