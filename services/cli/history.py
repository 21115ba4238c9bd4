"""``backtrack history USER``: a user's events and prescriptions as one timeline.

An operator's read of a patient's data: recorded in the audit log first
(role ``operator``, by ``cli:<OS user>``, what ``history``; ``shared.audit``).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from shared.audit import AuditLog, cli_reader
from shared.data_keys import DataKeys
from shared.events import (
    ClinicianReviewed,
    Event,
    OutcomeRecorded,
    PainLogged,
    PrescriptionChanged,
    RehabStarted,
    SessionCompleted,
)
from shared.redis_store import RedisStore, connect
from shared.settings import Settings


def describe(event: Event) -> str:
    """One readable line for an event."""
    if isinstance(event, RehabStarted):
        flags = f", red flags: {', '.join(event.red_flags)}" if event.red_flags else ""
        return f"rehab started ({event.cause}, onset {event.onset_date or '?'}{flags})"
    if isinstance(event, PainLogged):
        flags = f", red flags: {', '.join(event.red_flags)}" if event.red_flags else ""
        return f"pain {event.score}/10 ({event.context}){flags}"
    if isinstance(event, SessionCompleted):
        done = "completed" if event.completed else "partial"
        during = f", pain during {event.pain_during}" if event.pain_during is not None else ""
        return f"session {event.session_id} {done}, {event.difficulty}{during}"
    if isinstance(event, ClinicianReviewed):
        return _review(event)
    if isinstance(event, OutcomeRecorded):
        return f"outcome {event.instrument} {event.score:g}"
    dose = ", ".join(f"{e.exercise_id} L{e.level}" for e in event.exercises) or "no exercises"
    referral = (
        f"; referral {event.referral.urgency}: {event.referral.reason}" if event.referral else ""
    )
    return f"v{event.version} {event.change} -> {event.phase}: {dose}{referral}"


def _review(event: ClinicianReviewed) -> str:
    """The action and its argument; never the note's text (terminal output ends up in logs)."""
    argument = ""
    if event.levels is not None:
        argument = " " + ", ".join(f"{e} L{level}" for e, level in event.levels.items())
    elif event.exercise_id is not None:
        argument = f" {event.exercise_id}"
    note = ", with a note" if event.note else ""
    return f"clinician {event.action}{argument} by {event.reviewed_by or '?'}{note}"


async def show_history(settings: Settings, user_id: str, plot: str | None) -> int:
    if not settings.redis_url:
        print("set BACKTRACK_REDIS_URL or pass --redis-url")
        return 2
    redis = connect(settings.redis_url)
    data_keys = DataKeys.from_settings(redis, settings)
    store = RedisStore(redis, settings.partitions, data_keys=data_keys)
    try:
        audit = AuditLog(redis, store.keys, settings.audit_retention_days)
        await audit.record("operator", cli_reader(), "history", user_id)
        if await data_keys.erased(user_id):
            print(f"{user_id} was erased: nothing of them can be read")
            return 1
        events = [e for _, e in await store.history(user_id)]
        changes = [c for _, c in await store.prescriptions(user_id)]
    finally:
        await redis.aclose()
    if not events:
        print(f"no history for {user_id}")
        return 1
    timeline: list[Event] = sorted([*events, *changes], key=lambda e: e.occurred_at)
    table = Table(title=f"history of {user_id}")
    table.add_column("occurred at")
    table.add_column("event")
    table.add_column("")
    for event in timeline:
        style = "bold green" if isinstance(event, PrescriptionChanged) else None
        table.add_row(
            event.occurred_at.isoformat(timespec="minutes"),
            event.type,
            describe(event),
            style=style,
        )
    Console().print(table)
    if plot:
        from services.cli.charts import plot_user  # noqa: PLC0415

        print(f"plot written to {plot_user(user_id, events, changes, plot)}")
    return 0
