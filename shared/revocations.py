"""Revoked tokens as one process sees them: revoked jtis and a cutoff per subject.

A ``Revocation`` names one token (``kind`` ``jti``) or every token of a
subject issued up to a moment (``kind`` ``subject``: a user's device tokens
and a clinic's tokens, or only those of ``role``). Revocations are records
in the Redis stream ``bt:revocations``; ``shared.revocation_log`` writes them
and keeps each process's ``Revocations`` up to date. A record matters
``until`` every token it can match has expired, then it is dropped.

``Revocations.check`` is what every request pays: two dict lookups and a
monotonic clock read. It fails closed: while the view may be missing a
revocation, because the watcher has not caught up with the stream for
``stale_after`` seconds (Redis unreachable), every token is refused with
``RevocationsStale`` (the APIs answer 503 with ``Retry-After``). Each service
needs Redis for all its work anyway, so this refuses little that would
otherwise have worked, and a revoked token is never served for longer than
``stale_after`` after the revocation was written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal, get_args

from shared.auth import ID, Claims, InvalidToken

Kind = Literal["jti", "subject"]
RevokedRole = Literal["device", "clinic"]
REVOKED_ROLES: Final[tuple[RevokedRole, ...]] = get_args(RevokedRole)


class RevocationsStale(Exception):  # noqa: N818 - a state, not a failure of the caller
    """The view has not caught up with the revocations for too long: no token can be trusted."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """One record of ``bt:revocations``; ValueError if its fields do not fit together.

        ``at`` is when it was written (unix seconds); for a subject, tokens with
        ``iat <= at`` are revoked (``iat`` has milliseconds; tokens minted
    before that had whole seconds). ``until`` (unix seconds) is when every
        token it can match has expired.
    """

    kind: Kind
    value: str
    role: RevokedRole | None
    at: float
    until: int

    def __post_init__(self) -> None:
        if self.kind not in get_args(Kind):
            raise ValueError(f"unknown revocation kind {self.kind!r}")
        if not ID.fullmatch(self.value):
            raise ValueError("a revoked jti or subject matches [A-Za-z0-9_-]{1,64}")
        if self.role is not None and (self.kind != "subject" or self.role not in REVOKED_ROLES):
            raise ValueError("a role narrows a subject revocation to device or clinic tokens")

    @property
    def cutoff(self) -> float:
        """Tokens of the subject issued at or before this time are revoked."""
        return self.at

    def fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "kind": self.kind,
            "value": self.value,
            "role": self.role or "",
            "at": repr(self.at),
            "until": str(self.until),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> Revocation:
        """The record of a stream entry; ValueError if it is not one."""
        got = {_text(k): _text(v) for k, v in fields.items()}
        try:
            kind, value, role = got["kind"], got["value"], got.get("role") or None
            at, until = float(got["at"]), int(got["until"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"not a revocation record: {exc}") from None
        return cls(kind, value, role, at, until)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for operators: what is revoked, and up to when it matters."""
        until = _utc(self.until)
        if self.kind == "jti":
            return f"revoked token jti {self.value} (kept until {until})"
        which = f"{self.role} tokens" if self.role else "device and clinic tokens"
        return f"revoked {which} of {self.value} issued at or before {_utc(self.cutoff)}"


class Revocations:
    """The revocations in force, fed by the watcher, asked on every request (``check``)."""

    def __init__(self, stale_after: float) -> None:
        self.stale_after = stale_after
        self._jtis: dict[str, int] = {}
        #: (role, subject) -> (cutoff second, until)
        self._cutoffs: dict[tuple[str, str], tuple[float, int]] = {}
        self._synced: float | None = None

    def apply(self, revocation: Revocation, now: float) -> None:
        """Take ``revocation`` into account, unless it no longer matters at ``now``."""
        if revocation.until <= now:
            return
        if revocation.kind == "jti":
            known = self._jtis.get(revocation.value, 0)
            self._jtis[revocation.value] = max(revocation.until, known)
            return
        for role in (revocation.role,) if revocation.role else REVOKED_ROLES:
            key = (role, revocation.value)
            cutoff, until = self._cutoffs.get(key, (revocation.cutoff, revocation.until))
            self._cutoffs[key] = max(cutoff, revocation.cutoff), max(until, revocation.until)

    def prune(self, now: float) -> None:
        """Forget revocations whose tokens have all expired by ``now``."""
        self._jtis = {jti: until for jti, until in self._jtis.items() if until > now}
        self._cutoffs = {key: c for key, c in self._cutoffs.items() if c[1] > now}

    def synced(self, since: float) -> None:
        """The view holds every revocation written before ``since`` (``time.monotonic()``)."""
        self._synced = since if self._synced is None else max(self._synced, since)

    @property
    def stale(self) -> bool:
        """Whether a revocation written ``stale_after`` seconds ago or more may be missing."""
        return self._synced is None or time.monotonic() - self._synced > self.stale_after

    def check(self, claims: Claims) -> None:
        """Return if the token is not revoked; InvalidToken if it is; RevocationsStale if unsure."""
        if self._synced is None or time.monotonic() - self._synced > self.stale_after:
            raise RevocationsStale("token revocations are not up to date")
        if claims.jti in self._jtis:
            raise InvalidToken("token revoked")
        principal = claims.principal
        if principal.subject is not None:
            cutoff = self._cutoffs.get((principal.role, principal.subject))
            if cutoff is not None and claims.iat <= cutoff[0]:
                raise InvalidToken("token revoked")

    def cutoff(self, role: RevokedRole, subject: str) -> float | None:
        """The cutoff time in force for a subject's tokens of ``role``, if any."""
        found = self._cutoffs.get((role, subject))
        return None if found is None else found[0]

    def revoked_jtis(self) -> frozenset[str]:
        """The jtis revoked and still in force."""
        return frozenset(self._jtis)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["REVOKED_ROLES", "Revocation", "Revocations", "RevocationsStale", "RevokedRole"]
