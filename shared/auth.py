"""Bearer tokens and what each role may do (DESIGN.md "Auth", invariant 9).

A token is ``base64url(payload JSON) + "." + base64url(HMAC-SHA256(secret,
first part))``, unpadded. The payload is ``{"role", "sub", "iat", "exp",
"jti"}``: ``sub`` is the user id (device), the clinic id (clinic) or null
(operator); ``iat``/``exp`` are unix seconds. Every token expires; the default
lifetime is a year for devices (long-lived on a phone or wearable), 90 days for
clinic integrations and one day for operators (admin work is short and
powerful). Tokens are not revocable before ``exp``: rotating
``BACKTRACK_SECRET`` invalidates every token at once.

Pure and stdlib only: no clock unless ``now`` is omitted, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, Literal, get_args

Role = Literal["device", "clinic", "operator"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
DAY: Final = 24 * 3600
DEFAULT_TTL: Final[dict[Role, int]] = {"device": 365 * DAY, "clinic": 90 * DAY, "operator": DAY}
#: The input event types each role may write (DESIGN.md "Who may write what");
#: operators write every type.
WRITES: Final[dict[Role, frozenset[str]]] = {
    "device": frozenset({"RehabStarted", "PainLogged", "SessionCompleted", "OutcomeRecorded"}),
    "clinic": frozenset({"ClinicianReviewed", "OutcomeRecorded"}),
}
#: Tolerated clock difference between the issuer and the verifier.
CLOCK_SKEW: Final = 300
MAX_TOKEN_LENGTH: Final = 2048

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class InvalidToken(ValueError):  # noqa: N818 - the contract's name, used by callers
    """The token is missing, malformed, forged, signed with another secret or expired."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for: a role and its subject (user, clinic or None)."""

    role: Role
    subject: str | None

    def writes(self, event_type: str) -> bool:
        """Whether this role may write events of ``event_type`` at all (for some user)."""
        return self.role == "operator" or event_type in WRITES[self.role]

    def can_write(self, event_type: str, user_id: str, clinic_of_user: str | None) -> bool:
        """Devices write their own user, clinics their patients, each only its types (WRITES).

        Operators write any type for any user. ``clinic_of_user`` is read for
        clinic tokens only; others may pass None without looking it up.
        """
        if self.role == "operator":
            return True
        if event_type not in WRITES[self.role]:
            return False
        if self.role == "device":
            return self.subject == user_id
        return clinic_of_user is not None and clinic_of_user == self.subject

    def can_read(self, user_id: str, clinic_of_user: str | None) -> bool:
        """Devices read their own user; clinics users enrolled with them; operators everyone."""
        if self.role == "device":
            return self.subject == user_id
        if self.role == "clinic":
            return clinic_of_user is not None and clinic_of_user == self.subject
        return self.role == "operator"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise InvalidToken("token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("token is not base64url") from None


def _sign(body: str, secret: str) -> bytes:
    if not secret:
        raise ValueError("the signing secret must not be empty")
    return hmac.new(secret.encode(), body.encode("ascii"), hashlib.sha256).digest()


def _check_subject(role: str, subject: object) -> None:
    if role == "operator":
        if subject is not None:
            raise ValueError("operator tokens have no subject")
    elif not isinstance(subject, str) or not _ID.fullmatch(subject):
        raise ValueError(f"{role} tokens need a subject matching [A-Za-z0-9_-]{{1,64}}")


def issue(
    role: Role,
    subject: str | None,
    secret: str,
    ttl_seconds: int | None = None,
    now: float | None = None,
) -> str:
    """A signed token for ``role`` and ``subject`` valid ``ttl_seconds`` (role default).

    Raises ValueError for an unknown role, a subject that does not fit the
    role, a non-positive lifetime or an empty secret.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    _check_subject(role, subject)
    ttl = DEFAULT_TTL[role] if ttl_seconds is None else ttl_seconds
    if ttl <= 0:
        raise ValueError("ttl_seconds must be positive")
    iat = int(time.time() if now is None else now)
    payload = {"role": role, "sub": subject, "iat": iat, "exp": iat + ttl}
    payload["jti"] = secrets.token_urlsafe(9)
    body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
    return f"{body}.{_b64encode(_sign(body, secret))}"


def verify(token: str | None, secret: str, now: float | None = None) -> Principal:
    """The principal of a token signed with ``secret`` and not expired at ``now``.

    The signature is checked (in constant time) before the payload is parsed.
    Raises InvalidToken for anything else.
    """
    return _verified(token, secret, time.time() if now is None else now)[0]


def _verified(token: str | None, secret: str, now: float) -> tuple[Principal, int]:
    if not token:
        raise InvalidToken("missing token")
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidToken("malformed token")
    body, _, signature = token.partition(".")
    if not hmac.compare_digest(_b64decode(signature), _sign(body, secret)):
        raise InvalidToken("bad signature")
    try:
        payload = json.loads(_b64decode(body))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidToken("malformed token payload") from None
    return _principal(payload, now), payload["exp"]


class Verifier:
    """``verify`` with one secret, remembering up to ``size`` tokens it accepted.

    A remembered token still expires: it is served from memory only while
    ``now < exp``, and checked afresh (so refused) after. Only accepted
    tokens are kept, so a rejected token costs a full check every time and
    cannot evict good ones. Least recently used tokens go first.
    """

    def __init__(self, secret: str, size: int = 1024) -> None:
        self.secret = secret
        self.size = size
        self._known: OrderedDict[str, tuple[Principal, int]] = OrderedDict()

    def __call__(self, token: str, now: float | None = None) -> Principal:
        """The principal of ``token`` at ``now`` (default: the clock), as ``verify``."""
        at = time.time() if now is None else now
        known = self._known.get(token)
        if known is not None and at < known[1]:
            self._known.move_to_end(token)
            return known[0]
        principal, exp = _verified(token, self.secret, at)
        self._known[token] = (principal, exp)
        if len(self._known) > self.size:
            self._known.popitem(last=False)
        return principal


def _principal(payload: object, now: float) -> Principal:
    if not isinstance(payload, dict):
        raise InvalidToken("malformed token payload")
    role, subject = payload.get("role"), payload.get("sub")
    iat, exp = payload.get("iat"), payload.get("exp")
    if role not in ROLES:
        raise InvalidToken("unknown role")
    try:
        _check_subject(role, subject)
    except ValueError as exc:
        raise InvalidToken(str(exc)) from None
    if not isinstance(iat, int) or not isinstance(exp, int) or bool in (type(iat), type(exp)):
        raise InvalidToken("token times must be integers")
    if now >= exp:
        raise InvalidToken("token expired")
    if iat > now + CLOCK_SKEW:
        raise InvalidToken("token issued in the future")
    return Principal(role, subject)


def from_header(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; InvalidToken otherwise."""
    if not authorization:
        raise InvalidToken("missing token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("expected 'Authorization: Bearer <token>'")
    return token.strip()


__all__ = [
    "DEFAULT_TTL",
    "ROLES",
    "WRITES",
    "InvalidToken",
    "Principal",
    "Role",
    "Verifier",
    "from_header",
    "issue",
    "verify",
]
