"""make clinical: the closed loop through the engine, and each metric on hand-made courses."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

from services.clinical import report
from services.clinical.__main__ import main
from services.clinical.cohort import Outcome, measured, simulate, versions
from services.clinical.driver import Emitted, EngineFeed, Life, Run, run_patient
from services.clinical.facts import facts
from services.clinical.metrics import Target, targets
from services.prescriber.arrivals import fold_history
from services.prescriber.engine.rules import RULE_SETS, builtin
from services.replay.rulesets import load_rules
from shared.cohort.outbox import Arrival
from shared.cohort.persona import make_persona, personas
from shared.cohort.virtual import SessionTruth, Truth
from shared.events import PainLogged, PrescriptionChanged, Referral, SessionCompleted

START = datetime(2026, 1, 5, 9, tzinfo=UTC)
BUILD = ("cat_camel", "rib_closure", "spine_curl_bridge", "knee_hugs", "walking")
SEED = 3


def at(day: int, hour: int = 8) -> datetime:
    """A moment of program ``day`` (the hand-made patients live in UTC)."""
    return datetime(2026, 1, 5, hour, tzinfo=UTC) + timedelta(days=day)


def change(
    day: int,
    kind: str = "started",
    phase: str = "build",
    level: int = 1,
    referral: Referral | None = None,
    caused_by: UUID | None = None,
) -> Emitted:
    """A change emitted at 08:00 on ``day``, its exercises as the phase prescribes them."""
    rules = builtin("1")
    ids = {"build": BUILD, "protect": ("walking",), "refer": ()}.get(
        phase, ("cat_camel", "knee_hugs", "walking")
    )
    levels = level if phase == "build" else 1
    rx = PrescriptionChanged.model_validate(
        {
            "event_id": uuid4(),
            "user_id": "u",
            "occurred_at": at(day),
            "version": 1,
            "phase": phase,
            "stage": "acute",
            "change": kind,
            "exercises": tuple(rules.prescribed(e, levels) for e in ids),
            "sessions_per_week": 3,
            "reasons": (),
            "referral": referral,
            "caused_by": caused_by or uuid4(),
            "rules_version": "test",
        }
    )
    return Emitted(at(day), rx)


def session(day: int, excess: float = -1.0) -> SessionTruth:
    """A session at 12:00 on ``day``; positive ``excess`` is an overload."""
    return SessionTruth(day, f"s{day}", at(day, 12), 2.0, 2.0 - excess, excess, 3, 1, False)


def make_run(
    changes: list[Emitted],
    archetype: str = "improver",
    flares: list[tuple[int, int]] | None = None,
    sessions: list[SessionTruth] | None = None,
) -> Run:
    """A hand-made run of a UTC patient who started on START."""
    persona = dataclasses.replace(make_persona(0, 0), archetype=archetype, tz=UTC, started_at=START)
    truth = Truth(archetype, flares or [], [], sessions=sessions or [])
    return Run(persona, "test", 12, truth, changes=changes)


def routine(reason: str) -> Referral:
    return Referral(urgency="routine", reason=reason)


def test_facts_count_progressions_deloads_and_the_final_level() -> None:
    """First progression day, deload/resume counts, and the level of the last core prescription."""
    run = make_run(
        [
            change(0),
            change(9, "progressed", level=2),
            change(20, "deloaded", "flare"),
            change(24, "resumed", level=1),
            change(40, "progressed", level=2),
            change(
                50, "referred", "refer", referral=Referral(urgency="urgent", reason="red flags")
            ),
        ]
    )
    found = facts(run)
    assert found.first_progression == 9
    assert (found.deloads, found.resumes, found.changes) == (1, 1, 6)
    assert found.final_phase == "refer"
    assert found.final_level == 2
    assert found.weekly_levels[:4] == (1, 2, 1, 1)  # end of weeks 1-4: days 6, 13, 20, 27
    assert found.weekly_levels[-1] is None  # referred with nothing to do


def test_flare_latency_counts_from_the_true_start_and_progressions_inside_count() -> None:
    """Detected one day late; missed while a step up came; already in flare counts as on time."""
    run = make_run(
        [
            change(0),
            change(11, "deloaded", "flare"),
            change(18, "resumed"),
            change(31, "progressed", level=2),
            change(58, "deloaded", "flare"),
        ],
        archetype="flare",
        flares=[(10, 16), (30, 36), (60, 66)],
    )
    found = facts(run).flares
    assert [f.latency for f in found] == [1, None, 0]
    assert [f.progressions for f in found] == [0, 1, 0]
    assert all(f.detectable for f in found)


def test_a_flare_in_the_protect_week_is_not_detectable() -> None:
    """A flare that starts while protect is in force cannot be eased off further: not counted."""
    run = make_run([change(0, phase="protect")], archetype="flare", flares=[(3, 8)])
    assert not facts(run).flares[0].detectable


def test_an_overload_is_answered_unless_more_load_comes_within_two_sessions() -> None:
    """A step up before either of the next two sessions fails; a step down or a hold answers."""
    sessions = [session(5, excess=0.5), session(7), session(9), session(12)]
    cases = {
        "progressed before the next": (change(6, "progressed", level=3), False, False),
        "regressed before the next": (change(6, "regressed", level=1), True, True),
        "deloaded before the second": (change(8, "deloaded", "flare"), True, True),
        "progressed after two": (change(10, "progressed", level=3), True, False),
    }
    for name, (then, answered, stepped_down) in cases.items():
        found = facts(make_run([change(0, level=2), then], sessions=sessions)).overloads
        assert len(found) == 1, name
        assert (found[0].answered, found[0].stepped_down) == (answered, stepped_down), name


def test_the_end_of_the_course_stands_in_for_sessions_that_never_came() -> None:
    """With one session left after an overload, a later step up still counts against it."""
    sessions = [session(70, excess=0.2), session(72)]
    run = make_run([change(0), change(80, "progressed", level=2)], sessions=sessions)
    assert not facts(run).overloads[0].answered


def test_referrals_are_listed_by_reason_and_day_when_new() -> None:
    """Each new referral counts once with its day; red flags are named by urgency."""
    run = make_run(
        [
            change(0, referral=routine("start_back_high_risk")),
            change(3, "progressed", level=2, referral=routine("start_back_high_risk")),
            change(43, "referred", referral=routine("no_improvement_6_weeks")),
            change(60, "referred", "refer", referral=Referral(urgency="emergency", reason="x")),
        ],
        archetype="plateau",
    )
    found = facts(run)
    assert found.referrals == (
        ("start_back_high_risk", 0),
        ("no_improvement_6_weeks", 43),
        ("red flags (emergency)", 60),
    )
    assert found.no_improvement_day == 43


def test_a_red_flag_is_referred_on_its_event_or_already_was() -> None:
    """The flag's own change refers; without one, an earlier red-flag referral still counts."""
    first, second, missed = uuid4(), uuid4(), uuid4()
    urgent = Referral(urgency="urgent", reason="red flags: fever_or_unwell")
    run = make_run([change(0), change(10, "referred", "refer", referral=urgent, caused_by=first)])
    run.truth.red_flag_events += [first, second]
    run.arrived_at[second] = at(12)
    assert facts(run).red_flags_referred == (True, True)
    run = make_run([change(0)])
    run.truth.red_flag_events.append(missed)
    run.arrived_at[missed] = at(12)
    assert facts(run).red_flags_referred == (False,)


