"""Build every service from settings once; the app's lifespan starts and closes them."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncEngine

from sop_llm.infra.cache import Cache, MemoryCache
from sop_llm.infra.database import create_engine, session_factory
from sop_llm.infra.gc_tuning import settle_after_startup
from sop_llm.infra.model_config import ServiceConfig, load_service_config
from sop_llm.infra.redaction import Redactor
from sop_llm.infra.settings import Settings
from sop_llm.providers.registry import provider_types
from sop_llm.services.auth.authenticator import Authenticator
from sop_llm.services.auth.keys import KeyStore
from sop_llm.services.auth.sessions import Sessions
from sop_llm.services.auth.tickets import Tickets
from sop_llm.services.batches.chunks import CHUNK_KIND, BatchChunks, ChunkQueue, LineCaller
from sop_llm.services.batches.repository import BatchRepository
from sop_llm.services.batches.service import BatchService
from sop_llm.services.embeddings.manager import EmbeddingManager
from sop_llm.services.files.service import FileService
from sop_llm.services.files.store import LocalFileStore
from sop_llm.services.limits.rate_limit import RateLimiter
from sop_llm.services.local.manager import LocalModels
from sop_llm.services.logs.search import LogSearch
from sop_llm.services.logs.writer import RequestLog
from sop_llm.services.models.catalog import PulledCatalog
from sop_llm.services.models.hub import Hub
from sop_llm.services.models.puller import ModelPuller
from sop_llm.services.models.repository import PulledModels
from sop_llm.services.monitoring.collector import Monitor
from sop_llm.services.monitoring.metrics import Metrics
from sop_llm.services.rerank.reranker import Reranker
from sop_llm.services.responses.repository import ResponseStore
from sop_llm.services.routing.build import plan_deployments
from sop_llm.services.routing.deployments import Deployments
from sop_llm.services.routing.reload import ConfigReloader
from sop_llm.services.routing.router import ModelRouter
from sop_llm.services.structured.fixer import JSONFixer
from sop_llm.services.structured.output import StructuredOutput
from sop_llm.services.tasks.broker import BrokerDispatch, make_broker
from sop_llm.services.tasks.jobs import Job, JobContext, bind_jobs
from sop_llm.services.tasks.repository import TaskRepository
from sop_llm.services.tasks.runner import TaskRunner
from sop_llm.services.tasks.service import TaskService
from sop_llm.services.usage.accounting import Accounting
from sop_llm.services.usage.budgets import Budgets, make_counters
from sop_llm.services.usage.meter import UsageMeter


@dataclass
class Services:
    settings: Settings
    config: ServiceConfig
    cache: Cache
    local: LocalModels
    deployments: Deployments
    embeddings: EmbeddingManager
    rerank: Reranker
    router: ModelRouter
    structured: StructuredOutput
    tasks: TaskService
    auth: Authenticator
    console_sessions: Sessions
    limiter: RateLimiter
    metrics: Metrics
    database: AsyncEngine
    monitor: Monitor
    usage: UsageMeter
    request_log: RequestLog
    log_search: LogSearch
    budgets: Budgets
    accounting: Accounting
    responses: ResponseStore
    files: FileService
    batches: BatchService
    chunks: BatchChunks
    catalog: PulledCatalog
    puller: ModelPuller
    reloader: ConfigReloader
    started_at: float = field(default_factory=time.time)
    _settling: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open remote clients, begin loading the startup models in the background, start the task runner (which
        finds work in the database on its own when there is no broker)."""
        try:
            await self.catalog.refresh()
        except Exception as exc:  # a database that does not answer must not keep the configured models down
            logger.error("pulled models are not served until the registry can be read: {}", exc)
        self.local.start()
        self.embeddings.start()
        await self.deployments.start()
        self.monitor.start()
        if self.settings.usage_enabled:
            self.usage.start()
        self.request_log.start()
        if self.tasks.runner is not None:
            self.tasks.runner.start(ready=lambda: self.ready()[0], poll=self.tasks.dispatch is None)
        if self.settings.gc_tuning:
            self._settling = asyncio.create_task(self._settle_gc(), name="gc-settle")

    async def _settle_gc(self) -> None:
        """Tune the garbage collector once the startup models are loaded (their objects are then frozen too), or
        after a minute: not on the way to liveness, as the collection it starts with takes ~0.1 s."""
        deadline = time.monotonic() + 60
        while not self.ready()[0] and time.monotonic() < deadline:  # noqa: ASYNC110 - readiness is polled state
            await asyncio.sleep(0.25)
        settle_after_startup()

    def serve_batches(self, caller: LineCaller, finalize: bool) -> None:
        """Run batch lines through `caller` (the API's routes, in process); `finalize`: also write the result files
        of finished batches (API processes, which serve the files)."""
        self.chunks.caller = caller
        if finalize:
            self.batches.start()

    async def aclose(self) -> None:
        if self._settling is not None:
            self._settling.cancel()
        await self.batches.aclose()
        await self.monitor.aclose()
        if self.tasks.dispatch is not None:  # first: a worker takes no new task ids while it shuts down
            await self.tasks.dispatch.aclose()
        if self.tasks.runner is not None:
            await self.tasks.runner.aclose()
        await self.usage.aclose()  # the last counts, before the database goes
        await self.request_log.aclose()
        await self.budgets.aclose()
        await self.database.dispose()
        await self.reloader.aclose()
        await self.deployments.aclose()
        await self.embeddings.aclose()
        await self.local.aclose()
        await self.cache.aclose()

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Whether the startup models serve, with each one's state. An unloaded local model still serves: it loads
        again on its next request."""
        serving = {name: self.local.serving(name) for name in self.local.default_names()}
        states = {name: self.local.state(name).value for name in serving}
        for entry in self.embeddings.describe():
            if entry["name"] in self.embeddings.default_names():
                states[entry["name"]] = entry["state"]
                serving[entry["name"]] = entry["state"] == "ready"
        return all(serving.values()), states


def config_environment(env_file: str = ".env") -> dict[str, str]:
    """What `${VAR}` in the config files can reference: the process environment over `.env`, as Settings sees them
    (so a key or LLAMA_N_THREADS put in `.env` reaches config/*.yaml too)."""
    from dotenv import dotenv_values

    from_file = {key: value for key, value in dotenv_values(env_file).items() if value is not None}
    return {**from_file, **os.environ}


def build_services(settings: Settings, worker: bool = False) -> Services:
    """The API process runs tasks itself only when there is no broker; a worker (`sop-llm worker`) always does."""
    config = load_service_config(settings.config_dir, provider_types(), config_environment())
    cache: Cache = MemoryCache(settings.cache_max_items, settings.cache_ttl_seconds)
    if settings.redis_url:
        from sop_llm.infra.redis_cache import RedisCache

        cache = RedisCache(settings.redis_url, settings.cache_ttl_seconds, settings.redis_timeout)
    planned = plan_deployments(config)
    local = LocalModels(settings, {p.name: p.provider for p in planned if p.provider.local})
    deployments = Deployments(settings, planned, {name: m.strategy for name, m in config.models.items()}, local)
    metrics = Metrics([*config.models, *(p.name for p in planned), *config.embeddings])
    router = ModelRouter(settings, config, deployments, local, metrics)
    structured = StructuredOutput(router, JSONFixer(settings, router))
    embeddings = EmbeddingManager(settings, config, cache)
    database = create_engine(settings)
    sessions = session_factory(database)
    pulled = PulledModels(sessions, Hub(endpoint=settings.hf_endpoint, cache_dir=settings.hf_hub_cache))
    repository = TaskRepository(sessions, webhook_grace_s=settings.tasks_lease_seconds)
    dispatch = BrokerDispatch(make_broker(settings), settings.tasks_stream) if settings.broker_url else None
    usage = UsageMeter(database, sessions, settings.usage_flush_seconds)
    budgets = Budgets(
        sessions, make_counters(settings.redis_url, settings.redis_timeout), settings.budget_cache_seconds
    )
    accounting = Accounting(budgets, metrics.observe_tokens)
    files = FileService(sessions, LocalFileStore(settings.files_dir), settings.batch_max_lines)
    batch_repository = BatchRepository(sessions)
    chunk_queue = ChunkQueue(settings, repository, dispatch)
    chunks = BatchChunks(settings, batch_repository, chunk_queue)
    runner = None
    if worker or dispatch is None:
        counted = usage if settings.usage_enabled else None
        # The task kinds: the task API's, and a batch's chunk (its lines each count as a request of the batch's owner).
        jobs: dict[str, Job] = {
            **bind_jobs(JobContext(router, structured, embeddings, accounting)),
            CHUNK_KIND: chunks.run,
        }
        runner = TaskRunner(settings, repository, jobs, dispatch, counted)
        chunk_queue.wake = runner.notify
    catalog = PulledCatalog(config, pulled, router, local, deployments, embeddings, metrics)
    return Services(
        settings=settings,
        config=config,
        cache=cache,
        local=local,
        deployments=deployments,
        embeddings=embeddings,
        rerank=Reranker(settings, embeddings, router),
        router=router,
        structured=structured,
        tasks=TaskService(settings, repository, runner, dispatch),
        auth=Authenticator(settings, KeyStore(sessions, settings.api_key_cache_seconds), Tickets(cache)),
        # Console sessions share Redis; without it they get their own memory, where cached answers cannot evict them.
        console_sessions=Sessions(
            cache if settings.redis_url else MemoryCache(10_000, settings.cache_ttl_seconds),
            settings.console_session_hours,
            sessions,
            settings.api_key_cache_seconds,
        ),
        limiter=RateLimiter(settings),
        metrics=metrics,
        database=database,
        monitor=Monitor(
            metrics, cache, deployments.describe, local, embeddings, repository.counts, batch_repository.overview
        ),
        usage=usage,
        request_log=RequestLog(
            sessions,
            settings.request_log,
            settings.request_log_flush_seconds,
            settings.request_log_buffer,
            settings.request_log_retention_days,
            Redactor(settings.request_log_redact),
            settings.request_log_body_limit,
        ),
        log_search=LogSearch(sessions),
        budgets=budgets,
        accounting=accounting,
        responses=ResponseStore(sessions, settings.responses_ttl_days),
        files=files,
        batches=BatchService(
            settings, batch_repository, files, chunk_queue, runner.cancel if runner is not None else None
        ),
        chunks=chunks,
        catalog=catalog,
        puller=ModelPuller(pulled),
        reloader=ConfigReloader(
            settings, config, deployments, router, metrics, config_environment, lambda: list(catalog.served)
        ),
    )
