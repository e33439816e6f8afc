"""Property-based fuzzing of every API operation with schemathesis, against the live app's own OpenAPI schema.

Each operation gets schemathesis's phases (schema examples, coverage of boundaries and wrong types, then random
positive and negative cases) and two checks: no 5xx, and every documented response matches its schema. Hooks also
offer real model names (random strings would only ever reach the 404 paths) and valid task payloads. Afterwards
the server's log must hold no ERROR (background failures show only there), and every documented request body must
be one schemathesis can generate (it silently skips a body whose schema it cannot resolve).

The server is this module's own, with small limits so each generation is cheap. Auth is off (development
defaults), so the admin routes are fuzzed too; the model load/unload routes run after all others, in their own
test, because unloading a model on purpose makes the next generation wait for it to load again.

Safety: this machine may only send traffic to loopback. Generated `webhook_url` values are rewritten to a loopback
receiver before each call, and an audit hook refuses (and records) any connection or name lookup the test process
— which also runs the server — makes to a non-loopback address while the server is up.
"""

from __future__ import annotations

import gc
import ipaddress
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from loguru import logger
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from sop_llm.providers.types import MAX_TOKENS_BOUND
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_TOKENS = 8  # also the server's cap (LLM_MAX_TOKENS_PER_REQUEST)
CHECKS = [not_a_server_error, response_schema_conformance]
REQUEST_TIMEOUT = 120.0  # seconds per call: a hang fails the case instead of the whole run
LOAD_UNLOAD = r"^/api/v1/models/\{name\}/(load|unload)$"


# --- the loopback-only guard -------------------------------------------------------------------------------------

