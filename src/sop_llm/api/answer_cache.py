"""Generation answers cached on request: a caller who sends `X-SOP-Cache: use` gets the stored answer to an
identical earlier request of theirs (same route, same body), or a fresh one that is then stored for
CACHE_TTL_SECONDS. Answers are never shared between callers (the key includes the API key or token subject, or the
client IP with auth off), streams are never cached, and without the header nothing is looked up or stored.
The answer says `X-SOP-Cache: hit` or `miss`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sop_llm.api.deps import services_of
from sop_llm.api.request_state import caller_key
from sop_llm.infra.redis_keys import answer_key

HEADER = "x-sop-cache"


def _wanted(request: Request) -> bool:
    return request.headers.get(HEADER, "").lower() == "use"


async def _key(request: Request) -> str:
    body = await request.body()
    return answer_key(caller_key(request.scope), request.url.path, body.decode("utf-8", "replace"))


async def cached_answer(request: Request) -> Response | None:
    if not _wanted(request):
        return None
    stored = await services_of(request).cache.get(await _key(request))
    if stored is None:
        return None
    return Response(stored, media_type="application/json", headers={"X-SOP-Cache": "hit"})


async def remember_answer(request: Request, response: Response) -> Response:
    if _wanted(request) and response.status_code == 200:
        await services_of(request).cache.set(await _key(request), bytes(response.body))
        response.headers["X-SOP-Cache"] = "miss"
    return response
