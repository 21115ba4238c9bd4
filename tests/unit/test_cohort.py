"""The simulated cohort: deterministic, valid, in arrival order, and true to its archetypes."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from functools import cache
from itertools import pairwise
from statistics import median

import pytest

from shared import codec
from shared.cohort import ARCHETYPES, Arrival, Patient, events, history, patients, simulate
from shared.events import Input, PainLogged, RehabStarted, SessionCompleted

SEED = 11
N = 240  # enough for every archetype at the default weights


@cache
def _cohort() -> tuple[Arrival, ...]:
    return tuple(simulate(N, seed=SEED))


@cache
def _profiles() -> dict[str, Patient]:
    return {p.user_id: p for p in patients(N, seed=SEED)}


def _by_user() -> dict[str, list[Input]]:
    users: dict[str, list[Input]] = defaultdict(list)
    for arrival in _cohort():
        users[arrival.event.user_id].append(arrival.event)
    return users


def _of(archetype: str) -> list[tuple[Patient, list[Input]]]:
    users = _by_user()
    return [(p, users[uid]) for uid, p in _profiles().items() if p.archetype == archetype]


def test_same_seed_gives_byte_identical_events() -> None:
    """Two runs with the same arguments produce the same events, ids included."""
    first = [codec.dumps(e) for e in events(15, seed=4)]
    assert first == [codec.dumps(e) for e in events(15, seed=4)]


def test_different_seeds_give_different_events() -> None:
    """Another seed gives other patients and other event ids."""
    a = [codec.dumps(e) for e in events(5, seed=1)]
    b = [codec.dumps(e) for e in events(5, seed=2)]
    assert a != b
    assert {e.event_id for e in events(5, seed=1)}.isdisjoint(e.event_id for e in events(5, seed=2))


def test_every_event_round_trips_through_the_codec() -> None:
    """Every event is a valid contract event and decodes back equal."""
    for arrival in _cohort():
        assert codec.loads(codec.dumps(arrival.event)) == arrival.event


def test_event_ids_are_unique() -> None:
    """No two events of a cohort share an event_id."""
    ids = [a.event.event_id for a in _cohort()]
    assert len(set(ids)) == len(ids)


def test_arrivals_are_in_time_order_and_never_before_occurrence() -> None:
    """Arrival times never decrease, and no event arrives before it happened."""
    cohort = _cohort()
    assert all(a.at <= b.at for a, b in pairwise(cohort))
    assert all(a.at >= a.event.occurred_at for a in cohort)


def test_merge_equals_stable_sort_of_each_patient_history() -> None:
    """The cohort is the patients' histories stably sorted by arrival time."""
    everyone = [a for p in patients(30, seed=3) for a in history(p, seed=3)]
    expected = sorted(everyone, key=lambda a: a.at)
    assert [a.event for a in simulate(30, seed=3)] == [a.event for a in expected]


def test_a_patient_does_not_depend_on_cohort_size() -> None:
    """Patient i is the same profile and history in a cohort of 3 or of 40."""
    small, large = patients(3, seed=8), patients(40, seed=8)
    assert small == large[:3]
    assert list(history(small[2], seed=8)) == list(history(large[2], seed=8))


def test_late_sync_arrival_order_differs_from_occurrence_order() -> None:
    """Every late_sync patient has events that arrive out of occurred_at order."""
    late = _of("late_sync")
    assert late
    for _, evs in late:
        assert evs != sorted(evs, key=lambda e: e.occurred_at)


def test_online_patients_arrive_in_occurrence_order() -> None:
    """Patients whose device stays online arrive in the order things happened."""
    for _, evs in _of("improver"):
        assert evs == sorted(evs, key=lambda e: e.occurred_at)


def test_default_weights_give_every_archetype() -> None:
    """With default weights a cohort of a few hundred holds every archetype."""
    assert {p.archetype for p in patients(N, seed=SEED)} == set(ARCHETYPES)


def test_archetype_weights_select_and_reject_unknown_names() -> None:
    """Weights choose the mix; an unknown archetype name is a ValueError."""
    assert {p.archetype for p in patients(20, archetypes={"runner": 1.0})} == {"runner"}
    with pytest.raises(ValueError, match="unknown archetypes"):
        simulate(3, archetypes={"sprinter": 1.0})


def test_red_flag_patients_report_a_red_flag() -> None:
    """Each red_flag patient reports a red flag at intake or in a pain log."""
    for _, evs in _of("red_flag"):
        flagged = [e for e in evs if isinstance(e, RehabStarted | PainLogged) and e.red_flags]
        assert flagged