def test_targets_measure_each_threshold_on_its_side() -> None:
    """At least and at most thresholds; nothing measured is never met; rows are 4-tuples."""
    assert Target("a", 0.9, 0.9, at_least=True).met
    assert not Target("a", 0.89, 0.9, at_least=True).met
    assert Target("b", 0.5, 0.5, at_least=False).met
    assert not Target("b", None, 0.5, at_least=False).met
    assert Target("c", 3, 3, at_least=True).row() == ("c", 3, 3, True)


def test_targets_on_a_tiny_cohort() -> None:
    """Two improvers and a plateau patient give the figures counted by hand."""
    improver = make_run(
        [change(0), change(9, "progressed", level=2), change(16, "progressed", level=3)]
    )
    late = make_run(
        [
            change(0),
            change(30, "progressed", level=2),
            change(35, "referred", level=2, referral=routine("x")),
        ]
    )
    plateau = make_run(
        [change(0), change(45, "referred", referral=routine("no_improvement_6_weeks"))], "plateau"
    )
    measured = {t.name: t.measured for t in targets([facts(r) for r in (improver, late, plateau)])}
    assert measured["improvers: median final level"] == 2.5
    assert measured["improvers: progressed by program week 4"] == 0.5
    assert measured["plateau: referred no_improvement_6_weeks on program days 42-49"] == 1.0
    assert measured["improvers: referred for anything but red flags or STarT Back"] == 0.5
    assert measured["improvers: such referrals before program day 42"] == 1
    assert measured["PrescriptionChanged per patient-week"] == 8 / 36
    assert measured["simulated flares detected within 2 days of their start"] is None


