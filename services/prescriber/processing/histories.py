"""What a batch folds: the history after each user's cursor, and the earlier history a refold needs.

A feed entry is only a trigger; the user's history stream is the truth. The
events a batch's feed entries carry are used as they are when they continue
the history exactly from the user's position (each entry names the history
entry before it); otherwise the history after the position is read, every
such user in one round trip, up to the last position the feed announced. So
a redelivered entry folds nothing twice and a gap (a lost cache, an old
snapshot) is filled from the log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.prescriber.arrivals import Timeline
from services.prescriber.processing.timelines import Timelines
from shared.events import Input
from shared.store import EventStore
from shared.streams import START, is_start, position_key

Entries = list[tuple[str, Input]]


@dataclass(frozen=True, slots=True)
class Fed:
    """An event as its feed entry carried it, with the history positions the entry names.

    ``position`` is the event's own history entry, ``previous`` the entry
    before it (``0-0`` for a user's first); either is None if not named.
    """

    event: Input
    position: str | None
    previous: str | None


def continuing(position: str, fed: Sequence[Fed]) -> Entries | None:
    """The fed events as history entries, if they continue exactly from ``position``.

    That is, the first names ``position`` as the entry before it and each
    next one names the one before: then they are the history after
    ``position``, and no read is needed. Otherwise None.
    """
    if not fed:
        return None
    entries: Entries = []
    for item in fed:
        if item.position is None or item.previous != position:
            return None
        position = item.position
        entries.append((position, item.event))
    return entries


def announced(fed: Sequence[Fed]) -> str | None:
    """How far to read a history: the last fed position, or None (to its end)."""
    if not fed or any(item.position is None for item in fed):
        return None
    return fed[-1].position


class Histories:
    """Reads users' history for the processor, and keeps the timelines of their refolds."""

    def __init__(self, store: EventStore, timelines: Timelines) -> None:
        self.store = store
        self.timelines = timelines

    async def after(
        self, positions: Mapping[str, str], fed: Mapping[str, Sequence[Fed]]
    ) -> dict[str, Entries]:
        """Each user's history after their position: as fed where it continues, else read."""
        news: dict[str, Entries] = {}
        reads: list[tuple[str, str]] = []
        ends: list[str | None] = []
        for user_id, position in positions.items():
            entries = continuing(position, fed.get(user_id, ()))
            if entries is not None:
                news[user_id] = entries
            else:
                reads.append((user_id, position))
                ends.append(announced(fed.get(user_id, ())))
        if reads:
            read = await self.store.histories(reads, ends)
            news.update(zip((user_id for user_id, _ in reads), read, strict=True))
        return news

    async def tail(self, user_id: str, position: str) -> Entries:
        """The user's whole history after ``position``, read from the log."""
        return await self.store.history(user_id, after=position)

    async def earlier(self, user_id: str, position: str) -> Timeline | list[Input]:
        """The events at or before ``position``: a kept timeline if there is one, else read.

        A timeline kept at an earlier position is brought up to ``position``
        with the history entries between (history is never rewritten, so what
        it holds stays true). The timeline is handed over: ``keep`` it again.
        """
        kept = self.timelines.take(user_id)
        if kept is not None and position_key(kept[0]) <= position_key(position):
            reached, timeline = kept
            if reached != position:
                [more] = await self.store.histories([(user_id, reached)], [position])
                timeline.add(event for _, event in more)
            return timeline
        if is_start(position):
            return []
        [history] = await self.store.histories([(user_id, START)], [position])
        return [event for _, event in history]

    def keep(self, user_id: str, position: str, timeline: Timeline) -> None:
        """Keep the timeline a fold returned, which reaches ``position``."""
        self.timelines.put(user_id, position, timeline)


__all__ = ["Entries", "Fed", "Histories", "announced", "continuing"]
