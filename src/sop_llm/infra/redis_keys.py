"""Every Redis key the service writes, built here under one namespace (`sop-llm:`), so a shared Redis can be read,
cleaned up or given an ACL by prefix: `sop-llm:*` is everything of ours.

| Key | What |
|---|---|
| `sop-llm:emb:<digest>` | one cached embedding (model and text hashed) |
| `sop-llm:answer:<digest>` | one cached generation answer (caller, route and body hashed) |
| `sop-llm:circuit:<deployment>` | when an opened circuit closes again, shared by replicas |
| `sop-llm:rate:…` | rate-limit counters (the `limits` package appends its own parts) |
| `sop-llm:node:<deployment>:…` | a deployment's requests in flight, of the last minute, tokens of this minute |
| `sop-llm:budget:<caller>:<model>:<day or month>` | tokens used against a budget in that period |
| `sop-llm:ticket:<digest>` | a single-use WebSocket ticket (30 s) |
| `sop-llm:console:<digest>` | a console session (CONSOLE_SESSION_HOURS), under a hash of its cookie |
| `sop-llm:tasks` | the task stream (`TASKS_STREAM`), consumer group `sop-llm-workers` |
"""

from __future__ import annotations

import hashlib

NAMESPACE = "sop-llm"
CIRCUIT_PREFIX = f"{NAMESPACE}:circuit:"
RATE_LIMIT_PREFIX = f"{NAMESPACE}:rate"
TASKS_STREAM = f"{NAMESPACE}:tasks"
TASKS_CONSUMER_GROUP = f"{NAMESPACE}-workers"


def _digest(*parts: str) -> str:
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def embedding_key(model: str, text: str) -> str:
    return f"{NAMESPACE}:emb:{_digest(model, text)}"


def answer_key(caller: str, path: str, body: str) -> str:
    return f"{NAMESPACE}:answer:{_digest(caller, path, body)}"


def circuit_key(deployment: str) -> str:
    return CIRCUIT_PREFIX + deployment


def node_key(deployment: str) -> str:
    """The prefix of one deployment's limit counters."""
    return f"{NAMESPACE}:node:{deployment}"


def budget_key(subject: str, model: str, period_label: str) -> str:
    return f"{NAMESPACE}:budget:{subject}:{model}:{period_label}"


def ticket_key(ticket: str) -> str:
    return f"{NAMESPACE}:ticket:{_digest(ticket)}"


def console_session_key(token: str) -> str:
    return f"{NAMESPACE}:console:{_digest(token)}"
