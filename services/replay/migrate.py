"""``backtrack migrate encrypt``: seal every plaintext copy of health data a deployment holds.

A deployment that ran before encryption at rest holds its patients' data in plaintext;
today's readers read such entries as they are, and today's writers seal everything new.
``migrate_encrypt`` seals what is left while ingest, the prescriber and the channels keep
running, each kind the way its readers and writers allow (docs/PRIVACY.md, "Migration"):

- histories, prescription streams and rebuilt read models (``user:``, ``rx:``): rewritten
  whole under the same ids, swapped in by a checked RENAME (``restream``);
- dead letters (``bt:dlq``, ``bt:dlq:resolved``): the same, ``f:data`` sealed (a webhook
  letter's as a packed queue item);
- snapshots and rebuilt snapshots (``snap:``): sealed in place, only if unchanged
  (``in_place``);
- webhook queue items: sealed in place, all but each queue's head (``in_place``);
- partition feeds (``feed``, ``rxfeed``): plaintext entries every group has acknowledged
  are deleted (``feed_trim``); the others are left for a later run;
- webhook signing secrets older subscriptions carry in ``bt:subs``: moved out, sealed with
  the master key (``SubscriptionLog.seal_legacy_secrets``).

It is idempotent and resumable: what is sealed is skipped (found on the server, nothing
comes back), and a run killed at any point leaves every original whole (a copy replaces
one only by a checked rename) and temporary copies that the next run deletes first (and
that expire after an hour). An erased user's copies are left as they are (their key is
gone; their data is being deleted). Only one run at a time: two would delete each other's
copies (nothing is lost, but neither gets far).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis

from services.channels.subscriptions import SubscriptionLog
from services.replay import feed_trim, in_place, sealer
from services.replay.restream import Outcome, Restream, Target
from services.replay.stream_copies import TEMP_PATTERNS, temp_key
from shared.data_keys import DataKeys
from shared.keys import DLQ, PREFIX, Keys
from shared.streams import text

log = structlog.get_logger(__name__)

RESOLVED = f"{DLQ}:resolved"
QUEUES = f"{PREFIX}:{{wh}}:q:*"
#: phase, done, total (streams and snapshots and queues: keys; feeds: entries)
Progress = Callable[[str, int, int], None]


def _quiet(phase: str, done: int, total: int) -> None:
    """No progress shown."""


@dataclass(slots=True)
class Report:
    """What a run did: patients found (with a history or prescription stream), entries
    sealed and feed entries deleted per kind, erased users skipped, plaintext left for a
    later run per kind, entries naming no patient (never sealable), swaps retried because
    a stream changed while it was copied, and how long it took."""

    users: int = 0
    sealed: Counter[str] = field(default_factory=Counter)
    deleted: Counter[str] = field(default_factory=Counter)
    left: Counter[str] = field(default_factory=Counter)
    skipped: set[str] = field(default_factory=set)
    unsealable: Counter[str] = field(default_factory=Counter)
    retried: int = 0
    seconds: float = 0.0

    @property
    def finished(self) -> bool:
        """Whether nothing was left for a later run to seal."""
        return not any(self.left.values())


def stream_kind(key: str) -> str:
    """The report's name for a partitioned stream: ``history``, ``prescriptions``, or
    ``read models`` (a rebuild's ``rx:<version>:<user>``)."""
    rest = key.split(":", 2)[2]
    if rest.startswith("user:"):
        return "history"
    return "prescriptions" if rest.count(":") == 1 else "read models"


def snapshot_kind(key: str) -> str:
    """``snapshots`` or ``read models`` (a rebuild's ``snap:<version>:<user>``)."""
    return "snapshots" if key.split(":", 2)[2].count(":") == 1 else "read models"


def stream_target(key: str) -> Target:
    """How a user's stream is rewritten: a history only grows (caught up when appended to,
    no digest); a prescription stream or read model may be replaced whole by a rebuild's
    switch, so its swap compares digests."""
    kind = stream_kind(key)
    history = kind == "history"
    user = in_place.user_of(key)
    return Target(key, temp_key(key), kind, user, grows=history, verify=not history)


async def _scan(redis: Redis, pattern: str) -> list[str]:
    return sorted({text(k) async for k in redis.scan_iter(match=pattern, count=1000)})


async def drop_temporaries(redis: Redis) -> int:
    """Delete every temporary copy a run left (killed, or failed); returns how many."""
    found = [k for pattern in TEMP_PATTERNS for k in await _scan(redis, pattern)]
    return int(await redis.delete(*found)) if found else 0


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _tally(report: Report, outcomes: Sequence[Outcome]) -> None:
    for outcome in outcomes:
        kind = outcome.target.kind
        report.sealed[kind] += outcome.sealed
        report.unsealable[kind] += outcome.unsealable
        report.skipped |= outcome.skipped
        report.retried += outcome.retries
        if outcome.status == "busy":
            report.left["streams changing"] += 1
        elif outcome.status == "groups":  # never renamed: not a copy this tool can seal
            report.unsealable[f"{kind} (consumer groups)"] += 1


async def _streams(
    restream: Restream, report: Report, targets: Sequence[Target], group: int, progress: Progress
) -> None:
    done = 0
    for start in range(0, len(targets), group):
        chunk = targets[start : start + group]
        _tally(report, await restream.rewrite(chunk))
        done += len(chunk)
        progress("streams", done, len(targets))


async def _in_place(
    redis: Redis,
    data_keys: DataKeys,
    report: Report,
    progress: Progress,
    group: int,
) -> None:
    snapshots = await _scan(redis, f"{PREFIX}:{{p*}}:snap:*")
    done = 0
    for chunk in _chunks(snapshots, group):
        by_kind: dict[str, list[str]] = {}
        for name in chunk:
            by_kind.setdefault(snapshot_kind(name), []).append(name)
        for kind, names in by_kind.items():
            _add(report, kind, await in_place.seal_snapshots(redis, data_keys, names))
        done += len(chunk)
        progress("snapshots", done, len(snapshots))
    queues = await _scan(redis, QUEUES)
    done = 0
    for chunk in _chunks(queues, group):
        _add(report, "queue items", await in_place.seal_queues(redis, data_keys, chunk))
        done += len(chunk)
        progress("queues", done, len(queues))


def _add(report: Report, kind: str, sealed: in_place.Sealed) -> None:
    report.sealed[kind] += sealed.sealed
    report.left[kind] += sealed.left
    report.skipped |= sealed.skipped
    report.unsealable[kind] += sealed.unsealable


async def _feeds(
    redis: Redis,
    keys: Keys,
    report: Report,
    required: Mapping[str, Sequence[str]],
    progress: Progress,
) -> None:
    feeds = [("feed", f) for f in keys.feeds()] + [("rxfeed", f) for f in keys.rxfeeds()]
    pipe = redis.pipeline(transaction=False)
    for _, feed in feeds:
        pipe.xlen(feed)
    total = sum(int(n) for n in await pipe.execute(raise_on_error=False) if isinstance(n, int))
    read = [0]

    def advance(entries: int) -> None:
        read[0] += entries
        progress("feeds", read[0], total)

    for kind, feed in feeds:
        trimmed = await feed_trim.trim(redis, feed, required.get(kind, ()), on_page=advance)
        report.deleted[kind] += trimmed.deleted
        report.left[kind] += trimmed.left


async def migrate_encrypt(
    redis: Redis,
    keys: Keys,
    data_keys: DataKeys,
    on_progress: Progress = _quiet,
    *,
    required_groups: Mapping[str, Sequence[str]] | None = None,
    group: int = 64,
    page: int = 1000,
    attempts: int = 5,
) -> Report:
    """Seal every plaintext copy of health data (module doc); a rerun takes what was left.

    ``required_groups``: per feed kind (``feed``, ``rxfeed``), the consumer groups that
    must exist before its entries are deleted. Raises ValueError when ``data_keys`` does
    not seal (``BACKTRACK_ENCRYPT_AT_REST=0``).
    """
    if not data_keys.seals:
        raise ValueError("encryption at rest is off here (BACKTRACK_ENCRYPT_AT_REST=0)")
    started = time.perf_counter()
    report = Report()
    dropped = await drop_temporaries(redis)
    histories = await _scan(redis, f"{PREFIX}:{{p*}}:user:*")
    prescriptions = await _scan(redis, f"{PREFIX}:{{p*}}:rx:*")
    targets = [stream_target(key) for key in (*histories, *prescriptions)]
    report.users = len({t.user for t in targets if t.kind != "read models"})
    restream = Restream(redis, sealer.entries(data_keys), page=page, attempts=attempts)
    await _streams(restream, report, targets, group, on_progress)
    letters = Restream(redis, sealer.letters(data_keys), page=page, attempts=attempts)
    dead = [Target(name, temp_key(name), "dead letters", letters=True) for name in (DLQ, RESOLVED)]
    _tally(report, await letters.rewrite(dead))
    on_progress("dead letters", len(dead), len(dead))
    await _in_place(redis, data_keys, report, on_progress, group)
    await _feeds(redis, keys, report, required_groups or {}, on_progress)
    secrets = await SubscriptionLog(redis, data_keys.masters).seal_legacy_secrets()
    report.sealed["webhook secrets"] += secrets
    on_progress("secrets", 1, 1)
    report.seconds = time.perf_counter() - started
    log.info(
        "migrate_encrypt_done",
        users=report.users,
        sealed=sum(report.sealed.values()),
        deleted=sum(report.deleted.values()),
        left=sum(report.left.values()),
        skipped=len(report.skipped),
        temporaries_dropped=dropped,
        seconds=round(report.seconds, 3),
    )
    return report


__all__ = [
    "Progress",
    "Report",
    "drop_temporaries",
    "migrate_encrypt",
    "snapshot_kind",
    "stream_kind",
    "stream_target",
]
