"""Who is calling: a subject (`key:<id>`, `jwt:<sub>`, or anonymous with auth off) and a scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["admin", "user"]
SCOPES: tuple[Scope, ...] = ("admin", "user")


@dataclass(frozen=True)
class Principal:
    subject: str | None  # None: auth is off (everyone is the same anonymous admin)
    scope: Scope

    @property
    def admin(self) -> bool:
        return self.scope == "admin"

    @property
    def rate_key(self) -> str | None:
        return self.subject


ANONYMOUS = Principal(subject=None, scope="admin")
