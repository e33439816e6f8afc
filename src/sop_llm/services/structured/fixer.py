"""JSONFixer: the whole structured-output pipeline for one text.

Local steps first (steps.py); when they cannot produce a schema-valid value and `JSON_FIXER_ENABLED`, the
`JSON_FIXER_MODEL` gets the broken text plus the validator's errors, and its answer goes through the same local
steps — up to `JSON_FIXER_MAX_ATTEMPTS` times, within one budget per request: `JSON_FIXER_TOKEN_BUDGET` tokens
written by the fixer in all, `JSON_FIXER_TIMEOUT` seconds in all. A schema whose smallest instance cannot fit in
`JSON_FIXER_MAX_TOKENS` is not sent to the fixer at all. Every attempt is recorded; failure is a
JSONFixFailedError (422) carrying them all. The fixer is called through ModelRouter, so a transport error there is
retried or fails over like any call, and is raised as itself: it is never fed into a re-ask.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sop_llm.infra.errors import ContextLengthExceededError, JSONFixFailedError, PromptTooLongError
from sop_llm.infra.settings import Settings
from sop_llm.providers.types import ChatMessage, Constraint, GenerationRequest, JsonMode
from sop_llm.services.routing.router import ModelRouter
from sop_llm.services.structured.budget import check_schema_size, min_tokens
from sop_llm.services.structured.steps import run_local, validator_for

_SHOWN_CHARS = 2000
FIXER_SYSTEM = "You repair broken JSON. Answer with only the corrected JSON: no prose, no code fences."


@dataclass
class Attempt:
    stage: str  # "generation", "input" or "fixer"
    model: str | None
    output: str
    errors: list[str]

    def describe(self) -> dict[str, Any]:
        return {"stage": self.stage, "model": self.model, "output": self.output[:_SHOWN_CHARS], "errors": self.errors}


@dataclass
class JSONOutcome:
    value: Any
    provenance: str  # "parsed", "repaired_locally" or "fixed_by:<model>"
    constraint: Constraint
    history: list[Attempt] = field(default_factory=list)

    @property
    def text(self) -> str:
        return json.dumps(self.value, ensure_ascii=False)

    @property
    def attempts(self) -> int:
        return len(self.history)

    def describe(self) -> dict[str, Any]:
        return {"provenance": self.provenance, "attempts": self.attempts, "constraint": self.constraint}


class JSONFixer:
    def __init__(self, settings: Settings, router: ModelRouter) -> None:
        self._settings = settings
        self._router = router
        self.outcomes: Counter[str] = Counter()

    def check_schema(self, schema: dict[str, Any] | None, param: str = "schema") -> None:
        """A schema is refused (400) when it is invalid, too large or nested too deep."""
        if schema is not None:
            check_schema_size(schema, param)
            validator_for(schema)

    async def resolve(
        self,
        text: str,
        schema: dict[str, Any] | None,
        *,
        constraint: Constraint = "none",
        source: str = "input",
        source_model: str | None = None,
        fixer_model: str | None = None,
    ) -> JSONOutcome:
        local = run_local(text, schema)
        history = [Attempt(source, source_model, text, local.errors)]
        if local.ok:
            assert local.provenance is not None
            return self._done(JSONOutcome(local.value, local.provenance, constraint, history))
        if not self._settings.json_fixer_enabled:
            self._fail(history, "and the JSON fixer is off (JSON_FIXER_ENABLED=false)")
        settings = self._settings
        needed = min_tokens(schema) if schema is not None else 1
        if needed > settings.json_fixer_max_tokens:
            self._fail(
                history,
                f"and the smallest JSON the schema allows needs at least {needed} tokens, more than the fixer may "
                f"write (JSON_FIXER_MAX_TOKENS={settings.json_fixer_max_tokens})",
            )
        fixer = fixer_model or settings.json_fixer_model
        broken, errors = text, local.errors
        tokens_left = settings.json_fixer_token_budget
        deadline = time.monotonic() + settings.json_fixer_timeout
        why = f"and {settings.json_fixer_max_attempts} fixer attempt(s) did not mend it"
        for _ in range(settings.json_fixer_max_attempts):
            if tokens_left < needed:
                budget = settings.json_fixer_token_budget
                why = f"and the fixer's token budget is spent (JSON_FIXER_TOKEN_BUDGET={budget})"
                break
            request = self._fix_request(broken, errors, schema, min(settings.json_fixer_max_tokens, tokens_left))
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    model, completion = await self._router.generate_with_fallback(fixer, request)
            except TimeoutError:
                history.append(Attempt("fixer", fixer, "", ["stopped: the fixer's time budget ran out"]))
                why = f"and the fixer's time budget ran out (JSON_FIXER_TIMEOUT={settings.json_fixer_timeout:g} s)"
                break
            except (PromptTooLongError, ContextLengthExceededError) as exc:
                # The fixer cannot take this text: a failed attempt, not the caller's mistake. (Transport errors
                # are raised as themselves above: they are never fed into a re-ask.)
                history.append(Attempt("fixer", fixer, "", [exc.message]))
                break
            tokens_left -= completion.usage.completion_tokens
            local = run_local(completion.text, schema)
            history.append(Attempt("fixer", model, completion.text, local.errors))
            if local.ok:
                return self._done(JSONOutcome(local.value, f"fixed_by:{model}", constraint, history))
            broken, errors = completion.text, local.errors
        self._fail(history, why)
        raise AssertionError("unreachable")

    def _done(self, outcome: JSONOutcome) -> JSONOutcome:
        self.outcomes["fixed_by_model" if outcome.provenance.startswith("fixed_by:") else outcome.provenance] += 1
        return outcome

    def _fail(self, history: list[Attempt], why: str) -> None:
        self.outcomes["failed"] += 1
        last = history[-1].errors
        raise JSONFixFailedError(
            f"no schema-valid JSON could be obtained ({'; '.join(last[:3])}), {why}",
            details={"attempts": [a.describe() for a in history]},
        )

    def _fix_request(
        self, broken: str, errors: list[str], schema: dict[str, Any] | None, max_tokens: int
    ) -> GenerationRequest:
        wanted = f"JSON matching this JSON Schema:\n{json.dumps(schema)}" if schema else "a JSON object"
        problems = "\n".join(f"- {e}" for e in errors[:10])
        prompt = f"This text should be {wanted}\n\nText:\n{broken[: _SHOWN_CHARS * 2]}\n\nProblems:\n{problems}"
        return GenerationRequest(
            messages=[ChatMessage("system", FIXER_SYSTEM), ChatMessage("user", prompt)],
            max_tokens=max_tokens,
            temperature=0.0,
            json_mode=JsonMode(schema),
        )
