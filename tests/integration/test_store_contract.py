"""One contract for every EventStore: MemoryStore and RedisStore both pass it."""

from __future__ import annotations

import re

import pytest

from shared.redis_store import RedisStore
from shared.store import EventStore, MemoryStore, Snapshot, VersionGapError
from tests.integration.events_factory import (
    make_change,
    make_outcome,
    make_pain,
    make_review,
    make_session,
    make_started,
    neighbours,
)

pytestmark = pytest.mark.anyio
POSITION = re.compile(r"^\d+-\d+$")


class StoreContract:
    """Behaviours every EventStore implementation must show."""

    @pytest.fixture
    def store(self) -> EventStore:
        raise NotImplementedError

    async def test_append_accepts_and_returns_a_position(self, store: EventStore) -> None:
        """A new event is accepted with its event_id and a stream-id-shaped position."""
        event = make_pain()
        result = await store.append(event)
        assert result.status == "accepted"
        assert result.event_id == str(event.event_id)
        assert POSITION.match(result.position)

    async def test_same_event_id_is_stored_once(self, store: EventStore) -> None:
        """Appending an event_id again stores nothing and answers duplicate, same position."""
        event = make_pain()
        first = await store.append(event)
        second = await store.append(event)
        assert second.status == "duplicate"
        assert second.position == first.position
        assert [pos for pos, _ in await store.history("u-1")] == [first.position]

    async def test_history_is_in_append_order_and_after_is_exclusive(
        self, store: EventStore
    ) -> None:
        """History returns events oldest first, equal to what was appended; after excludes."""
        events = [make_started(), make_pain(3, 1), make_session(), make_pain(5, 2)]
        positions = [(await store.append(e)).position for e in events]
        history = await store.history("u-1")
        assert [pos for pos, _ in history] == positions
        assert [e for _, e in history] == events
        assert [e for _, e in await store.history("u-1", after=positions[1])] == events[2:]
        assert await store.history("u-1", after=positions[-1]) == []
        assert [e for _, e in await store.history("u-1", count=2)] == events[:2]

    async def test_reviews_and_outcomes_are_stored_like_any_input(self, store: EventStore) -> None:
        """A review (levels, note, reviewer) and an outcome read back equal from every reader."""
        events = [make_started(clinic_id="clinic-a"), make_review(), make_outcome()]
        results = await store.append_many(events)
        assert [r.status for r in results] == ["accepted"] * 3
        assert [e for _, e in await store.history("u-1")] == events
        [answer] = await store.histories([("u-1", results[0].position)])
        assert [e for _, e in answer] == events[1:]
        assert await store.clinic_of("u-1") == "clinic-a"

    async def test_histories_are_per_user(self, store: EventStore) -> None:
        """One user's history never shows another user's events."""
        await store.append(make_pain(user_id="u-1"))
        other = make_pain(user_id="u-2")
        await store.append(other)
        assert [e for _, e in await store.history("u-2")] == [other]
        assert await store.history("nobody") == []

    async def test_histories_read_many_users_at_once(self, store: EventStore) -> None:
        """histories answers each (user, after) as history(user, after) would, in order."""
        first = [make_started(user_id="u-1"), make_pain(3, 1, user_id="u-1")]
        positions = [(await store.append(e)).position for e in first]
        other = make_pain(user_id="u-2")
        await store.append(other)
        answers = await store.histories([("u-2", "0-0"), ("u-1", positions[0]), ("nobody", "0-0")])
        assert [[e for _, e in answer] for answer in answers] == [[other], first[1:], []]
        assert answers[1][0][0] == positions[1]
        assert await store.histories([]) == []

    async def test_histories_stop_where_asked(self, store: EventStore) -> None:
        """``until`` ends each user's read at that position (inclusive); None reads to the end."""
        events = [make_pain(3, i, user_id="u-1") for i in range(4)]
        positions = [r.position for r in await store.append_many(events)]
        other = make_pain(user_id="u-2")
        await store.append(other)
        answers = await store.histories(
            [("u-1", positions[0]), ("u-1", "0-0"), ("u-2", "0-0"), ("u-1", positions[3])],
            until=[positions[2], None, "1-0", positions[1]],
        )
        assert [[e for _, e in answer] for answer in answers] == [events[1:3], events, [], []]

    async def test_append_many_answers_per_item_in_order(self, store: EventStore) -> None:
        """append_many answers each item in order, duplicates in the batch included."""
        before = make_pain(1)
        stored = await store.append(before)
        a, b = make_pain(2, 1), make_pain(3, 2)
        results = await store.append_many([a, before, b, a])
        assert [r.event_id for r in results] == [str(e.event_id) for e in (a, before, b, a)]
        assert [r.status for r in results] == ["accepted", "duplicate", "accepted", "duplicate"]
        assert results[1].position == stored.position
        assert results[3].position == results[0].position
        assert [e for _, e in await store.history("u-1")] == [before, a, b]
        assert await store.append_many([]) == []

    async def test_dedupe_is_per_user(self, store: EventStore) -> None:
        """One event_id from users of one partition is one event each, alone or in a batch;
        each user's retry is a duplicate of their own."""
        second, third = neighbours("u-1", 2)
        mine = make_pain(3)
        theirs = make_pain(6, event_id=mine.event_id, user_id=second)
        results = [await store.append(mine), await store.append(theirs)]
        assert [r.status for r in results] == ["accepted", "accepted"]
        batch = [make_pain(1, event_id=mine.event_id, user_id=third), make_pain(2, 1), mine]
        answers = await store.append_many(batch)
        assert [r.status for r in answers] == ["accepted", "accepted", "duplicate"]
        assert answers[2].position == results[0].position
        assert [e for _, e in await store.history("u-1")] == [mine, batch[1]]
        assert [e for _, e in await store.history(second)] == [theirs]
        assert [e for _, e in await store.history(third)] == [batch[0]]
        again = await store.append(theirs)
        assert (again.status, again.position) == ("duplicate", results[1].position)

    async def test_a_reused_event_id_with_another_payload_is_a_conflict(
        self, store: EventStore
    ) -> None:
        """The user's event_id again with another payload answers conflict with the stored
        event's position and changes nothing (clinic included); the same payload again is
        still a duplicate."""
        first = make_started(clinic_id="clinic-a")
        stored = await store.append(first)
        other = first.model_copy(update={"clinic_id": "clinic-b"})
        result = await store.append(other)
        assert (result.event_id, result.status) == (str(first.event_id), "conflict")
        assert result.position == stored.position
        assert await store.clinic_of("u-1") == "clinic-a"
        again = await store.append(first)
        assert (again.status, again.position) == ("duplicate", stored.position)
        assert [e for _, e in await store.history("u-1")] == [first]

    async def test_append_many_answers_a_conflict_per_item(self, store: EventStore) -> None:
        """In a batch a reused event_id with another payload (stored before, or earlier in
        the batch) is that item's conflict; the other items are stored."""
        a, b, c = make_pain(2), make_pain(3, 1), make_pain(5, 2)
        before = await store.append(a)
        batch = [b, a.model_copy(update={"score": 9}), b.model_copy(update={"context": "morning"})]
        results = await store.append_many([*batch, a, c])
        statuses = [r.status for r in results]
        assert statuses == ["accepted", "conflict", "conflict", "duplicate", "accepted"]
        assert [r.position for r in results[1:4]] == [
            before.position,
            results[0].position,
            before.position,
        ]
        assert [e for _, e in await store.history("u-1")] == [a, b, c]

    async def test_append_change_dedupes(self, store: EventStore) -> None:
        """A PrescriptionChanged is stored once; its repeat answers duplicate, same position."""
        change = make_change(1)
        first = await store.append_change(change)
        second = await store.append_change(change)
        assert (first.status, second.status) == ("accepted", "duplicate")
        assert second.position == first.position
        assert [c for _, c in await store.prescriptions("u-1")] == [change]

    async def test_append_changes_stores_each_once_in_order(self, store: EventStore) -> None:
        """append_changes answers as append_change would for each change, in order."""
        first, second, third = make_change(1), make_change(2), make_change(3)
        before = await store.append_change(first)
        results = await store.append_changes([second, first, third, second])
        assert [r.status for r in results] == ["accepted", "duplicate", "accepted", "duplicate"]
        assert results[1].position == before.position
        assert results[3].position == results[0].position
        assert [c for _, c in await store.prescriptions("u-1")] == [first, second, third]
        assert await store.append_changes([]) == []

    async def test_a_version_is_taken_once_forever(self, store: EventStore) -> None:
        """A change at a version already stored writes nothing, whatever its id."""
        first, second = make_change(1), make_change(2)
        await store.append_changes([first, second])
        again = make_change(2)  # decided again after a crash, its dedupe key long gone
        result = await store.append_change(again)
        assert result.status == "duplicate"
        assert result.position == (await store.prescriptions("u-1"))[1][0]
        assert (await store.append_change(make_change(1))).status == "duplicate"
        assert [c for _, c in await store.prescriptions("u-1")] == [first, second]

    async def test_a_version_gap_is_refused(self, store: EventStore) -> None:
        """A change that would skip a version raises VersionGapError and writes nothing."""
        await store.append_change(make_change(1))
        with pytest.raises(VersionGapError, match="version 3 after 1"):
            await store.append_change(make_change(3))
        with pytest.raises(VersionGapError):
            await store.append_change(make_change(2, user_id="u-2"))
        assert [c.version for _, c in await store.prescriptions("u-1")] == [1]
        assert await store.prescriptions("u-2") == []

    async def test_prescriptions_and_latest(self, store: EventStore) -> None:
        """prescriptions lists changes oldest first (after exclusive); latest is the newest."""
        assert await store.latest_prescription("u-1") is None
        assert await store.prescriptions("u-1") == []
        changes = [make_change(v) for v in (1, 2, 3)]
        positions = [(await store.append_change(c)).position for c in changes]
        assert [c for _, c in await store.prescriptions("u-1")] == changes
        assert [c for _, c in await store.prescriptions("u-1", after=positions[0])] == changes[1:]
        assert await store.latest_prescription("u-1") == changes[-1]
        assert await store.history("u-1") == []

    async def test_an_intake_enrols_only_a_user_nobody_holds(self, store: EventStore) -> None:
        """A RehabStarted naming a clinic enrols a user no clinic holds, and never moves one."""
        assert await store.clinic_of("u-1") is None
        await store.append(make_started(clinic_id="clinic-a"))
        assert await store.clinic_of("u-1") == "clinic-a"
        await store.append_many([make_pain(), make_started(clinic_id=None)])
        assert await store.clinic_of("u-1") == "clinic-a"
        await store.append(make_started(clinic_id="clinic-b"))
        await store.append_many([make_started(clinic_id="clinic-b")])
        assert await store.clinic_of("u-1") == "clinic-a"
        assert await store.clinic_of("u-2") is None

    async def test_an_intake_that_may_not_enrol_leaves_the_clinic(self, store: EventStore) -> None:
        """With enrols=False (a device's write) a RehabStarted naming a clinic enrols nobody."""
        await store.append(make_started(clinic_id="clinic-a"), enrols=False)
        await store.append_many([make_started(clinic_id="clinic-a")], enrols=False)
        assert await store.clinic_of("u-1") is None
        assert len(await store.history("u-1")) == 2

    async def test_duplicate_does_not_change_the_clinic(self, store: EventStore) -> None:
        """A duplicate RehabStarted is not applied again, clinic included."""
        first = make_started(clinic_id="clinic-a")
        await store.append(first)
        await store.unenrol("u-1", None, "operator")
        assert (await store.append(first)).status == "duplicate"
        assert await store.clinic_of("u-1") is None

    async def test_enrolments_transfer_and_end_with_a_record_each(self, store: EventStore) -> None:
        """enrol sets the clinic (moving the user from another), unenrol ends it only for the
        clinic that holds the user (or any, for None); each change is recorded, nothing else."""
        first = await store.enrol("u-1", "clinic-a", "clinic:clinic-a")
        assert (first.user_id, first.clinic_id, first.previous) == ("u-1", "clinic-a", None)
        moved = await store.enrol("u-1", "clinic-b", "clinic:clinic-b")
        assert (moved.clinic_id, moved.previous, moved.by) == (
            "clinic-b",
            "clinic-a",
            "clinic:clinic-b",
        )
        assert await store.clinic_of("u-1") == "clinic-b"
        assert await store.unenrol("u-1", "clinic-a", "clinic:clinic-a") is None
        assert await store.clinic_of("u-1") == "clinic-b"
        ended = await store.unenrol("u-1", "clinic-b", "clinic:clinic-b")
        assert ended is not None
        assert (ended.clinic_id, ended.previous) == (None, "clinic-b")
        assert await store.clinic_of("u-1") is None
        assert await store.unenrol("u-1", None, "operator") is None
        again = await store.enrol("u-1", "clinic-c", "clinic:clinic-c")
        assert await store.unenrol("u-1", None, "operator") is not None
        records = await store.enrolments("u-1")
        assert records[:4] == [first, moved, ended, again]
        assert [(r.clinic_id, r.by) for r in records[4:]] == [(None, "operator")]
        assert first.at <= moved.at <= ended.at
        positions = [tuple(int(x) for x in r.position.split("-")) for r in records]
        assert positions == sorted(positions)
        assert await store.enrolments("u-2") == []

    async def test_an_intake_after_an_enrolment_moves_nobody(self, store: EventStore) -> None:
        """Once a clinic enrolled the user, an intake naming another clinic changes nothing."""
        await store.enrol("u-1", "clinic-a", "clinic:clinic-a")
        await store.append(make_started(clinic_id="clinic-b"))
        assert await store.clinic_of("u-1") == "clinic-a"
        assert len(await store.enrolments("u-1")) == 1

    async def test_snapshot_round_trip(self, store: EventStore) -> None:
        """A saved snapshot loads back equal; saving again replaces it."""
        assert await store.load_snapshot("u-1") is None
        snap = Snapshot(data=b"\x00\xffstate", position="1-0", rules_version="1", state_version=2)
        await store.save_snapshot("u-1", snap)
        assert await store.load_snapshot("u-1") == snap
        newer = Snapshot(data=b"{}", position="5-1", rules_version="2", state_version=3)
        await store.save_snapshot("u-1", newer)
        assert await store.load_snapshot("u-1") == newer
        assert await store.load_snapshot("u-2") is None

    async def test_save_snapshots_saves_each_user(self, store: EventStore) -> None:
        """save_snapshots replaces each named user's snapshot and leaves the others alone."""
        old = Snapshot(data=b"old", position="1-0", rules_version="1", state_version=1)
        await store.save_snapshot("u-3", old)
        a = Snapshot(data=b"a", position="2-0", rules_version="1", state_version=1)
        b = Snapshot(data=b"\x00b", position="3-1", rules_version="2", state_version=2)
        await store.save_snapshots([("u-1", a), ("u-2", b)])
        assert await store.load_snapshot("u-1") == a
        assert await store.load_snapshot("u-2") == b
        assert await store.load_snapshot("u-3") == old
        await store.save_snapshots([])

    async def test_positions_increase_within_a_user(self, store: EventStore) -> None:
        """Positions of one user's events strictly increase in append order."""
        results = await store.append_many([make_pain(minutes=i) for i in range(50)])
        keys = [tuple(int(x) for x in r.position.split("-")) for r in results]
        assert keys == sorted(keys)
        assert len(set(keys)) == 50


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> EventStore:
        return MemoryStore()


class TestRedisStore(StoreContract):
    @pytest.fixture
    def store(self, redis_store: RedisStore) -> EventStore:
        return redis_store


class TestRedisClusterStore(StoreContract):
    """The same contract on a local 3-master Redis Cluster (keys hash-tagged per partition)."""

    @pytest.fixture
    def store(self, cluster_store: RedisStore) -> EventStore:
        return cluster_store
