"""Task ids over Redis Streams (FastStream). The database is the truth; the stream only says "look at task X". A
publish that fails leaves the row undispatched and a worker's sweeper hands it over later, so a broker outage delays
tasks but loses none. Messages carry nothing but the id; duplicates are harmless because claiming is guarded in the
database."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sop_llm.infra.backoff import Backoff
from sop_llm.infra.settings import Settings

if TYPE_CHECKING:
    from faststream.redis import RedisBroker

# Trim the stream (approximately) to this many entries; ids of finished tasks need not be kept.
STREAM_MAXLEN = 100_000


def make_broker(settings: Settings) -> RedisBroker:
    from faststream.redis import RedisBroker

    if not settings.broker_url:
        raise ValueError("BROKER_URL is not set")
    return RedisBroker(
        settings.broker_url,
        socket_timeout=settings.broker_timeout,
        socket_connect_timeout=settings.broker_timeout,
        # Through the standard logger (and so into ours, one format), per-message lines only at DEBUG.
        logger=logging.getLogger("sop_llm.broker"),
        log_level=logging.DEBUG,
    )


class BrokerDispatch:
    """Publishes task ids to the tasks stream; never raises: False means "not handed over, try again later".
    After a failure it stops trying for a few seconds (infra/backoff.py), so an unreachable broker costs one
    timeout, not one per accepted task."""

    def __init__(self, broker: RedisBroker, stream: str) -> None:
        self.broker = broker
        self.stream = stream
        self._connected = False
        self._backoff = Backoff("broker")

    async def publish(self, task_ids: list[str]) -> bool:
        from redis.exceptions import RedisError

        if not self._backoff.available:
            return False
        try:
            if not self._connected:
                await self.broker.connect()
                self._connected = True
            for task_id in task_ids:
                await self.broker.publish(task_id, stream=self.stream, maxlen=STREAM_MAXLEN)
        except (RedisError, OSError, TimeoutError) as exc:
            self._backoff.failed(exc, f"{len(task_ids)} task(s) left for the sweepers; not publishing")
            return False
        return True

    async def aclose(self) -> None:
        """Stop the broker: its publisher here, and in a worker its subscription too."""
        await self.broker.stop()
        self._connected = False
