"""Structured output: the 30 prompts of bench/json_prompts.py with response_format json_schema through
/v1/chat/completions, SmolLM2 as generator and fixer. Counts 200s with schema-valid JSON, 422s, and anything else
(which would be a bug: never invalid JSON with 200)."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import jsonschema

from bench.json_prompts import PROMPTS


def run(url: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        for prompt, schema in PROMPTS:
            body = {
                "model": "smollm2",
                "messages": [{"role": "user", "content": prompt}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
                "max_tokens": 200,
                "temperature": 0,
            }
            response = client.post("/v1/chat/completions", json=body)
            if response.status_code == 422:
                counts["422_json_fix_failed"] += 1
                continue
            reply = response.json()
            try:
                jsonschema.validate(json.loads(reply["choices"][0]["message"]["content"]), schema)
            except (KeyError, ValueError, jsonschema.ValidationError):
                counts["invalid_with_200"] += 1
                continue
            counts["200_valid"] += 1
            counts[f"provenance:{reply['sop_json']['provenance']}"] += 1
    return dict(counts)
