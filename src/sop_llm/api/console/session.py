"""`/console/session`: sign in (trade an API key or JWT for a session cookie), who is signed in (with the session's
CSRF token, which the console's scripts send back on every change), and sign out. With auth off the console is open
as the anonymous admin, and these answer as much."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from sop_llm.api.console.cookie import SESSION_COOKIE, check_change, foreign_origin, request_scheme, session_token
from sop_llm.api.deps import ServicesDep
from sop_llm.api.responses import json_response
from sop_llm.infra.errors import AuthenticationError, ForbiddenError
from sop_llm.services.auth.principal import ANONYMOUS
from sop_llm.services.auth.sessions import Session, token_expiry

router = APIRouter(include_in_schema=False)  # docs/console.md describes it
NO_STORE = {"Cache-Control": "no-store"}  # the answers carry the CSRF token


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential: str = Field(min_length=1, max_length=8192, description="an API key (`sop_…`) or a JWT")


def _view(session: Session, auth: bool) -> dict[str, Any]:
    principal = session.principal
    return {"subject": principal.subject, "scope": principal.scope, "csrf_token": session.csrf_token, "auth": auth}


def _over_https(request: Request) -> bool:
    return request_scheme(request.headers, request.url.scheme) == "https"


@router.post("/console/session")
async def sign_in(body: SignIn, request: Request, services: ServicesDep) -> Response:
    if foreign_origin(request.headers):
        raise ForbiddenError("refused: sign-in from a page of another origin (Origin header)")
    credential = body.credential.strip()
    try:
        principal = await services.auth.authenticate(credential)
    except AuthenticationError as exc:
        raise AuthenticationError(f"sign-in refused: {exc.message}") from exc
    sessions = services.console_sessions
    if (earlier := session_token(request.headers)) is not None:
        await sessions.close(earlier)  # signing in again replaces the session, never adds one
    seconds = sessions.lifetime(token_expiry(credential))
    token, session = await sessions.open(principal, seconds)
    response = json_response(_view(session, services.auth.enabled), headers=NO_STORE)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=seconds,
        path="/",
        secure=_over_https(request),
        httponly=True,
        samesite="strict",
    )
    return response


@router.get("/console/session")
async def current_session(request: Request, services: ServicesDep) -> Response:
    if not services.auth.enabled:
        return json_response(_view(Session(ANONYMOUS, ""), auth=False), headers=NO_STORE)
    token = session_token(request.headers)
    session = await services.console_sessions.find(token) if token else None
    if session is None:
        raise AuthenticationError("not signed in: POST /console/session with an API key or JWT")
    return json_response(_view(session, auth=True), headers=NO_STORE)


@router.delete("/console/session")
async def sign_out(request: Request, services: ServicesDep) -> Response:
    """Ends the session on the server and clears the cookie; without a session, only the latter."""
    token = session_token(request.headers)
    session = await services.console_sessions.find(token) if token else None
    if token is not None and session is not None:
        check_change(session, request.method, request.headers)
        await services.console_sessions.close(token)
    response = json_response({"signed_out": True}, headers=NO_STORE)
    response.delete_cookie(SESSION_COOKIE, path="/", secure=_over_https(request), httponly=True, samesite="strict")
    return response
