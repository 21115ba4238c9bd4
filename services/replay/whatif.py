"""What-if: replay every user under another rule set and compare, writing nothing.

For each user the history is replayed under the other rules (in event-time
order: the final prescription does not depend on arrival order, invariant 6)
and ``decide`` is compared with the user's latest ``PrescriptionChanged``, the
way the engine compares before emitting (phase, exercises with doses,
sessions per week, referral). Only users who would differ are reported.

Redis is reached through ``ReadOnly``, which has no write command at all.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from services.prescriber import engine
from services.prescriber.engine.change import same
from services.replay import scan
from services.replay.readonly import ReadOnly
from shared.data_keys import DataKeys
from shared.events import PrescribedExercise, PrescriptionChanged, Referral
from shared.keys import Keys


@dataclass(frozen=True, slots=True)
class Difference:
    """One user whose current prescription would differ under the other rules."""

    user_id: str
    phase_now: str
    phase_then: str
    levels_now: str
    levels_then: str
    referral_now: str
    referral_then: str
    summary: str


def _levels(exercises: Sequence[PrescribedExercise]) -> str:
    return " ".join(f"{e.exercise_id}:{e.level}" for e in exercises)


def _referral(referral: Referral | None) -> str:
    return f"{referral.urgency}:{referral.reason}" if referral else ""


def compare(
    user_id: str, current: PrescriptionChanged | None, rx: engine.Prescription | None
) -> Difference | None:
    """How the prescription ``rx`` differs from ``current``; None if it does not."""
    if rx is None and current is None:
        return None
    if rx is not None and same(rx, current):
        return None
    now_ex = current.exercises if current else ()
    then_ex = rx.exercises if rx else ()
    parts = []
    if (current.phase if current else "") != (rx.phase if rx else ""):
        parts.append(f"phase {current.phase if current else '-'} -> {rx.phase if rx else '-'}")
    before = {e.exercise_id: e.level for e in now_ex}
    after = {e.exercise_id: e.level for e in then_ex}
    for ex in sorted(before.keys() | after.keys()):
        if before.get(ex) != after.get(ex):
            parts.append(f"{ex} {before.get(ex, '-')} -> {after.get(ex, '-')}")
    ref_now, ref_then = (
        _referral(current.referral if current else None),
        _referral(rx.referral if rx else None),
    )
    if ref_now != ref_then:
        parts.append(f"referral {ref_now or 'none'} -> {ref_then or 'none'}")
    if not parts:
        parts.append("doses or sessions per week")
    return Difference(
        user_id,
        current.phase if current else "",
        rx.phase if rx else "",
        _levels(now_ex),
        _levels(then_ex),
        ref_now,
        ref_then,
        "; ".join(parts),
    )


async def what_if(
    redis: Redis,
    keys: Keys,
    rules: engine.RuleSet,
    users: Sequence[str] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    *,
    data_keys: DataKeys | None = None,
) -> list[Difference]:
    """Users whose latest prescription would differ under ``rules``; no writes (erased
    users are skipped). ``data_keys`` open sealed entries."""
    reader: Any = ReadOnly(redis)
    todo = list(users) if users is not None else await scan.user_ids(reader, keys)
    found: list[Difference] = []
    async for logs in scan.stream_histories(reader, keys, todo, data_keys=data_keys):
        ids = [log.user_id for log in logs]
        latest = await scan.latest_prescriptions(reader, keys, ids, data_keys)
        for log, current in zip(logs, latest, strict=True):
            rx = engine.decide(engine.replay(log.events, rules), rules) if log.entries else None
            difference = compare(log.user_id, current, rx)
            if difference is not None:
                found.append(difference)
        if on_progress is not None:
            on_progress(len(logs), sum(len(log.entries) for log in logs))
    return found


def write(differences: Sequence[Difference], path: str) -> Path:
    """Save the differences as CSV or JSON (by the file's extension)."""
    out = Path(path)
    rows = [asdict(d) for d in differences]
    if out.suffix == ".json":
        out.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
        return out
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(Difference.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(rows)
    return out


__all__ = ["Difference", "compare", "what_if", "write"]
