"""FastAPI dependencies: services live on `app.state`, handed out through these aliases.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a thread pool, which measurably cost
throughput on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sop_llm.services.container import Services
from sop_llm.services.embeddings.manager import EmbeddingManager


def services_of(request: Request) -> Services:
    """The services, for hot-path routes that skip dependency injection."""
    services: Services = request.app.state.services
    return services


async def get_services(request: Request) -> Services:
    return services_of(request)


async def get_embeddings(request: Request) -> EmbeddingManager:
    return services_of(request).embeddings


ServicesDep = Annotated[Services, Depends(get_services)]
EmbeddingsDep = Annotated[EmbeddingManager, Depends(get_embeddings)]
