"""Auth: API keys (created by the CLI and the admin endpoint, stored hashed), JWT bearer tokens with pinned
algorithms, admin and user scopes, users seeing only their own tasks, and production refusing to run without auth.
Canary secrets used here must never show up in logs, error bodies or the database."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from loguru import logger

from sop_llm.app import create_app
from sop_llm.infra.model_config import ConfigError
from tests.live_server import LiveServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.api]

ISSUER, AUDIENCE = "https://id.example", "sop-llm"
PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_PEM = PRIVATE_KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
PUBLIC_PEM = PRIVATE_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
CANARY_KEY = "sop_CANARY0000000000000000000000000000000000000"  # never valid; must never be echoed


class Secured:
    def __init__(self) -> None:
        folder = Path(tempfile.mkdtemp(prefix="sop-llm-auth-"))
        self.database_file = folder / "auth.db"
        self.database = f"sqlite+aiosqlite:///{self.database_file}"
        self.live = LiveServer(
            make_settings(
                DATABASE_URL=self.database,
                AUTH_ENABLED=True,
                JWT_ALGORITHMS=["RS256"],
                JWT_PUBLIC_KEY=PUBLIC_PEM.decode(),
                JWT_ISSUER=ISSUER,
                JWT_AUDIENCE=AUDIENCE,
                API_KEY_CACHE_SECONDS=0,
            )
        ).start()
        self.url = self.live.url
        self.logs: list[str] = []
        self._sink = logger.add(lambda message: self.logs.append(str(message)), level="DEBUG")
        self.secrets: list[str] = [CANARY_KEY]
        created = subprocess.run(
            [sys.executable, "-m", "sop_llm", "keys", "create", "--name", "first admin", "--scope", "admin"],
            env={**os.environ, "DATABASE_URL": self.database, "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            check=True,
        )
        self.admin_key = self.remember(created.stdout.strip().splitlines()[-1])

    def remember(self, secret: str) -> str:
        self.secrets.append(secret)
        return secret

    def close(self) -> None:
        with contextlib.suppress(ValueError):  # create_app() elsewhere resets logging, sinks and all
            logger.remove(self._sink)
        self.live.stop()


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    server = Secured()
    yield server
    server.close()


def _get(secured: Secured, path: str, credential: str | None = None, **headers: str) -> httpx.Response:
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    return httpx.get(f"{secured.url}{path}", headers=headers)


def _user_key(secured: Secured, name: str) -> str:
    response = httpx.post(
        f"{secured.url}/api/v1/admin/keys",
        json={"name": name, "scope": "user"},
        headers={"Authorization": f"Bearer {secured.admin_key}"},
    )
    assert response.status_code == 201, response.text
    return secured.remember(response.json()["key"])


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, "scope": "user"}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, PRIVATE_PEM, algorithm="RS256")


def _alg_none(claims: dict[str, Any]) -> str:
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."


def _hs256_with_public_key(claims: dict[str, Any]) -> str:
    # The classic key-confusion attack: HMAC "signed" with the RSA public key, which the attacker knows.
    head = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(PUBLIC_PEM, head.encode(), hashlib.sha256).digest()
    return f"{head}.{_b64(signature)}"


def _tampered(claims: dict[str, Any]) -> str:
    head, _, signature = _signed(claims).split(".")
    return f"{head}.{_b64(json.dumps({**claims, 'scope': 'admin'}).encode())}.{signature}"


@pytest.mark.parametrize(
    "token",
    [
        _alg_none(_claims()),
        _hs256_with_public_key(_claims()),
        _signed(_claims(exp=int(time.time()) - 60)),
        _signed(_claims(nbf=int(time.time()) + 600)),
        _signed(_claims(aud="someone-else")),
        _signed(_claims(iss="https://evil.example")),
        _signed(_claims(exp=None)),
        _tampered(_claims()),
        "not-a-token",
    ],
    ids=[
        "alg-none",
        "hs256-with-rs-public-key",
        "expired",
        "nbf-future",
        "wrong-aud",
        "wrong-iss",
        "no-exp",
        "tampered-payload",
        "garbage",
    ],
)
def test_bad_jwts_are_401(secured: Secured, token: str) -> None:
    response = _get(secured, "/v1/models", token)
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert token not in response.text


def test_a_valid_jwt_passes_with_its_scope(secured: Secured) -> None:
    user = _signed(_claims())
    assert _get(secured, "/v1/models", user).status_code == 200
    assert _get(secured, "/api/v1/admin/keys", user).status_code == 403
    admin = _signed(_claims(sub="root", scope="admin other"))
    assert _get(secured, "/api/v1/admin/keys", admin).status_code == 200


def test_credentials_are_required_except_for_health(secured: Secured) -> None:
    assert _get(secured, "/api/v1/health").status_code == 200
    assert _get(secured, "/api/v1/health/ready").status_code == 200
    missing = _get(secured, "/v1/models")
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"  # OpenAI shape on /v1
    native = _get(secured, "/api/v1/models")
    assert native.json()["error"]["code"] == "unauthorized"
    unknown = _get(secured, "/api/v1/models", CANARY_KEY)
    assert unknown.status_code == 401
    assert CANARY_KEY not in unknown.text
    assert _get(secured, "/api/v1/models", **{"X-API-Key": secured.admin_key}).status_code == 200


def test_api_keys_work_with_the_openai_sdk_and_scopes_apply(secured: Secured) -> None:
    user = _user_key(secured, "sdk user")
    client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=user, max_retries=0)
    assert {m.id for m in client.models.list()} >= {"smollm2-135m"}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{secured.url}/v1", api_key=CANARY_KEY, max_retries=0).models.list()
    headers = {"Authorization": f"Bearer {user}"}
    assert httpx.post(f"{secured.url}/api/v1/admin/keys", json={"name": "x"}, headers=headers).status_code == 403
    assert httpx.post(f"{secured.url}/api/v1/models/smollm2-135m/unload", headers=headers).status_code == 403


def test_users_see_only_their_own_tasks(secured: Secured) -> None:
    alice, bob = _user_key(secured, "alice"), _user_key(secured, "bob")
    body = {"kind": "similarity", "payload": {"text1": "a", "text2": "b"}}
    task = httpx.post(f"{secured.url}/api/v1/tasks", json=body, headers={"Authorization": f"Bearer {alice}"}).json()
    assert _get(secured, f"/api/v1/tasks/{task['id']}", alice).status_code == 200
    assert _get(secured, f"/api/v1/tasks/{task['id']}", bob).status_code == 404
    bob_delete = httpx.delete(f"{secured.url}/api/v1/tasks/{task['id']}", headers={"Authorization": f"Bearer {bob}"})
    assert bob_delete.status_code == 404
    assert task["id"] not in {t["id"] for t in _get(secured, "/api/v1/tasks", bob).json()["tasks"]}
    assert task["id"] in {t["id"] for t in _get(secured, "/api/v1/tasks", alice).json()["tasks"]}
    assert task["id"] in {t["id"] for t in _get(secured, "/api/v1/tasks?limit=500", secured.admin_key).json()["tasks"]}


def test_revoked_keys_stop_working(secured: Secured) -> None:
    key = _user_key(secured, "short-lived")
    assert _get(secured, "/v1/models", key).status_code == 200
    listed = _get(secured, "/api/v1/admin/keys", secured.admin_key).json()["keys"]
    key_id = next(k["id"] for k in listed if k["name"] == "short-lived")
    revoked = httpx.delete(
        f"{secured.url}/api/v1/admin/keys/{key_id}", headers={"Authorization": f"Bearer {secured.admin_key}"}
    )
    assert revoked.json()["revoked_at"] is not None
    assert _get(secured, "/v1/models", key).status_code == 401


def test_no_plaintext_key_is_stored_or_logged(secured: Secured) -> None:
    _user_key(secured, "one more")
    _get(secured, "/v1/models", CANARY_KEY)
    stored = secured.database_file.read_bytes()
    for name in os.listdir(secured.database_file.parent):  # the WAL too, if any
        stored += (secured.database_file.parent / name).read_bytes()
    listed = _get(secured, "/api/v1/admin/keys", secured.admin_key).text
    metrics = _get(secured, "/metrics").text
    assert "sop_llm_http_requests_total" in metrics
    logs = "\n".join(secured.logs)
    assert len(secured.secrets) >= 4
    for secret in secured.secrets:
        assert secret.encode() not in stored
        assert secret not in listed
        assert secret not in metrics
        assert secret not in logs
    assert hashlib.sha256(secured.admin_key.encode()).hexdigest().encode() in stored  # what is stored instead


def test_production_refuses_to_start_without_auth() -> None:
    with pytest.raises(ConfigError, match="AUTH_ALLOW_DISABLED_IN_PRODUCTION"):
        create_app(make_settings(ENVIRONMENT="production", AUTH_ENABLED=False))
    create_app(make_settings(ENVIRONMENT="production", AUTH_ENABLED=False, AUTH_ALLOW_DISABLED_IN_PRODUCTION=True))
    assert make_settings(ENVIRONMENT="production").auth_on
    assert not make_settings(ENVIRONMENT="development").auth_on


def test_answers_are_cached_only_when_asked_and_only_for_the_same_caller(secured: Secured) -> None:
    alice, bob = _user_key(secured, "cache-alice"), _user_key(secured, "cache-bob")
    body = {
        "model": "smollm2-135m",
        "messages": [{"role": "user", "content": "Tell a story"}],
        "max_tokens": 16,
        "temperature": 1.5,
        "seed": None,
    }

    def ask(key: str, cache: bool = True) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", **({"X-SOP-Cache": "use"} if cache else {})}
        return httpx.post(f"{secured.url}/v1/chat/completions", json=body, headers=headers, timeout=60)

    first = ask(alice)
    assert first.headers["X-SOP-Cache"] == "miss"
    again = ask(alice)
    assert again.headers["X-SOP-Cache"] == "hit"
    assert again.json() == first.json()  # the stored answer, id and all
    assert ask(bob).headers["X-SOP-Cache"] == "miss"  # never shared between callers
    assert "X-SOP-Cache" not in ask(alice, cache=False).headers  # not asked: not looked up, not stored
    native = {"prompt": "Once", "max_tokens": 4}
    headers = {"Authorization": f"Bearer {alice}", "X-SOP-Cache": "use"}
    answers = [httpx.post(f"{secured.url}/api/v1/models/generate", json=native, headers=headers) for _ in range(2)]
    assert [a.headers["X-SOP-Cache"] for a in answers] == ["miss", "hit"]