def test_other_patients_report_no_red_flag() -> None:
    """Only red_flag patients ever report a red flag."""
    for uid, evs in _by_user().items():
        if _profiles()[uid].archetype != "red_flag":
            assert not any(isinstance(e, RehabStarted | PainLogged) and e.red_flags for e in evs)


def test_runners_have_goal_running_and_end_up_running() -> None:
    """Runners start with goal running and log running sessions late in the course."""
    for _, evs in _of("runner"):
        started = [e for e in evs if isinstance(e, RehabStarted)]
        assert all("running" in e.goals for e in started)
        sessions = [e for e in evs if isinstance(e, SessionCompleted)]
        assert any(x.exercise_id == "running" for s in sessions for x in s.exercises)


def test_skippers_do_fewer_than_half_their_sessions() -> None:
    """A skipper logs fewer sessions than sessions_per_week * weeks / 2."""
    for patient, evs in _of("skipper"):
        done = sum(isinstance(e, SessionCompleted) for e in evs)
        assert done < patient.sessions_per_week * 12 / 2


def test_user_ids_match_the_contract_pattern() -> None:
    """Every user_id matches [A-Za-z0-9_-]{1,64}."""
    pattern = re.compile(r"[A-Za-z0-9_-]{1,64}")
    assert all(pattern.fullmatch(uid) for uid in _by_user())


def test_first_event_of_each_user_is_rehab_started() -> None:
    """By occurred_at, each user's history opens with RehabStarted."""
    for evs in _by_user().values():
        assert isinstance(min(evs, key=lambda e: e.occurred_at), RehabStarted)


def test_pain_logs_of_a_session_name_a_logged_session() -> None:
    """during/after logs carry the session_id of a SessionCompleted of the same user."""
    for evs in _by_user().values():
        sessions = {e.session_id for e in evs if isinstance(e, SessionCompleted)}
        linked = {e.session_id for e in evs if isinstance(e, PainLogged) and e.session_id}
        assert linked <= sessions


def test_history_length_is_about_twelve_weeks_of_logging() -> None:
    """A patient who completes the course logs roughly 150-300 events."""
    for archetype in ("improver", "plateau", "flare", "runner"):
        for _, evs in _of(archetype):
            assert 110 <= len(evs) <= 320
            span = max(e.occurred_at for e in evs) - min(e.occurred_at for e in evs)
            assert span.days >= 80


def _daily(evs: list[Input], first: datetime) -> dict[int, int]:
    return {
        (e.occurred_at - first).days: e.score
        for e in evs
        if isinstance(e, PainLogged) and e.context in ("morning", "baseline")
    }


def test_improvers_fall_and_plateaus_stay() -> None:
    """Improvers end with pain of 2 or less; plateau patients stay at 4 or more."""
    for archetype, low, high in (("improver", 0, 2), ("plateau", 4, 10)):
        for patient, evs in _of(archetype):
            last_weeks = [s for d, s in _daily(evs, patient.started_at).items() if d >= 70]
            assert low <= median(last_weeks) <= high


def test_flare_patients_flare_up() -> None:
    """Each flare patient has a score >= 2 above the week before it, or two days >= 7."""
    for patient, evs in _of("flare"):
        daily = _daily(evs, patient.started_at)
        jumps = [
            d
            for d, s in daily.items()
            if (week := [daily[x] for x in range(d - 7, d) if x in daily]) and s >= median(week) + 2
        ]
        two_sevens = [d for d, s in daily.items() if s >= 7 and daily.get(d + 1, 0) >= 7]
        assert jumps or two_sevens


def test_some_patients_are_start_back_high_risk() -> None:
    """A few patients answer STarT Back as high risk (items 5-9 sum >= 4)."""
    profiles = patients(N, seed=SEED)
    risky = [p for p in profiles if p.high_risk]
    assert 0 < len(risky) < len(profiles) / 3
    assert all(p.start_back is not None and sum(p.start_back[4:]) >= 4 for p in risky)


def test_times_are_timezone_aware_with_some_non_utc_patients() -> None:
    """Every time carries an offset; arrivals are UTC and a few patients log at +01:00."""
    offsets = {a.event.occurred_at.utcoffset() for a in _cohort()}
    assert None not in offsets
    assert len(offsets) > 1
    assert all(a.at.tzinfo is UTC for a in _cohort())