def test_the_driver_folds_exactly_as_live_processing_would() -> None:
    """A late-syncing patient's changes equal fold_history over the same arrivals (refolds too)."""
    persona = personas(3, SEED, archetypes={"late_sync": 1.0})[0]
    rules = builtin(versions()[0])
    run = run_patient(persona, SEED, 12, rules, keep=True)
    assert run.arrivals is not None
    assert run.late > 0
    assert run.refolds > 0
    history = fold_history(persona.user_id, [a.event for a in run.arrivals], rules)
    assert [e.change for e in run.changes] == history.changes


def test_the_loop_is_closed_the_patient_does_what_the_engine_emitted() -> None:
    """Every session of an online patient is the prescription in force when it began."""
    for persona in personas(4, SEED, archetypes={"improver": 1.0}):
        run = run_patient(persona, SEED, 12, builtin(versions()[0]), keep=True)
        assert run.arrivals is not None
        done = {e.session_id: e for a in run.arrivals if isinstance(e := a.event, SessionCompleted)}
        assert run.truth.sessions
        for s in run.truth.sessions:
            rx = run.in_force(s.at)
            assert rx is not None
            assert s.rx_version == rx.version
            if done[s.session_id].completed:
                assert [x.exercise_id for x in done[s.session_id].exercises] == [
                    x.exercise_id for x in rx.exercises
                ]


@cache
def _small(seed: int) -> Outcome:
    return simulate(24, seed)


def test_every_built_in_rule_set_runs_side_by_side() -> None:
    """The cohort runs under each rule set RULE_SETS holds, each patient once per set."""
    outcome = _small(SEED)
    assert list(outcome.facts) == versions() == sorted(RULE_SETS, key=lambda v: (len(v), v))
    assert all(len(found) == 24 for found in outcome.facts.values())


def test_same_seed_gives_the_same_figures() -> None:
    """Two runs with the same seed give equal facts and equal target rows."""
    again = simulate(24, SEED)
    for version, found in _small(SEED).facts.items():
        assert again.facts[version] == found
        assert [t.row() for t in targets(again.facts[version])] == [t.row() for t in targets(found)]


def test_measured_gives_the_targets_of_one_rule_set_on_its_cohort() -> None:
    """measured(version) is targets() of that rule set's facts, one row per target."""
    version = versions()[-1]
    rows = [t.row() for t in measured(version, n=24, seed=SEED)]
    assert rows == [t.row() for t in targets(_small(SEED).facts[version])]
    assert len(rows) == 11


def test_the_report_replaces_only_its_own_block(tmp_path: Path) -> None:
    """Text around the markers survives a rewrite; a file without them gets the block appended."""
    doc = tmp_path / "CLINICAL.md"
    doc.write_text(f"# Title\n\nbefore\n\n{report.BEGIN}\nold\n{report.END}\n\nafter\n")
    report.write(doc, f"{report.BEGIN}\nnew\n{report.END}")
    assert doc.read_text() == f"# Title\n\nbefore\n\n{report.BEGIN}\nnew\n{report.END}\n\nafter\n"
    bare = tmp_path / "NEW.md"
    report.write(bare, f"{report.BEGIN}\nx\n{report.END}")
    assert bare.read_text() == f"{report.BEGIN}\nx\n{report.END}\n"


def test_the_rendered_block_has_a_target_row_per_target_and_a_table_per_archetype() -> None:
    """The generated markdown lists every target and every archetype present."""
    outcome = _small(SEED)
    block = report.render(outcome, SEED, 12, {"clinical-levels.png": "levels"})
    for target in targets(next(iter(outcome.facts.values()))):
        assert f"| {target.name} |" in block
    for archetype in {p.archetype for p in outcome.patients}:
        assert f"### Archetype `{archetype}`" in block


