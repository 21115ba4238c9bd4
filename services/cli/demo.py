"""``backtrack demo``: the whole stack, the virtual cohort living against it over HTTP, a report.

The patients are ``make clinical``'s virtual patients (``shared.cohort.virtual``,
the same personas and seeds: patient i is the same person in both), who do
what they are prescribed. They live their weeks day by day, time-compressed:
what reaches the server each day is posted through the ingest API (an
operator token, batched across patients), the demo waits for the prescriber,
and whenever a patient's app reads its prescription it asks the clinic API
with that patient's own device token, the one its clinic's enrolment returned
at the start (``services.clinical.remote``).

At the end the demo prints the targets ``make clinical`` measures, for the rule
set the stack decided with, the summary tables, and writes an HTML report.
With the embedded Redis the event log lives under ``<data_dir>/demo`` and is
started afresh on every run, so the patients meet a stack that has never seen
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from rich.console import Console
from rich.table import Table

from services.cli.report import write_report
from services.cli.stack import Stack
from services.clinical.cohort import SEED
from services.clinical.driver import Run
from services.clinical.facts import facts
from services.clinical.metrics import Target, targets
from services.clinical.progress import progress_bar
from services.clinical.remote import Server, caught_up, live_cohort
from services.clinical.report import target_rows
from shared.auth import issue
from shared.cohort.persona import Persona, personas
from shared.data_keys import DataKeys
from shared.keys import Keys
from shared.redis_store import RedisStore, connect
from shared.settings import Settings
from shared.store import EventStore

console = Console()


def run_demo(settings: Settings, patients: int, seed: int | None, weeks: int, report: str) -> int:
    seed = SEED if seed is None else seed
    console.print(
        f"[bold]backtrack demo[/]: {patients} virtual patients (seed {seed}), {weeks} weeks each"
    )
    try:
        with Stack(_own_log(settings), quiet=True) as stack:
            console.print(f"stack up: ingest {stack.ingest_url}, clinic {stack.clinic_url}")
            return asyncio.run(_run(stack, personas(patients, seed), seed, weeks, Path(report)))
    except KeyboardInterrupt:
        console.print("stopped")
        return 130


def _own_log(settings: Settings) -> Settings:
    """With the embedded Redis, a fresh log of the demo's own under ``data_dir``."""
    if settings.redis_url:
        return settings
    own = Path(settings.data_dir) / "demo"
    shutil.rmtree(own, ignore_errors=True)
    return settings.model_copy(update={"data_dir": str(own)})


async def _run(stack: Stack, people: list[Persona], seed: int, weeks: int, report: Path) -> int:
    settings = stack.settings
    redis = connect(stack.redis_url)
    store = RedisStore(
        redis, settings.partitions, data_keys=DataKeys.from_settings(redis, settings)
    )
    try:
        if await _known(store, people):
            console.print(
                "[red]this event log already holds patients of this cohort[/]: "
                "use another --seed or an empty Redis"
            )
            return 2
        started = time.perf_counter()
        async with server_for(stack, redis) as server:
            runs = await _live(server, people, seed, weeks)
        console.print(_account(runs, weeks, time.perf_counter() - started))
        path = await conclude(store, runs, report)
        console.print(f"report written to [bold]{path}[/]")
    finally:
        await redis.aclose()
    return 0


@contextlib.asynccontextmanager
async def server_for(stack: Stack, redis: Redis, **client: Any) -> AsyncIterator[Server]:
    """The running stack as the cohort reaches it; ``client`` goes to both HTTP clients."""
    settings = stack.settings
    token = issue("operator", None, settings.secret, lifetimes=settings.token_lifetimes())
    operator = {"Authorization": f"Bearer {token}"}
    reads = Server.concurrency
    alive = httpx.Limits(max_connections=reads, max_keepalive_connections=reads)
    async with (
        httpx.AsyncClient(base_url=stack.ingest_url, headers=operator, timeout=30, **client) as a,
        httpx.AsyncClient(base_url=stack.clinic_url, limits=alive, timeout=30, **client) as b,
    ):
        wait = partial(caught_up, redis, Keys(settings.partitions))
        yield Server(a, b, settings.secret, wait, reads)


async def _known(store: EventStore, people: Sequence[Persona]) -> bool:
    """Whether the log already holds any of these patients."""
    found = await asyncio.gather(*(store.history(p.user_id, count=1) for p in people))
    return any(found)


async def _live(server: Server, people: list[Persona], seed: int, weeks: int) -> list[Run]:
    with progress_bar(console) as bar:
        task = bar.add_task("simulated days", total=None)

        def day_done(day: int, days: int, posted: int) -> None:
            description = f"simulated days, {posted:,} events posted"
            bar.update(task, total=days, completed=day + 1, description=description)

        return await live_cohort(server, people, seed, weeks, day_done)


def _account(runs: Sequence[Run], weeks: int, seconds: float) -> str:
    events = sum(r.events for r in runs)
    reads = sum(r.reads for r in runs)
    return (
        f"{len(runs)} patients lived {weeks} week{'' if weeks == 1 else 's'} in {seconds:.0f} s: "
        f"{events:,} events posted, {reads:,} prescription reads with device tokens, "
        f"{sum(len(r.changes) for r in runs):,} prescription changes"
    )


async def conclude(store: EventStore, runs: Sequence[Run], report: Path) -> Path:
    """Print the targets and the summary tables; write the HTML report and return its path."""
    measured = figures(runs)
    for version, found in measured.items():
        table = Table(title=f"targets of make clinical, rule set {version}")
        for column in ("target", "wanted", "measured"):
            table.add_column(column, justify="right" if column == "measured" else "left")
        for row in target_rows({version: found}):
            table.add_row(*row)
        console.print(table)
    _summary(runs)
    return await write_report(store, runs, measured, report)


def figures(runs: Sequence[Run]) -> dict[str, list[Target]]:
    """make clinical's targets over the runs' facts, per rule set the stack decided with."""
    by_version: dict[str, list[Run]] = {}
    for run in runs:
        by_version.setdefault(run.rules_version, []).append(run)
    return {v: targets([facts(r) for r in group]) for v, group in sorted(by_version.items())}


def _summary(runs: Sequence[Run]) -> None:
    final = [r.changes[-1].change for r in runs if r.changes]
    changes = Counter((e.change.change,) for r in runs for e in r.changes)
    referrals = Counter((c.referral.urgency, c.referral.reason) for c in final if c.referral)
    tables = (
        (
            "where the cohort ended up",
            ("final phase", "patients"),
            Counter((c.phase,) for c in final),
        ),
        ("prescription changes", ("change", "count"), changes),
        ("referrals (latest prescription)", ("urgency", "reason", "patients"), referrals),
    )
    for title, columns, counts in tables:
        table = Table(title=title)
        for column in columns[:-1]:
            table.add_column(column)
        table.add_column(columns[-1], justify="right")
        for key, count in counts.most_common():
            table.add_row(*key, str(count))
        console.print(table)
    archetypes = Counter(r.persona.archetype for r in runs)
    console.print("archetypes: " + ", ".join(f"{k} {v}" for k, v in archetypes.most_common()))
