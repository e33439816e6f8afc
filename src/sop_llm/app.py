"""`create_app(settings)` builds the FastAPI app; its lifespan owns every resource."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from loguru import logger
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from sop_llm import __version__
from sop_llm.api.anthropic import messages as anthropic_messages
from sop_llm.api.console import pages as console_pages
from sop_llm.api.console import session as console_session
from sop_llm.api.errors import install_error_handlers
from sop_llm.api.hot_paths import HotPaths
from sop_llm.api.middleware.auth import AuthMiddleware
from sop_llm.api.middleware.body_limit import BodyLimitMiddleware
from sop_llm.api.middleware.rate_limit import RateLimitMiddleware
from sop_llm.api.middleware.record import RecordMiddleware
from sop_llm.api.middleware.trace import TraceMiddleware
from sop_llm.api.native import admin as native_admin
from sop_llm.api.native import config as native_config
from sop_llm.api.native import embeddings as native_embeddings
from sop_llm.api.native import health as native_health
from sop_llm.api.native import json_fix as native_json
from sop_llm.api.native import logs as native_logs
from sop_llm.api.native import models as native_models
from sop_llm.api.native import monitoring as native_monitoring
from sop_llm.api.native import providers as native_providers
from sop_llm.api.native import pull as native_pull
from sop_llm.api.native import rerank as native_rerank
from sop_llm.api.native import tasks as native_tasks
from sop_llm.api.native import tokenize as native_tokenize
from sop_llm.api.native import usage as native_usage
from sop_llm.api.ollama import embeddings as ollama_embeddings
from sop_llm.api.ollama import generation as ollama_generation
from sop_llm.api.ollama import models as ollama_models
from sop_llm.api.ollama import pull as ollama_pull
from sop_llm.api.openai import chat as openai_chat
from sop_llm.api.openai import embeddings as openai_embeddings
from sop_llm.api.openai import models as openai_models
from sop_llm.api.openai.batches import files as openai_files
from sop_llm.api.openai.batches import routes as openai_batches
from sop_llm.api.openai.responses import routes as openai_responses
from sop_llm.batch_app import InProcessCaller
from sop_llm.infra.logging import setup_logging
from sop_llm.infra.model_config import ConfigError
from sop_llm.infra.settings import Settings
from sop_llm.infra.telemetry import start_tracing
from sop_llm.migrations import needs_upgrade, upgrade
from sop_llm.services.container import Services, build_services


class ServiceApp(FastAPI):
    """FastAPI, with the hottest routes sent past its own layers (api/hot_paths.py)."""

    hot_paths: HotPaths | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chain = self.hot_paths.chain_for(scope) if self.hot_paths is not None else None
        if chain is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await chain(scope, receive, send)


def reload_on_hangup(services: Services) -> None:
    """SIGHUP reloads the configuration files (in the process that serves; with SERVER_WORKERS > 1 the process
    manager restarts its workers on SIGHUP instead)."""
    loop = asyncio.get_running_loop()
    reloading: set[asyncio.Task[None]] = set()

    async def reload() -> None:
        try:
            await services.reloader.reload()
        except ConfigError as exc:
            logger.error("SIGHUP: the configuration was not reloaded (nothing changed): {}", exc)

    def on_hangup() -> None:
        task = loop.create_task(reload(), name="config-reload")
        reloading.add(task)
        task.add_done_callback(reloading.discard)

    # Not in the main thread (tests), or no SIGHUP on this system: the API and the CLI still reload.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_hangup)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    setup_logging(settings)
    if settings.environment == "production" and not settings.auth_on and not settings.auth_allow_disabled_in_production:
        raise ConfigError(
            "ENVIRONMENT=production with AUTH_ENABLED=false: refusing to serve without authentication; enable it, "
            "or set AUTH_ALLOW_DISABLED_IN_PRODUCTION=true if something in front of the service authenticates"
        )
    services = build_services(settings)  # validates config files; raises ConfigError naming file and key
    tracing = start_tracing(settings)  # None, with nothing of OpenTelemetry imported, unless traces are exported

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_startup and await needs_upgrade(services.database):
            await asyncio.to_thread(upgrade, settings.database_url)
        services.serve_batches(InProcessCaller(services), finalize=True)
        if tracing is not None:
            tracing.start()
        await services.start()
        reload_on_hangup(services)
        logger.info(
            "{} {} serving; loading models in the background: {}",
            settings.app_name,
            __version__,
            ", ".join(services.local.default_names() + services.embeddings.default_names()) or "none",
        )
        try:
            yield
        finally:
            await services.aclose()
            if tracing is not None:
                await tracing.aclose()  # exports the spans still queued

    app = ServiceApp(
        title=settings.app_name,
        version=__version__,
        debug=settings.debug,
        lifespan=lifespan,
        docs_url="/docs",
        # FastAPI's native OpenTelemetry looks up the global providers (reading the environment) on every
        # request even when none is configured; measured, that was ~15 % of a gateway request. Our own
        # TraceMiddleware opens the SERVER span instead, the hot paths' included.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.services = services
    # Innermost first: the request's record and rate limits need the caller that auth found; CORS answers
    # preflights before auth asks for credentials; the body cap and the trace id wrap everything.
    app.add_middleware(
        RecordMiddleware,
        meter=services.usage if settings.usage_enabled else None,
        limiter=services.limiter if services.limiter.enabled else None,
        log=services.request_log if services.request_log.enabled else None,
    )
    if services.limiter.enabled:
        app.add_middleware(RateLimitMiddleware, limiter=services.limiter)
    if services.auth.enabled:
        app.add_middleware(
            AuthMiddleware,
            authenticator=services.auth,
            sessions=services.console_sessions,
            metrics_public=settings.metrics_open,
        )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID", "X-API-Key"],
            expose_headers=["X-Request-ID", "X-Served-By", "Retry-After", "X-RateLimit-Limit", "X-RateLimit-Remaining"],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        limit=settings.max_request_body_bytes,
        # An upload may be as large as a file may be, plus the multipart framing around it.
        larger={"/v1/files": settings.files_max_bytes + 64 * 1024},
    )
    app.add_middleware(
        TraceMiddleware, metrics=services.metrics, tracing=tracing
    )  # outermost: every answer, a 413 included, carries the trace id
    install_error_handlers(app)
    native = (
        native_health,
        native_models,
        native_pull,
        native_embeddings,
        native_rerank,
        native_providers,
        native_json,
        native_tasks,
        native_admin,
        native_config,
        native_monitoring,
        native_usage,
        native_logs,
        native_tokenize,
    )
    for module in native:
        app.include_router(module.router, prefix="/api/v1")
    app.include_router(native_usage.admin, prefix="/api/v1")
    app.include_router(native_monitoring.root)
    app.include_router(console_pages.router)
    app.include_router(console_session.router)
    for module in (openai_chat, openai_embeddings, openai_models, openai_responses, openai_files, openai_batches):
        app.include_router(module.router, prefix="/v1")
    app.include_router(anthropic_messages.router, prefix="/v1")
    for module in (ollama_models, ollama_generation, ollama_embeddings, ollama_pull):
        app.include_router(module.router, prefix="/api")  # Ollama's paths
    app.include_router(native_rerank.openai_router, prefix="/v1")  # where Cohere / Jina clients look for it
    app.include_router(native_tokenize.router)  # where vLLM and llama.cpp's server have it
    app.hot_paths = HotPaths(
        {"/v1/chat/completions": openai_chat.chat_completions, "/v1/embeddings": openai_embeddings.embeddings},
        app.user_middleware,
        app.exception_handlers,
    )
    return app