def test_a_what_if_prints_the_targets_and_writes_nothing(tmp_path: Path) -> None:
    """``--set`` runs rule set 2 with a value changed, under its own name, and writes nothing."""
    assert main(["--patients", "12", "--set", "tolerance=0", "--docs", str(tmp_path)]) == 0
    assert list(tmp_path.iterdir()) == []
    changed = simulate(12, 5, weeks=2, rule_sets=[load_rules("2", ["tolerance=0"])])
    assert list(changed.facts) == ["what-if"]


class Watched(Life):
    """A life that notes the moment of each read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.moments: list[datetime] = []

    def read(self, at: datetime) -> PrescriptionChanged | None:
        self.moments.append(at)
        return super().read(at)


class Tally:
    """A feed that keeps what it is given and, at each read, how much it had been given."""

    def __init__(self, inner: EngineFeed) -> None:
        self.inner = inner
        self.delivered: list[Arrival] = []
        self.seen_at_reads: list[int] = []

    def deliver(self, arrivals: Sequence[Arrival]) -> list[PrescriptionChanged]:
        self.delivered += arrivals
        return self.inner.deliver(arrivals)

    def latest(self) -> PrescriptionChanged | None:
        self.seen_at_reads.append(len(self.delivered))
        return self.inner.latest()


def test_a_read_comes_after_everything_that_arrived_by_then_and_nothing_later() -> None:
    """At each read the feed holds exactly the arrivals up to the read's moment."""
    persona = personas(3, SEED, archetypes={"late_sync": 1.0})[1]
    rules = builtin(versions()[-1])
    feed = Tally(EngineFeed(persona.user_id, rules))
    life = Watched(persona, SEED, 3, feed, rules.rules_version, keep=True)
    for day in range(life.days):
        life.live(day)
    run = life.finish()
    assert run.arrivals == feed.delivered
    assert run.reads == len(life.moments) == len(feed.seen_at_reads) > 10
    for moment, seen in zip(life.moments, feed.seen_at_reads, strict=True):
        assert all(a.at <= moment for a in feed.delivered[:seen])
        assert all(a.at > moment for a in feed.delivered[seen:])


def test_the_shared_day_loop_gives_what_run_patient_gives() -> None:
    """A life against an engine feed, lived by hand, records the run run_patient records."""
    persona = personas(2, SEED)[1]
    rules = builtin(versions()[-1])
    life = Life(persona, SEED, 4, EngineFeed(persona.user_id, rules), rules.rules_version)
    for day in range(life.days):
        life.live(day)
    by_hand = life.finish()
    alone = run_patient(persona, SEED, 4, rules)
    assert by_hand.changes == alone.changes
    assert (by_hand.events, by_hand.late, by_hand.reads, by_hand.scores) == (
        alone.events,
        alone.late,
        alone.reads,
        alone.scores,
    )


def _pain(hour: int, arrived: int, context: str = "morning") -> Arrival:
    event = PainLogged.model_validate(
        {
            "event_id": uuid4(),
            "user_id": "u",
            "occurred_at": at(1, hour),
            "score": 4,
            "context": context,
        }
    )
    return Arrival(at(1, arrived), event)


def test_noting_arrivals_counts_late_ones_and_keeps_baseline_and_morning_scores() -> None:
    """An event older than one already arrived is late; scores keep their program day."""
    run = make_run([])
    run.note([_pain(9, 10), _pain(7, 11), _pain(12, 12, "during_exercise")])
    assert (run.events, run.late) == (3, 1)
    assert run.scores == [(1, 4), (1, 4)]


def test_a_recorded_change_is_emitted_at_its_cause_arrival() -> None:
    """record() dates each change by when the event that caused it reached the server."""
    run = make_run([])
    cause = _pain(9, 15)
    run.note([cause])
    rx = change(1, caused_by=cause.event.event_id).change
    run.record([rx])
    assert run.changes == [Emitted(at(1, 15), rx)]


def test_target_rows_give_name_wanted_and_one_cell_per_rule_set() -> None:
    """Each row is a target's name, its threshold, then what each rule set measured."""
    measured = {
        "1": [Target("a", 0.5, 0.9, at_least=True, percent=True)],
        "2": [Target("a", 0.95, 0.9, at_least=True, percent=True)],
    }
    assert report.target_rows(measured) == [["a", "≥ 90%", "50% not met", "95% met"]]
    assert report.target_rows(measured, "**not met**")[0][2] == "50% **not met**"
