"""What a task can do: each kind is a plain `async def` over the same services the HTTP API uses. Payloads were
validated by the API when the task was accepted. Each is charged like the same request over HTTP, through the
accounting service: held on the budgets of the task's owner before it runs (a task over budget fails with
`budget_exceeded`), settled after, and noted in the run's record for the owner's usage (the runner records it).

The runner gets its table of kinds from the container: these, bound to their services (`bind_jobs`), and the kinds
other concerns run as tasks (a batch's chunk), which this package does not know."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sop_llm.services.embeddings.manager import EmbeddingManager
from sop_llm.services.payloads import EmbeddingsBody, FixBody, GenerateBody, SimilarityBody
from sop_llm.services.routing.router import ModelRouter
from sop_llm.services.structured.output import StructuredOutput
from sop_llm.services.usage.accounting import Accounting


@dataclass(frozen=True)
class JobContext:
    router: ModelRouter
    structured: StructuredOutput
    embeddings: EmbeddingManager
    accounting: Accounting


# What the runner calls: a task's payload in, its result out.
Job = Callable[[dict[str, Any]], Awaitable[Any]]


async def generate(payload: dict[str, Any], ctx: JobContext) -> Any:
    body = GenerateBody.model_validate(payload)
    request = body.to_request()
    async with ctx.accounting.charged_generation(ctx.router.resolve(body.model), request) as charge:
        if request.json_mode is None:
            name, completion = await ctx.router.generate_with_fallback(charge.model, request, body.fallbacks)
            verdict = None
        else:
            name, completion, outcome = await ctx.structured.generate_json(charge.model, request, body.fallbacks)
            verdict = {"value": outcome.value, **outcome.describe()}
        charge.answered(name, completion.usage)
    result = {
        "model": name,
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "usage": completion.usage.as_dict(),
    }
    return {**result, "json": verdict} if verdict else result


async def embeddings(payload: dict[str, Any], ctx: JobContext) -> Any:
    body = EmbeddingsBody.model_validate(payload)
    model = ctx.embeddings.get(body.model).name
    async with ctx.accounting.charged(model, sum(map(len, body.texts))) as charge:
        result = await ctx.embeddings.embed(model, body.texts, body.input_type)
        charge.used(result.tokens, result.model)
    return {"model": result.model, "embeddings": result.vectors.tolist(), "usage": {"prompt_tokens": result.tokens}}


async def similarity(payload: dict[str, Any], ctx: JobContext) -> Any:
    body = SimilarityBody.model_validate(payload)
    # Similarity reports no token count: it is charged as a request of the model, with no tokens.
    async with ctx.accounting.charged(ctx.embeddings.get(body.model).name, 0) as charge:
        if body.text1 is not None and body.text2 is not None:
            model, score = await ctx.embeddings.similarity(body.model, body.text1, body.text2)
            charge.used(0, model)
            return {"model": model, "similarity": score}
        assert body.query is not None and body.candidates is not None
        model, ranked = await ctx.embeddings.rank(body.model, body.query, body.candidates, body.top_k)
        charge.used(0, model)
        return {"model": model, "results": [{"index": r.index, "similarity": r.score} for r in ranked]}


async def json_fix(payload: dict[str, Any], ctx: JobContext) -> Any:
    body = FixBody.model_validate(payload)
    outcome = await ctx.structured.fixer.resolve(body.text, body.schema_, fixer_model=body.model)
    return {"value": outcome.value, "provenance": outcome.provenance, "attempts": outcome.attempts}


_JOBS: dict[str, Callable[[dict[str, Any], JobContext], Awaitable[Any]]] = {
    "generate": generate,
    "embeddings": embeddings,
    "similarity": similarity,
    "json_fix": json_fix,
}


def bind_jobs(ctx: JobContext) -> dict[str, Job]:
    """The kinds the task API accepts, each bound to the services it runs on."""

    def bind(job: Callable[[dict[str, Any], JobContext], Awaitable[Any]]) -> Job:
        async def run(payload: dict[str, Any]) -> Any:
            return await job(payload, ctx)

        return run

    return {kind: bind(job) for kind, job in _JOBS.items()}
