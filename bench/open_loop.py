"""Open-loop load: requests sent at Poisson arrival times whatever the answers do (a closed loop of N clients would
slow down with the server and hide its queues), and the latency figures read from them.

A request still unanswered when the drain time after the last arrival runs out is cancelled and kept with the
time it had waited so far: a lower bound of its latency, so percentiles that reach such requests are lower bounds
too (`Figures.p99_lower_bound`).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

FAILED = 0  # status of a request that got no HTTP answer (connection refused or reset)
UNFINISHED = -1  # status of a request cancelled at the cut-off


@dataclass(frozen=True)
class Sample:
    sent: float  # seconds after the run started
    seconds: float  # latency, or the time waited until the cut-off
    status: int  # HTTP status, FAILED or UNFINISHED
    served_by: str  # the X-Served-By header, "" without one
    error: str = ""


@dataclass(frozen=True)
class Figures:
    requests: int
    ok: int
    failed: int  # an error status or no answer
    unfinished: int
    p50_ms: float
    p99_ms: float
    p99_lower_bound: bool  # unfinished requests reach the p99: the true p99 is at least this
    max_send_lag_ms: float  # how late the generator sent its latest request (the schedule's fidelity)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


async def _send(session: aiohttp.ClientSession, url: str, body: dict[str, Any], sent: float) -> Sample:
    started = time.perf_counter()
    try:
        async with session.post(url, json=body) as response:
            await response.read()
            status, served_by = response.status, response.headers.get("X-Served-By", "")
            error = "" if status == 200 else (await response.text())[:300]
    except (aiohttp.ClientError, OSError) as exc:
        status, served_by, error = FAILED, "", repr(exc)
    return Sample(sent, time.perf_counter() - started, status, served_by, error)


async def poisson(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    rate: float,
    seconds: float,
    seed: int,
    drain_seconds: float,
) -> tuple[list[Sample], float]:
    """POST `body` to `url` at Poisson arrivals of `rate` per second for `seconds`; wait for the answers at most
    `drain_seconds` after the last arrival. Returns the samples in sending order and the worst send lag (s)."""
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    started, wall = loop.time(), time.perf_counter()
    sends: list[tuple[float, asyncio.Task[Sample]]] = []
    lag = 0.0
    at = rng.expovariate(rate)
    while at < seconds:
        await asyncio.sleep(max(0.0, started + at - loop.time()))
        lag = max(lag, loop.time() - started - at)
        sends.append((at, asyncio.create_task(_send(session, url, body, at))))
        at += rng.expovariate(rate)
    await asyncio.wait([task for _, task in sends], timeout=drain_seconds)
    cut = time.perf_counter() - wall
    samples = []
    for at, task in sends:
        if task.done():
            samples.append(task.result())
        else:
            task.cancel()
            samples.append(Sample(at, cut - at, UNFINISHED, ""))
    await asyncio.gather(*(task for _, task in sends), return_exceptions=True)
    return samples, lag


def figures(samples: list[Sample], lag: float) -> Figures:
    seconds = sorted(s.seconds for s in samples)
    cut = statistics.quantiles(seconds, n=100, method="inclusive")
    p99 = cut[98]
    unfinished = [s.seconds for s in samples if s.status == UNFINISHED]
    return Figures(
        requests=len(samples),
        ok=sum(s.status == 200 for s in samples),
        failed=sum(s.status not in (200, UNFINISHED) for s in samples),
        unfinished=len(unfinished),
        p50_ms=cut[49] * 1000,
        p99_ms=p99 * 1000,
        p99_lower_bound=bool(unfinished) and min(unfinished) <= p99,
        max_send_lag_ms=lag * 1000,
    )
