"""As-of: a user's state and prescription at a past time.

Two readings of "as of T", both useful, chosen with ``known``:

- default, **occurred by T**: every event whose ``occurred_at`` <= T, however
  late it arrived, replayed in event-time order. What we now know the
  patient's course was at T (late wearable syncs included).
- ``known=True``, **arrived by T**: every event stored by T (its history
  stream id's time <= T), folded exactly as live processing did
  (``fold_history``). What the system knew and prescribed at T; its last
  change is what clinics had been told.

Read-only (``ReadOnly``); the prescription is decided at the last event
folded, since the engine never reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from services.prescriber import engine
from services.prescriber.arrivals import fold_history
from services.replay import scan
from services.replay.readonly import ReadOnly
from shared.data_keys import DataKeys
from shared.events import PrescriptionChanged
from shared.keys import Keys
from shared.streams import position_key


@dataclass(frozen=True, slots=True)
class AsOf:
    """A user's folded state and the prescription as of ``at``."""

    user_id: str
    at: datetime
    events: int
    state: engine.State
    prescription: engine.Prescription | None
    announced: PrescriptionChanged | None


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def as_of(
    redis: Redis,
    keys: Keys,
    user_id: str,
    at: datetime,
    *,
    known: bool = False,
    data_keys: DataKeys | None = None,
) -> AsOf:
    """The user's state and prescription as of ``at`` (see the module doc for ``known``)."""
    reader: Any = ReadOnly(redis)
    [log] = await scan.histories(reader, keys, [user_id], data_keys=data_keys)
    [changes] = await scan.prescriptions(reader, keys, [user_id], data_keys)
    if known:
        entries = [e for p, e in log.entries if position_key(p)[0] <= _ms(at)]
        state = fold_history(user_id, entries).state
        told = [c for p, c in changes if position_key(p)[0] <= _ms(at)]
    else:
        entries = [e for e in log.events if e.occurred_at <= at]
        state = engine.replay(entries) if entries else engine.initial(user_id)
        told = [c for _, c in changes if c.occurred_at <= at]
    prescription = engine.decide(state) if entries else None
    return AsOf(user_id, at, len(entries), state, prescription, told[-1] if told else None)


def summary(view: AsOf) -> list[tuple[str, str]]:
    """(label, value) rows describing the state and prescription, for a table."""
    state, rx = view.state, view.prescription
    episode, program = state.episode, state.program
    rows = [
        ("events folded", str(view.events)),
        ("last event at", state.now.isoformat(timespec="minutes") if state.now else "-"),
        ("episode started", episode.started_at.date().isoformat() if episode else "-"),
        ("onset", episode.onset.isoformat() if episode else "-"),
        ("last baseline", f"{state.last_baseline:g}" if state.last_baseline is not None else "-"),
        ("in flare since", program.flare.since.isoformat() if program and program.flare else "-"),
        ("red flags", ", ".join(program.red_flags) if program and program.red_flags else "-"),
    ]
    if rx is None:
        return [*rows, ("prescription", "none yet")]
    rows += [
        ("phase", f"{rx.phase} ({rx.stage})"),
        ("sessions per week", str(rx.sessions_per_week)),
    ]
    rows += [(e.exercise_id, f"L{e.level} {e.name}") for e in rx.exercises]
    if rx.referral:
        rows.append(("referral", f"{rx.referral.urgency}: {rx.referral.reason}"))
    rows.append(("reasons", ", ".join(r.code for r in rx.reasons) or "-"))
    told = view.announced
    rows.append(
        ("last announced", f"v{told.version} {told.change} -> {told.phase}" if told else "-")
    )
    return rows


async def phases_as_of(
    redis: Redis,
    keys: Keys,
    at: datetime,
    users: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    data_keys: DataKeys | None = None,
) -> dict[str, int]:
    """How many users (default: all) were in each phase as of ``at`` (occurred by then)."""
    reader: Any = ReadOnly(redis)
    counts: dict[str, int] = {}
    todo = list(users) if users is not None else await scan.user_ids(reader, keys)
    async for logs in scan.stream_histories(reader, keys, todo, data_keys=data_keys):
        for log in logs:
            entries = [e for e in log.events if e.occurred_at <= at]
            rx = engine.decide(engine.replay(entries)) if entries else None
            phase = rx.phase if rx else "none yet"
            counts[phase] = counts.get(phase, 0) + 1
        if on_progress is not None:
            on_progress(len(logs), sum(len(log.entries) for log in logs))
    return counts


__all__ = ["AsOf", "as_of", "phases_as_of", "summary"]
