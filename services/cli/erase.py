"""``backtrack erase --user U [--yes]`` and ``backtrack erase --resume``: erase patients.

``--user`` erases one patient (``services.prescriber.erasure``): their data
key is destroyed and their data deleted, and the clinics subscribed to them
are sent ``PatientErased``. Without ``--yes`` it asks first (on a terminal),
and refuses when it cannot ask. ``--resume`` finishes every erasure a killed
run (or a prescriber that died after its 202) left ``started``. Each prints
what it did as counts, never the data. An erasure by the CLI is recorded in
the audit log first, as the operator's (``by`` ``cli:<OS user>``, what
``erase``).
"""

from __future__ import annotations

import sys

from pydantic import TypeAdapter, ValidationError

from services.prescriber.erasure import Eraser, ErasureReport
from shared.audit import AuditLog, cli_reader
from shared.data_keys import DataKeys
from shared.events import UserId
from shared.keys import Keys
from shared.redis_store import connect
from shared.settings import Settings

_USER: TypeAdapter[str] = TypeAdapter(UserId)


def _confirmed(user_id: str) -> bool:
    if not sys.stdin.isatty():
        print("backtrack erase: pass --yes to erase without a terminal to ask", file=sys.stderr)
        return False
    answer = input(f"Erase {user_id} for good (their data cannot be brought back)? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _step(line: str) -> None:
    print(line, flush=True)


def _print(report: ErasureReport) -> None:
    print("\n".join(report.lines()), flush=True)


async def erase(settings: Settings, user_id: str | None, resume: bool, yes: bool) -> int:
    """Carry out ``erase``; 0 when done, 2 for a refused request."""
    if not settings.redis_url:
        print("set BACKTRACK_REDIS_URL or pass --redis-url", file=sys.stderr)
        return 2
    if user_id is not None:
        try:
            _USER.validate_python(user_id)
        except ValidationError:
            print(f"backtrack erase: not a user id: {user_id!r}", file=sys.stderr)
            return 2
        if not yes and not _confirmed(user_id):
            return 2
    redis = connect(settings.redis_url)
    try:
        keys = Keys(settings.partitions)
        data_keys = DataKeys.from_settings(redis, settings)
        eraser = Eraser(redis, keys, data_keys, settings.token_lifetimes())
        if resume:
            count = await eraser.resume(_print)
            print(f"{count} unfinished erasure(s) finished", flush=True)
        if user_id is not None:
            audit = AuditLog(redis, keys, settings.audit_retention_days)
            await audit.record("operator", cli_reader(), "erase", user_id)
            print(f"erasing {user_id}: data key first, then the data", flush=True)
            _print(await eraser.erase(user_id, cli_reader(), _step))
    finally:
        await redis.aclose()
    return 0


__all__ = ["erase"]
