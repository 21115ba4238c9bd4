"""``backtrack audit [--user U] [--since TIME]``: who read whose data, when; oldest first.

Reads every partition's audit stream (``shared.audit``), or only the user's
partition with ``--user``, merged by time. One JSON object per line (``at``,
``role``, ``by``, ``what``, ``user_id``, ``outcome``, ``position``), or a
table with ``--table``. Listing the audit log is not itself audited: it
holds no patient data.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import orjson
from rich.console import Console
from rich.table import Table

from shared.audit import AuditEntry, AuditLog
from shared.keys import Keys
from shared.redis_store import connect
from shared.settings import Settings


def since(value: str) -> datetime:
    """``--since``: RFC 3339 (a date alone is its midnight); without an offset, UTC."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {value}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _table(entries: list[AuditEntry]) -> None:
    table = Table(title="audit log")
    for column in ("at", "role", "by", "what", "user", "outcome"):
        table.add_column(column)
    for e in entries:
        style = "bold red" if e.outcome == "refused" else None
        at = e.at.isoformat(timespec="milliseconds")
        table.add_row(at, e.role, e.by, e.what, e.user_id, e.outcome, style=style)
    Console().print(table)


async def show_audit(
    settings: Settings, user_id: str | None, after: datetime | None, as_table: bool
) -> int:
    if not settings.redis_url:
        print("set BACKTRACK_REDIS_URL or pass --redis-url", file=sys.stderr)
        return 2
    redis = connect(settings.redis_url)
    try:
        log = AuditLog(redis, Keys(settings.partitions), settings.audit_retention_days)
        since_ms = int(after.timestamp() * 1000) if after else 0
        entries = await log.entries(user_id, since_ms)
    finally:
        await redis.aclose()
    if as_table:
        _table(entries)
        return 0
    out = sys.stdout.buffer
    for entry in entries:
        out.write(orjson.dumps(entry.public()) + b"\n")
    out.flush()
    return 0
