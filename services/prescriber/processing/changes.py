"""Appending what a batch emitted: one write for every user, each user apart on a version gap."""

from __future__ import annotations

from collections.abc import Sequence

from services.prescriber.processing.cursors import Step
from shared.store import EventStore, VersionGapError


class Changes:
    """Stores the PrescriptionChanged events that folding emits (idempotent by version)."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def append(self, steps: Sequence[Step]) -> tuple[list[Step], dict[str, Exception]]:
        """Store the steps' changes; return the steps stored and the users refused.

        One write for all; if it is refused for a version gap, each user's
        changes are appended on their own, so the gap fails its user alone
        (changes the joint call already stored answer duplicate, by version).
        Any other failure raises, for the whole batch.
        """
        changes = [change for step in steps for change in step.changes]
        if not changes:
            return list(steps), {}
        try:
            await self.store.append_changes(changes)
        except VersionGapError:
            return await self._apart(steps)
        return list(steps), {}

    async def _apart(self, steps: Sequence[Step]) -> tuple[list[Step], dict[str, Exception]]:
        stored: list[Step] = []
        refused: dict[str, Exception] = {}
        for step in steps:
            try:
                await self.store.append_changes(step.changes)
            except VersionGapError as exc:
                refused[step.user_id] = exc
            else:
                stored.append(step)
        return stored, refused


__all__ = ["Changes"]
