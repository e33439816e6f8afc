"""FastAPI dependencies: services live on `app.state`, handed out through these aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from sop_llm.services.container import Services
from sop_llm.services.embedding_manager import EmbeddingManager
from sop_llm.services.unified_llm import UnifiedLLM


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_unified(request: Request) -> UnifiedLLM:
    return get_services(request).unified


def get_embeddings(request: Request) -> EmbeddingManager:
    return get_services(request).embeddings


ServicesDep = Annotated[Services, Depends(get_services)]
UnifiedDep = Annotated[UnifiedLLM, Depends(get_unified)]
EmbeddingsDep = Annotated[EmbeddingManager, Depends(get_embeddings)]
