"""Bearer tokens over HTTP: the one auth dependency of every API (ingest, clinic, channels).

``Authorization: Bearer <token>`` becomes the ``auth.Principal`` it speaks
for, or a 401 whose ``WWW-Authenticate`` challenge says ``Bearer`` when no
token came and ``Bearer error="invalid_token"`` when a bad one did (RFC 6750).
Tokens are checked with the app's ``state.settings.secret`` by one
``auth.Verifier`` per secret, so a token already accepted costs a lookup.
Read scopes (invariant 9) are checked here too, on every request.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase

from shared import auth
from shared.store import EventStore


@lru_cache(maxsize=8)
def verifier(secret: str) -> auth.Verifier:
    """The process's one ``auth.Verifier`` for ``secret`` (shared by every app using it)."""
    return auth.Verifier(secret)


def authenticate(check: auth.Verifier, authorization: str | None) -> auth.Principal:
    """The principal of an ``Authorization`` header value, or HTTPException 401."""
    try:
        return check(auth.from_header(authorization))
    except auth.InvalidToken as exc:
        challenge = "Bearer" if "missing" in str(exc) else 'Bearer error="invalid_token"'
        raise HTTPException(401, f"unauthorised: {exc}", {"WWW-Authenticate": challenge}) from None


class BearerAuth(SecurityBase):
    """The dependency: documented as OpenAPI's HTTP bearer scheme, answering the Principal."""

    def __init__(self, description: str) -> None:
        self.model = HTTPBearerModel(description=description)
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> auth.Principal:
        # async: a sync dependency would cost a thread-pool hop per request
        check = verifier(request.app.state.settings.secret)
        return authenticate(check, request.headers.get("authorization"))


bearer = BearerAuth("A device, clinic or operator token (backtrack token).")
PrincipalDep = Annotated[auth.Principal, Security(bearer)]


async def authorize_read(user_id: str, principal: auth.Principal, store: EventStore) -> None:
    """Return if ``principal`` may read ``user_id`` now (``Principal.can_read``); 403 otherwise.

    The user's clinic is read (from ``store``) for clinic tokens only. A user
    outside the scope is 403 whether or not they exist, so tokens cannot
    probe for other clinics' patients.
    """
    clinic = await store.clinic_of(user_id) if principal.role == "clinic" else None
    if not principal.can_read(user_id, clinic):
        raise HTTPException(403, "this token may not read that user")


__all__ = ["BearerAuth", "PrincipalDep", "authenticate", "authorize_read", "bearer", "verifier"]
