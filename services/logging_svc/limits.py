"""Ingest policy on when an event may say it happened (not a model rule).

A client clock may run a little fast, and phones upload logs kept offline, so
the window allows some minutes ahead and some weeks back; but an event dated
tomorrow, or in 1970, is a bug or an attack, and far-off dates also break date
arithmetic downstream. How far back depends on who writes: an event dated
before a user's latest ones makes the prescriber fold that user's history
again from that point, so devices, which log as things happen and sync
within days, may backdate 30 days (``device_max_age_days``); clinics and
operators, who import records (outcome measures, histories from another
system), 5 years (``max_age_days``). Replays of old logs never pass through
here: the event models accept any aware time, so history always decodes.
Pure: ``now`` comes in as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.logging_svc.ingest import Loc, Rejected
from shared.auth import Role
from shared.events import Input


class IngestLimits(BaseSettings):
    """``BACKTRACK_INGEST_MAX_FUTURE_SECONDS`` (300), ``..._DEVICE_MAX_AGE_DAYS`` (30)
    and ``..._MAX_AGE_DAYS`` (5 years: clinics and operators)."""

    model_config = SettingsConfigDict(env_prefix="BACKTRACK_INGEST_", frozen=True)

    max_future_seconds: int = Field(default=300, ge=0, le=24 * 3600)
    device_max_age_days: int = Field(default=30, ge=1, le=100 * 365)
    max_age_days: int = Field(default=5 * 365, ge=1, le=100 * 365)

    def max_age(self, role: Role) -> int:
        """Days back an event written by ``role`` may be dated."""
        return self.device_max_age_days if role == "device" else self.max_age_days


def check_time(
    event: Input,
    now: datetime,
    limits: IngestLimits,
    prefix: Loc = ("body",),
    role: Role = "operator",
) -> None:
    """Raise Rejected unless ``occurred_at`` lies in ``role``'s window around ``now`` (aware)."""
    Window.around(now, limits, role).check(event, prefix)


@dataclass(frozen=True, slots=True)
class Window:
    """The bounds of ``check_time`` for one ``now`` and role, computed once for a whole batch."""

    now: datetime
    limits: IngestLimits
    latest: datetime
    earliest: datetime
    max_age_days: int

    @classmethod
    def around(cls, now: datetime, limits: IngestLimits, role: Role = "operator") -> Window:
        ahead = timedelta(seconds=limits.max_future_seconds)
        days = limits.max_age(role)
        return cls(now, limits, now + ahead, now - timedelta(days=days), days)

    def check(self, event: Input, prefix: Loc = ("body",)) -> None:
        """Raise Rejected unless ``event.occurred_at`` lies within this window."""
        if event.occurred_at > self.latest:
            msg = (
                f"occurred_at is more than {self.limits.max_future_seconds} seconds in the future"
                f" (server time {self.now.isoformat(timespec='seconds')})"
            )
            raise Rejected([_error((*prefix, "occurred_at"), msg, "too_far_in_future")])
        if event.occurred_at < self.earliest:
            msg = f"occurred_at is more than {self.max_age_days} days in the past"
            raise Rejected([_error((*prefix, "occurred_at"), msg, "too_old")])


def _error(loc: Loc, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind}


__all__ = ["IngestLimits", "Window", "check_time"]
