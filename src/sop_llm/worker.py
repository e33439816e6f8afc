"""`sop-llm worker`: runs background tasks that the API hands over through Redis Streams (BROKER_URL). Any number of
workers, on any number of machines, share one consumer group; each takes a task id only when it has a free slot, and
claims the task in the database before running it, so a duplicate or stale message does nothing. The broker is
only a doorbell: a worker that dies leaves its tasks to expire and be re-queued, and messages lost with the broker
are replaced by the sweepers, which hand pending tasks over again."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from loguru import logger

from sop_llm import __version__
from sop_llm.batch_app import InProcessCaller
from sop_llm.infra.errors import AppError
from sop_llm.infra.logging import setup_logging
from sop_llm.infra.redis_keys import TASKS_CONSUMER_GROUP
from sop_llm.infra.settings import Settings
from sop_llm.services.container import build_services

if TYPE_CHECKING:
    from faststream.redis import RedisBroker
    from faststream.redis.subscriber.usecases.stream_subscriber import StreamSubscriber

# How often the worker checks that its stream subscription is alive (re-subscribing after a broker restart).
SUPERVISE_INTERVAL = 2.0


async def run_worker(settings: Settings) -> None:
    from faststream.redis import StreamSub

    setup_logging(settings)
    if settings.migrate_on_startup:
        from sop_llm.migrations import upgrade

        await asyncio.to_thread(upgrade, settings.database_url)
    services = build_services(settings, worker=True)
    services.serve_batches(InProcessCaller(services), finalize=False)
    runner, dispatch = services.tasks.runner, services.tasks.dispatch
    assert runner is not None and dispatch is not None  # build_services(worker=True) with a BROKER_URL

    stream = StreamSub(dispatch.stream, group=TASKS_CONSUMER_GROUP, consumer=runner.owner, max_records=1)
    subscriber = dispatch.broker.subscriber(stream=stream)

    @subscriber
    async def on_task(task_id: str) -> None:
        try:
            await runner.take(task_id)
        except AppError as exc:  # the database is away; the task stays dispatched and is handed over again later
            logger.warning("could not claim task {}: {}", task_id, exc.message)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await services.start()
    logger.info(
        "{} worker {} {} started; stream {} group {}",
        settings.app_name,
        runner.owner,
        __version__,
        dispatch.stream,
        TASKS_CONSUMER_GROUP,
    )
    try:
        while not stop.is_set():
            if not subscriber.running:
                await _subscribe(dispatch.broker, subscriber)
            if settings.worker_heartbeat_file is not None:  # for container health checks
                settings.worker_heartbeat_file.touch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SUPERVISE_INTERVAL)
    finally:
        logger.info("worker {} stopping; running tasks are handed back", runner.owner)
        await services.aclose()  # stops the broker (no new ids), then hands running tasks back


async def _subscribe(broker: RedisBroker, subscriber: StreamSubscriber) -> None:
    """(Re)start the stream subscription; it creates the consumer group if the broker lost it (a restart without
    persistence). A broker that is down is retried on the next round."""
    from redis.exceptions import RedisError

    try:
        if not broker.running:
            await broker.start()
        else:
            await subscriber.stop()
            await subscriber.start()
        logger.info("subscribed to the task stream")
    except (RedisError, OSError, TimeoutError) as exc:
        logger.warning("broker unreachable, retrying in {} s: {!r}", SUPERVISE_INTERVAL, exc)
