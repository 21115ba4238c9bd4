"""``backtrack export --user U``: everything held about one user, as one JSON document.

The user's input events (their history stream, through ``shared.codec``), their
prescription changes, their clinic now and their enrolment records (both
read from their own keys and filtered to them: nothing of another user), and
the audit entries about them: who read their data and when. Positions are
the stream ids, kept so that an export can be compared with the log.

The export is itself a read by an operator: it is recorded in the audit log
first, as role ``operator``, by ``cli:<OS user>`` (the CLI holds no token,
so the OS account that ran it is the closest to who), what ``export``.
Progress goes to stderr when a history runs to more than one page.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shared.audit import AuditLog, cli_reader
from shared.codec import dumps
from shared.data_keys import DataKeys, KeyDestroyed
from shared.redis_store import RedisStore, connect
from shared.settings import Settings
from shared.store import Enrolment

#: events read per XRANGE of the history
PAGE = 10_000


def _enrolment(record: Enrolment) -> dict[str, Any]:
    return {
        "position": record.position,
        "at": record.at.isoformat(),
        "clinic_id": record.clinic_id,
        "previous": record.previous,
        "by": record.by,
    }


async def _events(store: RedisStore, user_id: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    after = "0-0"
    while page := await store.history(user_id, after, PAGE):
        got.extend({"position": p, "event": orjson.Fragment(dumps(e))} for p, e in page)
        after = page[-1][0]
        if len(got) >= PAGE:
            print(f"export {user_id}: {len(got)} events read", file=sys.stderr, flush=True)
    return got


async def collect(settings: Settings, redis_url: str, user_id: str) -> dict[str, Any]:
    """The export of ``user_id`` (after its audit entry is written); KeyDestroyed for an
    erased user."""
    redis = connect(redis_url)
    try:
        store = RedisStore(
            redis, settings.partitions, data_keys=DataKeys.from_settings(redis, settings)
        )
        audit = AuditLog(redis, store.keys, settings.audit_retention_days)
        await audit.record("operator", cli_reader(), "export", user_id)
        if store.data_keys is not None and await store.data_keys.erased(user_id):
            raise KeyDestroyed(user_id)
        events = await _events(store, user_id)
        changes = await store.prescriptions(user_id)
        return {
            "user_id": user_id,
            "exported_at": datetime.now(UTC).isoformat(),
            "clinic_id": await store.clinic_of(user_id),
            "events": events,
            "prescriptions": [
                {"position": p, "change": orjson.Fragment(dumps(c))} for p, c in changes
            ],
            "enrolments": [_enrolment(r) for r in await store.enrolments(user_id)],
            "audit": [e.public() for e in await audit.entries(user_id)],
        }
    finally:
        await redis.aclose()


async def export_user(settings: Settings, user_id: str, out: str | None, fhir: bool) -> int:
    if fhir:
        print(
            "backtrack export: --fhir is not built yet (FHIR R4 is planned); "
            "run it without --fhir for the JSON export",
            file=sys.stderr,
        )
        return 2
    if not settings.redis_url:
        print("set BACKTRACK_REDIS_URL or pass --redis-url", file=sys.stderr)
        return 2
    try:
        document = await collect(settings, settings.redis_url, user_id)
    except KeyDestroyed:
        print(f"{user_id} was erased: nothing of them can be exported", file=sys.stderr)
        return 1
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if out:
        await asyncio.to_thread(Path(out).write_bytes, data)
        print(f"export of {user_id} written to {out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    if not document["events"] and not document["enrolments"]:
        print(f"nothing held about {user_id}", file=sys.stderr)
    return 0
