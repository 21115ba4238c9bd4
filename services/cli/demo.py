"""``backtrack demo``: the whole stack, a simulated cohort posted over HTTP, a report.

The cohort's twelve weeks are posted in arrival order as fast as the stack
takes them (time-compressed), in batches through the public ingest API with an
operator token. When the prescriber has drained its feeds, the demo prints a
summary of phases, changes and referrals, and writes an HTML report with
charts of pain against program level for a few patients.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
from redis.asyncio import Redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from services.cli.report import write_report
from services.cli.stack import Stack
from shared import cohort
from shared.auth import issue
from shared.codec import dumps
from shared.events import PrescriptionChanged
from shared.keys import Keys
from shared.redis_store import RedisStore, connect
from shared.settings import Settings

BATCH = 250
console = Console()


def run_demo(settings: Settings, patients: int, seed: int, report: str) -> int:
    console.print(f"[bold]backtrack demo[/]: {patients} simulated patients, 12 weeks each")
    with Stack(settings, quiet=True) as stack:
        console.print(f"stack up: ingest {stack.ingest_url}, clinic {stack.clinic_url}")
        return asyncio.run(_run(stack, settings, patients, seed, Path(report)))


async def _run(stack: Stack, settings: Settings, n: int, seed: int, report: Path) -> int:
    token = issue("operator", None, settings.secret)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    arrivals = list(cohort.simulate(n, seed))
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=stack.ingest_url, headers=headers, timeout=30) as http:
        with _progress() as bar:
            task = bar.add_task("posting events", total=len(arrivals))
            for start in range(0, len(arrivals), BATCH):
                chunk = arrivals[start : start + BATCH]
                body = b'{"events":[' + b",".join(dumps(a.event) for a in chunk) + b"]}"
                reply = await http.post("/v1/events/batch", content=body)
                reply.raise_for_status()
                bar.advance(task, len(chunk))
    posted = time.perf_counter() - started
    console.print(
        f"posted {len(arrivals):,} events in {posted:.1f}s ({len(arrivals) / posted:,.0f} events/s)"
    )
    redis = connect(stack.redis_url)
    try:
        await _drain(redis, Keys(settings.partitions))
        store = RedisStore(redis, partitions=settings.partitions)
        people = cohort.patients(n, seed)
        latest = {p.user_id: await store.prescriptions(p.user_id) for p in people}
        _summary(people, latest)
        path = await write_report(store, people, latest, report)
        console.print(f"report written to [bold]{path}[/]")
    finally:
        await redis.aclose()
    return 0


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    )


async def _lag(redis: Redis, keys: Keys) -> int:
    total = 0
    for feed in keys.feeds():
        for group in await redis.xinfo_groups(feed):
            if group["name"] in (b"prescriber", "prescriber"):
                total += (group.get("lag") or 0) + (group.get("pending") or 0)
    return total


async def _drain(redis: Redis, keys: Keys, patience: float = 600) -> None:
    """Wait until the prescriber has consumed and acknowledged every feed entry."""
    with _progress() as bar:
        first = await _lag(redis, keys)
        task = bar.add_task("prescribing", total=max(first, 1))
        deadline = time.monotonic() + patience
        while (lag := await _lag(redis, keys)) and time.monotonic() < deadline:
            bar.update(task, completed=max(first - lag, 0))
            await asyncio.sleep(0.2)
        bar.update(task, completed=max(first, 1))


def _summary(
    people: list[cohort.Patient], changes: dict[str, list[tuple[str, PrescriptionChanged]]]
) -> None:
    from rich.table import Table  # noqa: PLC0415

    final = [c[-1][1] for c in changes.values() if c]
    kinds = Counter(ch.change for c in changes.values() for _, ch in c)
    archetype = Counter(p.archetype for p in people)
    table = Table(title="where the cohort ended up")
    table.add_column("final phase")
    table.add_column("patients", justify="right")
    for phase, count in Counter(c.phase for c in final).most_common():
        table.add_row(phase, str(count))
    console.print(table)
    table = Table(title="prescription changes")
    table.add_column("change")
    table.add_column("count", justify="right")
    for kind, count in kinds.most_common():
        table.add_row(kind, str(count))
    console.print(table)
    table = Table(title="referrals (latest prescription)")
    table.add_column("urgency")
    table.add_column("reason")
    table.add_column("patients", justify="right")
    referrals = Counter((c.referral.urgency, c.referral.reason) for c in final if c.referral)
    for (urgency, reason), count in referrals.most_common():
        table.add_row(urgency, reason, str(count))
    console.print(table)
    console.print("archetypes: " + ", ".join(f"{k} {v}" for k, v in archetype.most_common()))
