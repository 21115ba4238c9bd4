"""Users' refold timelines, kept within an event budget, least recently used first out."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from services.prescriber.arrivals import Timeline


class Timelines:
    """Users' refold timelines, least recently used first out, within ``events`` events.

    A late event refolds its user's history from the timeline's checkpoint
    before its place; without a kept timeline the history is read from the
    start and folded from the first event. Devices that sync late send late
    events in runs, so the next one usually finds its user's timeline here.
    """

    def __init__(self, events: int) -> None:
        self.limit = events
        self.events = 0
        self._kept: OrderedDict[str, tuple[str, Timeline]] = OrderedDict()

    def take(self, user_id: str) -> tuple[str, Timeline] | None:
        """The user's timeline and the position it reaches, removed (None if none)."""
        kept = self._kept.pop(user_id, None)
        if kept is not None:
            self.events -= len(kept[1].events)
        return kept

    def put(self, user_id: str, position: str, timeline: Timeline) -> None:
        """Keep ``timeline``, which holds the user's events up to ``position``."""
        self.take(user_id)
        self._kept[user_id] = (position, timeline)
        self.events += len(timeline.events)
        while self.events > self.limit and self._kept:
            _, (_, oldest) = self._kept.popitem(last=False)
            self.events -= len(oldest.events)

    def drop(self, belongs: Callable[[str], bool]) -> None:
        """Forget the timelines of the users ``belongs`` picks."""
        for user_id in [user_id for user_id in self._kept if belongs(user_id)]:
            self.take(user_id)

    def __len__(self) -> int:
        return len(self._kept)


__all__ = ["Timelines"]
