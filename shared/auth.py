"""Bearer tokens and what each role may do (DESIGN.md "Auth", "Tokens", invariant 9).

A token is ``kid.payload.signature``, each part base64url without padding:
``kid`` names the key that signed it (``key_id``), ``payload`` is the JSON
``{"role", "sub", "iat", "exp", "jti"}`` and ``signature`` is
HMAC-SHA256(secret, ``kid.payload``). ``sub`` is the user id (device), the
clinic id (clinic) or null (operator); ``iat``/``exp`` are unix seconds
(``iat`` to the millisecond, so a token issued just after a revocation by
subject is told apart from one issued just before, in the same second);
``jti`` names the token for revocation. Tokens minted before key ids,
``payload.signature``, verify against the current secret only, so the first
rotation retires them.

Keys (``KeyRing``): ``BACKTRACK_SECRET`` signs; ``BACKTRACK_PREVIOUS_SECRETS``
only verify, so a secret can be rotated without logging everyone out.
Lifetimes (``Lifetimes``): each role has a default and a maximum; ``issue``
refuses a longer ``ttl`` and verification refuses a token whose ``exp - iat``
exceeds its role's maximum, however well signed. Device tokens minted before
key ids (a year by default) are held to ``LEGACY_TTL`` instead, so phones in
the field keep working until the rotation that retires them.
Revocation (``shared.revocations``) is checked by ``Verifier`` on every call,
remembered tokens included.

Why HMAC and one shared secret rather than public-key signatures: the clinic
API mints device tokens at enrolment, so it needs the signing key anyway, and
every service holds a Redis credential that can already append any event and
read every patient. A verify-only public key would not shrink what a
compromised pod can do until Redis access is split per service; until then
one secret keeps the contract as written and adds no dependency.

Pure and stdlib only: no clock unless ``now`` is omitted, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, get_args

Role = Literal["device", "clinic", "operator"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
DAY: Final = 24 * 3600
#: Lifetimes when none is asked for: a 12-week programme on a phone, a month for a
#: clinic integration, a working day for operators (admin work is short and powerful).
DEFAULT_TTL: Final[dict[Role, int]] = {"device": 90 * DAY, "clinic": 30 * DAY, "operator": 8 * 3600}
#: The longest lifetime ``issue`` grants and verification accepts, per role.
MAX_TTL: Final[dict[Role, int]] = {"device": 180 * DAY, "clinic": 90 * DAY, "operator": DAY}
#: Device tokens without a key id were minted with a year by default: they are
#: held to that until a rotation retires them (clinic and operator ones to MAX_TTL).
LEGACY_TTL: Final[dict[Role, int]] = {"device": 365 * DAY}
#: The input event types each role may write (DESIGN.md "Who may write what");
#: operators write every type.
WRITES: Final[dict[Role, frozenset[str]]] = {
    "device": frozenset({"RehabStarted", "PainLogged", "SessionCompleted", "OutcomeRecorded"}),
    "clinic": frozenset({"ClinicianReviewed", "OutcomeRecorded"}),
}
#: Tolerated clock difference between the issuer and the verifier.
CLOCK_SKEW: Final = 300
MAX_TOKEN_LENGTH: Final = 2048

ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_KID_LABEL = b"backtrack token key id\x00"


class InvalidToken(ValueError):  # noqa: N818 - the contract's name, used by callers
    """The token is missing, malformed, forged, signed with an unknown key, expired or revoked."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for: a role and its subject (user, clinic or None).

    ``jti`` is the token's own id (every verified token has one; None for a
    principal built by hand): what per-token limits count by. It is not part
    of who the token speaks for, so two tokens of one subject compare equal.
    """

    role: Role
    subject: str | None
    jti: str | None = field(default=None, compare=False)

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


@dataclass(frozen=True, slots=True)
class Claims:
    """A verified token: its principal and what revocation looks at (``iat``, ``jti``)."""

    principal: Principal
    iat: float
    exp: int
    jti: str


def key_id(secret: str) -> str:
    """The key id of ``secret``: 8 base64url characters of SHA-256 over a label and the secret."""
    return _b64encode(hashlib.sha256(_KID_LABEL + secret.encode()).digest())[:8]


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The signing secret and the previous ones that still verify, by key id.

    Raises ValueError for an empty secret or two secrets with one key id.
    """

    secret: str
    previous: tuple[str, ...] = ()
    by_kid: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        secrets_ = (self.secret, *self.previous)
        if not all(secrets_):
            raise ValueError("token secrets must not be empty")
        by_kid = {key_id(s): s for s in secrets_}
        if len(by_kid) != len(secrets_):
            raise ValueError("token secrets must differ from each other")
        object.__setattr__(self, "by_kid", by_kid)

    @property
    def kid(self) -> str:
        """The key id new tokens carry."""
        return key_id(self.secret)


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """Default and maximum lifetime (seconds) per role; ValueError unless 0 < default <= max."""

    default: Mapping[Role, int]
    maximum: Mapping[Role, int]

    def __post_init__(self) -> None:
        for role in ROLES:
            if not 0 < self.default[role] <= self.maximum[role]:
                raise ValueError(f"{role} token lifetime: need 0 < default <= maximum")

    def limit(self, role: Role, legacy: bool = False) -> int:
        """The longest ``exp - iat`` accepted for ``role`` (``legacy``: a token without kid)."""
        if legacy:
            return max(self.maximum[role], LEGACY_TTL.get(role, 0))
        return self.maximum[role]

    @property
    def longest(self) -> int:
        """The longest lifetime any accepted token can have: how long a revocation matters."""
        return max(self.limit(role, legacy=True) for role in ROLES)


