"""JWT bearer tokens (PyJWT): algorithms pinned by JWT_ALGORITHMS, `exp` required, `iss` / `aud` checked when set.
HMAC algorithms verify with JWT_SECRET, the others with JWT_PUBLIC_KEY, so a token signed with HS256 using the
public key as the secret never passes. The scope comes from the `scope` claim (space-separated or a list):
`admin` if it names admin, else `user`."""

from __future__ import annotations

from typing import Any

from sop_llm.infra.errors import AuthenticationError
from sop_llm.infra.settings import Settings
from sop_llm.services.auth.principal import Principal


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._algorithms = settings.jwt_algorithms
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._public_key = settings.jwt_public_key.get_secret_value() if settings.jwt_public_key else None
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience

    @property
    def configured(self) -> bool:
        return bool(self._secret or self._public_key)

    def verify(self, token: str) -> Principal:
        import jwt  # with cryptography, a third of a second of startup for a deployment that may take no JWTs

        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise AuthenticationError("the bearer token is neither an API key nor a JWT") from None
        if algorithm not in self._algorithms:
            raise AuthenticationError(f"JWT algorithm '{algorithm}' is not accepted (JWT_ALGORITHMS)")
        key = self._secret if str(algorithm).startswith("HS") else self._public_key
        if not key:
            raise AuthenticationError(f"no key is configured to verify {algorithm} tokens")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.InvalidTokenError as exc:
            raise AuthenticationError(f"invalid JWT: {exc}") from None
        scopes = claims.get("scope", "")
        names = scopes.split() if isinstance(scopes, str) else [str(s) for s in scopes]
        return Principal(subject=f"jwt:{claims['sub']}", scope="admin" if "admin" in names else "user")
