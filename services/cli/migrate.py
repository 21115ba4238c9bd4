"""``backtrack migrate encrypt`` and ``backtrack keys rewrap``: the operator's encryption steps.

``migrate encrypt`` seals what a deployment wrote before encryption at rest
(``services.replay.migrate``) with a progress bar per phase, and prints counts only:
never an entry, a user id or a key. Exit status 0 when nothing plaintext is left, 3 when
something was left for a rerun (feed entries a group has not acknowledged yet, a queue's
head in flight, a stream that kept changing). ``keys rewrap`` is step 2 of a master key
rotation (docs/PRIVACY.md, "Rotation"): every data key rewrapped under the current master
key.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from services.channels.dispatcher import GROUP as WEBHOOK_GROUP
from services.cli.connection import redis_of
from services.prescriber.entrypoints.log_channel import LOG_GROUP
from services.replay.migrate import Report, migrate_encrypt
from shared.data_keys import DataKeys
from shared.keys import PRESCRIBER_GROUP, Keys
from shared.sealing import UnknownMasterKey
from shared.settings import Settings

console = Console()
#: the groups each feed kind is read by; its entries go only once all of them exist
REQUIRED_GROUPS = {"feed": (PRESCRIBER_GROUP,), "rxfeed": (LOG_GROUP, WEBHOOK_GROUP)}
UNITS = {"feeds": "entries", "dead letters": "streams"}


def _bars(progress: Progress) -> Callable[[str, int, int], None]:
    tasks: dict[str, TaskID] = {}

    def advance(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            unit = UNITS.get(phase, "keys")
            tasks[phase] = progress.add_task(phase, total=total, unit=unit)
        progress.update(tasks[phase], completed=done, total=total)

    return advance


def _table(report: Report) -> Table:
    table = Table(title=f"{report.users:,} patients, {report.seconds:.1f} s")
    table.add_column("")
    for column in ("sealed", "deleted", "left for a rerun", "not sealable"):
        table.add_column(column, justify="right")
    counts = (report.sealed, report.deleted, report.left, report.unsealable)
    for kind in dict.fromkeys(k for c in counts for k, n in c.items() if n):
        table.add_row(kind, *(f"{c[kind]:,}" if c[kind] else "" for c in counts))
    return table


async def encrypt(settings: Settings) -> int:
    """Run the migration once; 0 if nothing plaintext is left, 3 if a rerun has work."""
    async with redis_of(settings) as redis:
        data_keys = DataKeys.from_settings(redis, settings)
        if not data_keys.seals:
            console.print("encryption at rest is off (BACKTRACK_ENCRYPT_AT_REST=0): nothing to do")
            return 2
        columns = (
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            report = await migrate_encrypt(
                redis,
                Keys(settings.partitions),
                data_keys,
                _bars(progress),
                required_groups=REQUIRED_GROUPS,
            )
    console.print(_table(report))
    if report.skipped:
        console.print(f"{len(report.skipped):,} erased patients skipped (their key is destroyed)")
    if any(report.unsealable.values()):
        console.print("some entries name no patient and stay as they are: see docs/PRIVACY.md")
    if report.finished:
        console.print("nothing plaintext is left")
        return 0
    console.print("plaintext left for a rerun (entries not yet acknowledged or in flight)")
    return 3


async def rewrap(settings: Settings) -> int:
    """Rewrap every data key under the current master key; 1 if one is under an unknown key."""
    async with redis_of(settings) as redis:
        try:
            done = await DataKeys.from_settings(redis, settings).rewrap()
        except UnknownMasterKey as exc:
            console.print(f"{exc}: add it to BACKTRACK_PREVIOUS_MASTER_KEYS and run again")
            return 1
    console.print(f"{done.rewrapped:,} data keys rewrapped, {done.current:,} current already")
    return 0


__all__ = ["REQUIRED_GROUPS", "encrypt", "rewrap"]
