"""A change is emitted once, whatever crashes come: the processor over an in-memory store.

A crash drops the processor's memory and may leave the user's snapshot older
than the changes already stored (any earlier snapshot: saving is not atomic
with emitting). The restarted processor refolds the history after that
snapshot, deciding again changes that are already there; the store takes each
version once, so the prescription history is exactly that of a run without a
crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.prescriber.processing.processor import Processor
from shared import cohort
from shared.events import Input, PrescriptionChanged
from shared.store import MemoryStore, Snapshot

CHUNK = 9


class Keeping(MemoryStore):
    """A MemoryStore that remembers every snapshot it was ever given, oldest first."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[Snapshot] = []

    async def save_snapshots(self, snapshots: Sequence[tuple[str, Snapshot]]) -> None:
        self.saved += [snapshot for _, snapshot in snapshots]
        await super().save_snapshots(snapshots)


@cache
def course(archetype: str) -> tuple[Input, ...]:
    """One simulated patient's events in arrival order."""
    person = next(p for p in cohort.patients(40, seed=17) if p.archetype == archetype)
    return tuple(a.event for a in cohort.history(person, seed=17))


async def _run(events: Sequence[Input], crashes: dict[int, int]) -> list[PrescriptionChanged]:
    """Feed the events in chunks; before chunk i in ``crashes``, crash and restore the
    snapshot numbered ``crashes[i]`` (modulo those saved, none if none)."""
    store = Keeping()
    processor = Processor(store, snapshot_every=5)
    user = events[0].user_id
    for i, start in enumerate(range(0, len(events), CHUNK)):
        if i in crashes:
            await processor.flush() if crashes[i] < 0 else None
            if store.saved:
                await MemoryStore.save_snapshot(
                    store, user, store.saved[crashes[i] % len(store.saved)]
                )
            processor = Processor(store, snapshot_every=5)
        await store.append_many(events[start : start + CHUNK])
        await processor.process_user(user)
    return [change for _, change in await store.prescriptions(user)]


@cache
def crash_free(archetype: str) -> tuple[PrescriptionChanged, ...]:
    return tuple(asyncio.run(_run(course(archetype), {})))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(("improver", "flare", "late_sync", "red_flag", "runner")),
    st.dictionaries(st.integers(0, 40), st.integers(0, 50), max_size=6),
)
def test_any_crashes_give_the_crash_free_history(archetype: str, crashes: dict[int, int]) -> None:
    """Crashes that reload any earlier snapshot leave exactly the crash-free prescriptions."""
    expected = crash_free(archetype)
    assert len(expected) >= 3
    assert tuple(asyncio.run(_run(course(archetype), crashes))) == expected
