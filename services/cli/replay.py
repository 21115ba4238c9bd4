"""``backtrack replay ...`` and ``backtrack dlq ...``: the operator's replay tools.

Each command here only translates arguments into a call of ``services.replay``
and prints the answer (rich tables, progress bars with events/s and ETA).
Commands that read every history also serve their progress as Prometheus
metrics while they run, when given a port (``--metrics-port`` or
``BACKTRACK_REPLAY_METRICS_PORT``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from redis.asyncio import Redis
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from services.cli.connection import redis_of
from services.replay.metrics import ReplayMetrics, serve
from services.replay.workers import Job, in_workers
from shared.data_keys import DataKeys
from shared.keys import Keys
from shared.settings import Settings

console = Console()


def parse_time(value: str) -> datetime:
    """RFC 3339 (a date alone is its midnight); without an offset, UTC."""
    at = datetime.fromisoformat(value)
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[users]} users"),
        MofNCompleteColumn(),
        TextColumn("events  {task.fields[rate]:>9,.0f} events/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _tracker(progress: Progress, description: str, total: int) -> Callable[[int, int], None]:
    task = progress.add_task(description, total=total, users=0, rate=0.0)
    started, seen = time.perf_counter(), [0, 0]

    def advance(users: int, events: int) -> None:
        seen[0] += users
        seen[1] += events
        rate = seen[1] / max(time.perf_counter() - started, 1e-9)
        progress.update(task, advance=events, users=seen[0], rate=rate)

    return advance


@contextmanager
def _watch(
    settings: Settings, command: str, description: str, users: int, total: int
) -> Iterator[Callable[[int, int], None]]:
    """One run's progress callback: it moves the bar and, with a port, the served metrics."""
    metrics = ReplayMetrics(command)
    port = settings.replay_metrics_port
    with ExitStack() as stack:
        try:
            stack.enter_context(serve(metrics.registry, port, settings.host))
        except OSError as exc:
            raise SystemExit(f"cannot serve metrics on port {port}: {exc.strerror or exc}") from exc
        if port is not None:
            console.print(f"metrics on http://{settings.host}:{port}/metrics")
        metrics.start(users, total)
        bar = _tracker(stack.enter_context(_progress()), description, total)

        def advance(users: int, events: int) -> None:
            bar(users, events)
            metrics.advance(users, events)

        yield advance


async def rebuild(settings: Settings, user: str | None, rebuild_id: str | None) -> int:
    from services.replay import scan  # noqa: PLC0415
    from services.replay.rebuild import Rebuild  # noqa: PLC0415

    keys = Keys(settings.partitions)
    async with redis_of(settings) as redis:
        chosen = rebuild_id or await _unfinished(redis, user) or time.strftime("r%Y%m%d%H%M%S")
        job = Rebuild(redis, keys, chosen, data_keys=DataKeys.from_settings(redis, settings))
        users, resumed = await job.plan([user] if user else None)
        if resumed:
            console.print(f"resuming rebuild [bold]{chosen}[/] ({len(users)} users left)")
        total = await scan.total_events(redis, keys, users)
        with _watch(settings, "rebuild", f"rebuild {chosen}", len(users), total) as advance:
            report = await job.run(users, resumed, advance)
    console.print(
        f"rebuild {report.rebuild_id}: {report.users} users, {report.events:,} events, "
        f"{report.switched} switched ({report.changed} with different prescriptions), "
        f"{len(report.deferred)} deferred, {report.seconds:.1f} s this run"
    )
    if report.deferred:
        console.print(f"deferred (live processing busy): rerun with --id {chosen}")
    if report.changed:
        console.print("some read models changed: restart the prescriber to reload its cursors")
    return 0 if not report.deferred else 3


async def _unfinished(redis: Redis, user: str | None) -> str | None:
    """The last rebuild of everyone, if it did not finish: a bare rerun resumes it."""
    from services.replay.rebuild import LAST, progress_key  # noqa: PLC0415

    last: Any = await redis.get(LAST)
    if user is not None or last is None:
        return None
    status: Any = await redis.hget(progress_key(last.decode()), "status")
    return last.decode() if status not in (b"done", None) else None


async def _over(
    redis: Redis,
    settings: Settings,
    job: Job,
    users: Sequence[str],
    advance: Callable[[int, int], None],
) -> list[Any]:
    """The job's answers over ``users``: one, in this process, or one per worker process."""
    if settings.replay_workers <= 1:
        data_keys = DataKeys.from_settings(redis, settings)
        keys = Keys(job.partitions)
        return [await job.tool(redis, keys, job.argument, users, advance, data_keys=data_keys)]
    return in_workers(job, users, settings.replay_workers, advance)