LIFETIMES: Final = Lifetimes(DEFAULT_TTL, MAX_TTL)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise InvalidToken("token is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("token is not base64url") from None


def _sign(signed: str, secret: str) -> bytes:
    if not secret:
        raise ValueError("the signing secret must not be empty")
    return hmac.new(secret.encode(), signed.encode("ascii"), hashlib.sha256).digest()


def _span(seconds: int) -> str:
    return f"{seconds / DAY:g} days" if seconds >= 2 * DAY else f"{seconds / 3600:g} h"


def _check_subject(role: str, subject: object) -> None:
    if role == "operator":
        if subject is not None:
            raise ValueError("operator tokens have no subject")
    elif not isinstance(subject, str) or not ID.fullmatch(subject):
        raise ValueError(f"{role} tokens need a subject matching [A-Za-z0-9_-]{{1,64}}")


def issue(
    role: Role,
    subject: str | None,
    secret: str,
    ttl_seconds: int | None = None,
    now: float | None = None,
    *,
    lifetimes: Lifetimes = LIFETIMES,
) -> str:
    """A token for ``role`` and ``subject``, signed with ``secret``, valid ``ttl_seconds``.

    The lifetime defaults to the role's in ``lifetimes``. Raises ValueError for
    an unknown role, a subject that does not fit the role, a lifetime that is
    not positive or is longer than the role's maximum, or an empty secret.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    _check_subject(role, subject)
    ttl = lifetimes.default[role] if ttl_seconds is None else ttl_seconds
    if ttl <= 0:
        raise ValueError("ttl_seconds must be positive")
    if ttl > lifetimes.maximum[role]:
        most = lifetimes.maximum[role]
        raise ValueError(f"{role} tokens live at most {most} s ({_span(most)}); asked {ttl} s")
    iat = round(time.time() if now is None else now, 3)
    payload = {"role": role, "sub": subject, "iat": iat, "exp": int(iat) + ttl}
    payload["jti"] = secrets.token_urlsafe(9)
    kid = key_id(secret)
    signed = f"{kid}.{_b64encode(json.dumps(payload, separators=(',', ':')).encode())}"
    return f"{signed}.{_b64encode(_sign(signed, secret))}"


def verify(
    token: str | None,
    keys: KeyRing | str,
    now: float | None = None,
    lifetimes: Lifetimes = LIFETIMES,
) -> Principal:
    """The principal of a token signed with a key of ``keys``, in its lifetime at ``now``.

    The signature is checked (in constant time) before the payload is parsed.
    Revocations are not consulted: that is ``Verifier``'s job. Raises
    InvalidToken for anything else.
    """
    ring = KeyRing(keys) if isinstance(keys, str) else keys
    return verified(token, ring, time.time() if now is None else now, lifetimes).principal


def payload_of(token: str) -> dict[str, object]:
    """The payload of a token as it claims, plus its ``kid`` (None before key ids); unverified.

    For operators' tools only (``backtrack token inspect``). Raises InvalidToken.
    """
    parts = token.strip().split(".")
    if len(parts) not in (2, 3):
        raise InvalidToken("malformed token")
    try:
        payload = json.loads(_b64decode(parts[-2]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidToken("malformed token payload") from None
    if not isinstance(payload, dict):
        raise InvalidToken("malformed token payload")
    return {**payload, "kid": parts[0] if len(parts) == 3 else None}


def verified(token: str | None, keys: KeyRing, now: float, lifetimes: Lifetimes) -> Claims:
    """The claims of a valid token (as ``verify``, without revocations); InvalidToken otherwise."""
    if not token:
        raise InvalidToken("missing token")
    parts = token.split(".") if len(token) <= MAX_TOKEN_LENGTH else []
    if len(parts) not in (2, 3):
        raise InvalidToken("malformed token")
    if not all(_B64URL.fullmatch(part) for part in parts):
        raise InvalidToken("token is not base64url")
    *kid, body, signature = parts
    signed = token.rpartition(".")[0]
    secret = keys.by_kid.get(kid[0]) if kid else keys.secret
    if secret is None:
        raise InvalidToken("unknown key id")
    if not hmac.compare_digest(_b64decode(signature), _sign(signed, secret)):
        raise InvalidToken("bad signature")
    try:
        payload = json.loads(_b64decode(body))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidToken("malformed token payload") from None
    return _claims(payload, now, lifetimes, legacy=not kid)


def _claims(payload: object, now: float, lifetimes: Lifetimes, legacy: bool) -> Claims:
    if not isinstance(payload, dict):
        raise InvalidToken("malformed token payload")
    role, subject = payload.get("role"), payload.get("sub")
    iat, exp, jti = payload.get("iat"), payload.get("exp"), payload.get("jti")
    if role not in ROLES:
        raise InvalidToken("unknown role")
    try:
        _check_subject(role, subject)
    except ValueError as exc:
        raise InvalidToken(str(exc)) from None
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise InvalidToken("token expiry must be an integer")
    if not isinstance(iat, int | float) or isinstance(iat, bool) or not math.isfinite(iat):
        raise InvalidToken("token issue time must be a number")
    if not isinstance(jti, str) or not ID.fullmatch(jti):
        raise InvalidToken("token has no valid jti")
    if exp - iat > lifetimes.limit(role, legacy):
        raise InvalidToken(f"token lifetime exceeds the {role} maximum")
    if now >= exp:
        raise InvalidToken("token expired")
    if iat > now + CLOCK_SKEW:
        raise InvalidToken("token issued in the future")
    return Claims(Principal(role, subject, jti), iat, exp, jti)


class RevocationCheck(Protocol):
    """What ``Verifier`` asks about revocations (``shared.revocations.Revocations``)."""

    def check(self, claims: Claims) -> None:
        """Return if the token is not revoked; raise InvalidToken if it is, or another error."""


class Verifier:
    """``verify`` with a key ring, remembering up to ``size`` tokens it accepted.

    A remembered token still expires: it is served from memory only while
    ``now < exp``, and checked afresh (so refused) after. ``revocations``, if
    given, is asked on every call, remembered tokens included, so a revoked
    token is refused from the moment the view knows. Only accepted tokens are
    kept, so a rejected token costs a full check every time and cannot evict
    good ones. Least recently used tokens go first.
    """

    def __init__(
        self,
        keys: KeyRing | str,
        size: int = 1024,
        lifetimes: Lifetimes = LIFETIMES,
        revocations: RevocationCheck | None = None,
    ) -> None:
        self.keys = KeyRing(keys) if isinstance(keys, str) else keys
        self.size = size
        self.lifetimes = lifetimes
        self.revocations = revocations
        self._known: OrderedDict[str, Claims] = OrderedDict()

    def __call__(self, token: str, now: float | None = None) -> Principal:
        """The principal of ``token`` at ``now`` (default: the clock), as ``verify``."""
        at = time.time() if now is None else now
        known = self._known.get(token)
        if known is not None and at < known.exp:
            if self.revocations is not None:
                self.revocations.check(known)
            self._known.move_to_end(token)
            return known.principal
        claims = verified(token, self.keys, at, self.lifetimes)
        if self.revocations is not None:
            self.revocations.check(claims)
        self._known[token] = claims
        if len(self._known) > self.size:
            self._known.popitem(last=False)
        return claims.principal


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
    "LEGACY_TTL",
    "LIFETIMES",
    "MAX_TTL",
    "ROLES",
    "WRITES",
    "Claims",
    "InvalidToken",
    "KeyRing",
    "Lifetimes",
    "Principal",
    "RevocationCheck",
    "Role",
    "Verifier",
    "from_header",
    "issue",
    "key_id",
    "payload_of",
    "verified",
    "verify",
]
