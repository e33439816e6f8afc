"""Turn a request's credential into a Principal: an API key (`Authorization: Bearer sop_…` — what the OpenAI SDKs
send — or `X-API-Key`) or a JWT bearer token. With auth off every caller is the same anonymous admin."""

from __future__ import annotations

from sop_llm.infra.errors import AuthenticationError
from sop_llm.infra.settings import Settings
from sop_llm.services.auth.keys import KEY_PREFIX, KeyStore
from sop_llm.services.auth.principal import ANONYMOUS, Principal
from sop_llm.services.auth.tickets import Tickets
from sop_llm.services.auth.tokens import TokenVerifier


class Authenticator:
    def __init__(self, settings: Settings, keys: KeyStore, tickets: Tickets) -> None:
        self.enabled = settings.auth_on
        self.keys = keys
        self.tickets = tickets
        self._tokens = TokenVerifier(settings)

    async def authenticate(self, credential: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS
        if not credential:
            raise AuthenticationError(
                "authentication required: send 'Authorization: Bearer <API key or JWT>' or 'X-API-Key: <API key>'"
            )
        if credential.startswith(KEY_PREFIX):
            principal = await self.keys.verify(credential)
            if principal is None:
                raise AuthenticationError("unknown or revoked API key")
            return principal
        if not self._tokens.configured:
            raise AuthenticationError(
                "not an API key, and JWT bearer tokens are not configured (JWT_SECRET / JWT_PUBLIC_KEY)"
            )
        return self._tokens.verify(credential)