async def what_if(
    settings: Settings, pairs: Sequence[str], rules_file: str | None, out: str | None
) -> int:
    from services.replay import scan, whatif  # noqa: PLC0415
    from services.replay.rulesets import load_rules  # noqa: PLC0415

    rules = load_rules(rules_file, pairs)
    keys = Keys(settings.partitions)
    async with redis_of(settings) as redis:
        users = await scan.user_ids(redis, keys)
        total = await scan.total_events(redis, keys, users)
        job = Job(
            whatif.what_if,
            settings.redis_url or "",
            settings.partitions,
            rules,
            settings.master_keys(),
        )
        with _watch(settings, "what-if", "what-if", len(users), total) as advance:
            answers = await _over(redis, settings, job, users, advance)
    order = {user: i for i, user in enumerate(users)}
    found = sorted(chain.from_iterable(answers), key=lambda diff: order[diff.user_id])
    table = Table(title=f"{len(found)} of {len(users)} users would differ")
    for column in ("user", "phase now", "phase then", "how"):
        table.add_column(column)
    for diff in found[:200]:
        table.add_row(diff.user_id, diff.phase_now, diff.phase_then, diff.summary)
    console.print(table)
    if len(found) > 200:
        console.print(f"(first 200 shown; --out FILE.csv for all {len(found)})")
    if out:
        console.print(f"written to {whatif.write(found, out)}")
    return 0


async def as_of(settings: Settings, at: datetime, user: str | None, arrived: bool) -> int:
    from services.replay import asof, scan  # noqa: PLC0415

    keys = Keys(settings.partitions)
    async with redis_of(settings) as redis:
        if user is None:
            users = await scan.user_ids(redis, keys)
            total = await scan.total_events(redis, keys, users)
            job = Job(
                asof.phases_as_of,
                settings.redis_url or "",
                settings.partitions,
                at,
                settings.master_keys(),
            )
            with _watch(settings, "as-of", "as-of", len(users), total) as advance:
                answers = await _over(redis, settings, job, users, advance)
            counts = sum((Counter(answer) for answer in answers), Counter[str]())
            table = Table(title=f"phases as of {at.isoformat()}")
            table.add_column("phase")
            table.add_column("users", justify="right")
            for phase, n in sorted(counts.items()):
                table.add_row(phase, str(n))
            console.print(table)
            return 0
        data_keys = DataKeys.from_settings(redis, settings)
        view = await asof.as_of(redis, keys, user, at, known=arrived, data_keys=data_keys)
    reading = "arrived" if arrived else "occurred"
    table = Table(title=f"{user} as of {at.isoformat()} (events {reading} by then)")
    table.add_column("")
    table.add_column("")
    for label, value in asof.summary(view):
        table.add_row(label, value)
    console.print(table)
    return 0 if view.events else 1


async def redeliver(
    settings: Settings, subscription: str, since: datetime, until: datetime | None
) -> int:
    from services.replay.redeliver import SubscriptionNotFound, redeliver  # noqa: PLC0415

    async with redis_of(settings) as redis:
        try:
            done = await redeliver(redis, Keys(settings.partitions), subscription, since, until)
        except SubscriptionNotFound:
            console.print(f"no active subscription {subscription}")
            return 1
    console.print(
        f"{done.queued} changes queued again for {done.subscription} ({done.seen} fed in the range)"
    )
    return 0


async def dlq(settings: Settings, action: str, letter_id: str | None, count: int) -> int:
    from services.replay import deadletters  # noqa: PLC0415

    async with redis_of(settings) as redis:
        if action == "list":
            letters = await deadletters.list_letters(redis, count)
            table = Table(title=f"dead letters ({len(letters)} shown)")
            for column in ("id", "stream", "entry", "user", "error"):
                table.add_column(column)
            for letter in letters:
                user = letter.fields.get(b"user_id", b"").decode(errors="replace")
                meta = letter.meta
                row = (meta.get("stream", ""), meta.get("entry_id", ""), user, letter.error[:80])
                table.add_row(letter.letter_id, *row)
            console.print(table)
            return 0
        assert letter_id is not None
        if action == "show":
            found = await deadletters.show(redis, letter_id)
            if found is None:
                console.print(f"no dead letter {letter_id}")
                return 1
            for key, value in found.meta.items():
                console.print(f"[bold]{key}[/]: {value}")
            for name, data in found.fields.items():
                console.print(f"[bold]f:{name.decode()}[/]: {data.decode(errors='replace')}")
            return 0
        if action == "retry":
            where = await deadletters.retry(redis, letter_id)
            console.print(f"retried to {where}" if where else f"no dead letter {letter_id}")
            return 0 if where else 1
        dropped = await deadletters.drop(redis, letter_id)
        console.print(f"dropped {letter_id}" if dropped else f"no dead letter {letter_id}")
        return 0 if dropped else 1