_guard = {"active": False}
_blocked: list[str] = []


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is None or host == "localhost":
        return True
    if not isinstance(host, str):
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _network_guard(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook: refuse non-loopback connects, datagrams and name lookups while the fuzz server is up."""
    if not _guard["active"] or not event.startswith("socket."):
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1]
        if not isinstance(address, tuple) or _is_loopback(address[0]):
            return  # unix sockets, connected sockets (sendmsg without address), loopback
        target: object = address
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        if _is_loopback(args[0]):
            return
        target = args[0]
    else:
        return
    _blocked.append(f"{event} {target!r}")
    # An OSError, so the server's code sees what an unreachable network looks like.
    raise PermissionError(f"test_fuzz: non-loopback network access refused: {event} {target!r}")


sys.addaudithook(_network_guard)  # audit hooks cannot be removed; it does nothing unless the guard is active


# --- the server and its schema --------------------------------------------------------------------------------

# Built at import, started by the `fuzz_server` fixture: schemathesis makes one test per operation at collection
# time, so the schema comes from this very app (`app.openapi()`, what it serves at /openapi.json; the fixture checks
# that). schemathesis's fixture-based loader (`schemathesis.pytest.from_fixture`) cannot be used here: schemathesis
# 4.32.5 sets `Function._nodeid`, which pytest 9.2 no longer has (AttributeError).
_LIVE = LiveServer(
    make_settings(
        LLM_MAX_TOKENS_PER_REQUEST=MAX_TOKENS,
        LLM_MAX_PROMPT_CHARS=4000,
        LLM_REQUEST_TIMEOUT=60,  # 8 tokens take ~1 s, but up to ~15 s when other processes load both cores
        LLM_QUEUE_TIMEOUT=10,
        JSON_FIXER_MAX_TOKENS=16,
        JSON_FIXER_TOKEN_BUDGET=32,
        JSON_FIXER_TIMEOUT=3,
        TASKS_MAX_ATTEMPTS=1,
    )
)
schema = schemathesis.openapi.from_dict(_LIVE.app.openapi())
schema.config.update(base_url=_LIVE.url, request_timeout=REQUEST_TIMEOUT)


def _startup_model_names() -> list[str]:
    """Names and aliases of the models loaded at startup: random strings almost never name a model, so the hooks
    below offer these too, and generated requests reach the models instead of stopping at 404. (The transformers
    model is left out: it is not loaded at startup, and loading it costs ~15 s and ~700 MB.)"""
    services = _LIVE.app.state.services
    startup = set(services.local.default_names() + services.embeddings.default_names())
    described = services.router.describe() + services.embeddings.describe()
    return sorted(name for m in described if m["name"] in startup for name in (m["name"], *m["aliases"]))


MODEL_NAMES = _startup_model_names()
texts = st.text(max_size=40)
# Valid payloads per task kind: a generated `payload` is an arbitrary object and nearly always rejected, so tasks
# would never be created (nor their webhooks delivered) without these.
TASK_PAYLOADS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "generate": st.fixed_dictionaries({"prompt": texts, "max_tokens": st.integers(1, MAX_TOKENS)}),
    "embeddings": st.fixed_dictionaries({"texts": st.lists(texts, min_size=1, max_size=3)}),
    "similarity": st.fixed_dictionaries({"text1": texts, "text2": texts}),
    "json_fix": st.fixed_dictionaries({"text": st.sampled_from(["{'a': 1,}", '{"a": [1, 2', "a: 1", "{}"])}),
}


@schema.hook
def flatmap_body(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    """Each generated body as it is, or with a real model name, or (tasks) with a valid payload for its kind."""
    if not isinstance(body, dict):
        return st.just(body)
    options = [st.just(body)]
    if isinstance(body.get("model"), str):
        options.append(st.sampled_from(MODEL_NAMES).map(lambda name: {**body, "model": name}))
    if body.get("kind") in TASK_PAYLOADS and isinstance(body.get("payload"), dict):
        options.append(TASK_PAYLOADS[body["kind"]].map(lambda payload: {**body, "payload": payload}))
    return st.one_of(options)


@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext, parameters: Any) -> st.SearchStrategy[Any]:
    """A model named in the path (`/v1/models/{model_id}`, load and unload) is the generated string or a real one."""
    if not isinstance(parameters, dict):
        return st.just(parameters)
    options = [st.just(parameters)]
    for key in ("name", "model_id"):
        if isinstance(parameters.get(key), str):
            options.append(st.sampled_from(MODEL_NAMES).map(lambda name, key=key: {**parameters, key: name}))
    return st.one_of(options)


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


_server_errors: list[str] = []


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[LiveServer]:
    sink = logger.add(
        _server_errors.append, level="ERROR", format="{level} {name}:{function}:{line} {message}\n{exception}"
    )
    _guard["active"] = True
    _blocked.clear()
    try:
        _LIVE.start()
        served = httpx.get(f"{_LIVE.url}/openapi.json", timeout=30).json()
        assert served == schema.raw_schema, "the fuzzed schema must be the one the server serves"
        yield _LIVE
    finally:
        _LIVE.stop()
        _guard["active"] = False
        logger.remove(sink)
    assert not _blocked, f"the server tried to reach non-loopback addresses: {_blocked}"


# --- making each generated case safe and cheap -------------------------------------------------------------------


def _small(body: dict[str, Any], key: str) -> None:
    """Lower an in-range token limit to MAX_TOKENS; out-of-range values stay, so they are still rejected."""
    value = body.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and MAX_TOKENS < value <= MAX_TOKENS_BOUND:
        body[key] = MAX_TOKENS


def _make_safe(case: schemathesis.Case, webhook_url: str) -> None:
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("webhook_url"), str):
        body["webhook_url"] = webhook_url  # never a generated address: only the test's loopback receiver
    _small(body, "max_tokens")
    _small(body, "max_completion_tokens")
    if isinstance(body.get("payload"), dict):
        _small(body["payload"], "max_tokens")


def _call(case: schemathesis.Case, webhook_receiver: WebhookReceiver) -> None:
    _make_safe(case, webhook_receiver.url)
    case.call_and_validate(checks=CHECKS)
    assert not _blocked, f"the server tried to reach non-loopback addresses: {_blocked}"


FUZZ_SETTINGS = settings(
    max_examples=20,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the checkout
    derandomize=True,  # the same cases on every run: `make test` must not be flaky
    suppress_health_check=list(HealthCheck),
)


every_operation = schema.exclude(path_regex=LOAD_UNLOAD)
load_and_unload = schema.include(path_regex=LOAD_UNLOAD)


@every_operation.parametrize()
@FUZZ_SETTINGS
def test_every_operation(case: schemathesis.Case, fuzz_server: LiveServer, webhook_receiver: WebhookReceiver) -> None:
    _call(case, webhook_receiver)


# After every other operation (pytest keeps definition order): unloading a model here is allowed, and may leave the
# module's server with a model unloaded, which only this module's server ever sees.
@load_and_unload.parametrize()
@FUZZ_SETTINGS
def test_model_load_and_unload(
    case: schemathesis.Case, fuzz_server: LiveServer, webhook_receiver: WebhookReceiver
) -> None:
    _call(case, webhook_receiver)


def test_the_server_stayed_clean(fuzz_server: LiveServer) -> None:
    """After the fuzzing: no ERROR in the server's log (what goes wrong outside a response, e.g. in a background
    task, shows only there), and no attempt to reach a non-loopback address."""
    fuzz_server.stop()
    gc.collect()  # asyncio reports a task that was never awaited or cancelled when it is collected
    assert not _blocked, f"the server tried to reach non-loopback addresses: {_blocked}"
    assert not _server_errors, "the server logged errors:\n" + "\n".join(_server_errors)


# Needs no server; last, so that `-x` still runs the fuzzing above when it fails.
def test_every_documented_request_body_is_fuzzed() -> None:
    """schemathesis silently drops a request body whose schema it cannot resolve (e.g. a dangling `$ref`); the
    operation is then only called without a body, so such a schema is an error here."""
    missing = [
        operation.label
        for operation in (result.ok() for result in schema.get_all_operations())
        if "requestBody" in schema.raw_schema["paths"][operation.path][operation.method.lower()]
        and not list(operation.body)
    ]
    assert not missing, f"request bodies schemathesis cannot generate (broken schema): {missing}"
