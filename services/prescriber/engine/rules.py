"""Every number and switch of RULES.md as a field of one frozen ``RuleSet``.

The defaults are rule set "2", the rules new decisions are made under.
Rule set "1" is the defaults with the values of ``V1_VALUES``: the table at
the end of RULES.md, field by field, so that a replay under it gives exactly
the prescriptions v1 gave. Operators replay history under other values with
``RuleSet(**overrides)`` or ``RuleSet.model_validate(mapping)``; an unknown
name is a validation error, so a typo can never silently fall back to the
default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import PrescribedExercise


class Rung(BaseModel):
    """One level of an exercise ladder: the name (with its variant) and the dose."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    sets: int | None = None
    reps: int | None = None
    hold_seconds: int | None = None
    minutes: int | None = None


def _aerobic(name: str) -> tuple[Rung, ...]:
    return tuple(Rung(name=name, minutes=m) for m in (10, 15, 20, 25, 30))


def _ladders() -> dict[str, tuple[Rung, ...]]:
    rib, bridge = "Rib Closure (moving arms)", "Spine Curl Bridge"
    return {
        "cat_camel": tuple(
            Rung(name="Cat/Camel", sets=s, reps=r)
            for s, r in ((1, 8), (2, 8), (2, 10), (3, 10), (3, 12))
        ),
        "rib_closure": (
            Rung(name=rib, sets=2, reps=6),
            Rung(name=rib, sets=3, reps=6),
            Rung(name=rib, sets=3, reps=8),
            Rung(name=f"{rib} + leg lift", sets=3, reps=8),
            Rung(name=f"{rib} + leg lift", sets=3, reps=10),
        ),
        "spine_curl_bridge": (
            Rung(name=bridge, sets=2, reps=8),
            Rung(name=bridge, sets=3, reps=8),
            Rung(name=bridge, sets=3, reps=12),
            Rung(name=f"{bridge} (5 s hold)", sets=3, reps=8, hold_seconds=5),
            Rung(name=f"{bridge} (single leg)", sets=3, reps=8),
        ),
        "knee_hugs": tuple(Rung(name="Knee Hugs", sets=3, hold_seconds=30) for _ in range(5)),
        "bird_dog": (
            Rung(name="Bird Dog", sets=2, reps=6),
            Rung(name="Bird Dog", sets=3, reps=6),
            Rung(name="Bird Dog", sets=3, reps=8),
            Rung(name="Bird Dog", sets=3, reps=10),
            Rung(name="Bird Dog (3 s hold)", sets=3, reps=10, hold_seconds=3),
        ),
        "walking": _aerobic("Walking"),
        "swimming": _aerobic("Swimming"),
        "cycling": _aerobic("Cycling"),
        "running": (
            Rung(name="Walk-run 5x(4 min walk + 1 min run)", minutes=25),
            Rung(name="Walk-run 5x(3 min walk + 2 min run)", minutes=25),
            Rung(name="Walk-run 5x(2 min walk + 3 min run)", minutes=25),
            Rung(name="Walk-run 4x(1 min walk + 4 min run)", minutes=20),
            Rung(name="Run 20 min continuous", minutes=20),
        ),
    }


@dataclass(frozen=True, slots=True)
class Spans:
    """The rule set's time windows as timedeltas, computed once per rule set."""

    baseline: timedelta
    during_link: timedelta
    after: timedelta
    morning_from: timedelta
    morning_until: timedelta
    step_spacing: timedelta
    adherence: timedelta
    flare_window: timedelta
    scores_kept: timedelta
    run_build: timedelta
    regress_quiet: timedelta
    flare_rise_gap: timedelta
    radicular_window: timedelta
    first_baseline: timedelta | None
    flare_refer: timedelta | None


class RuleSet(BaseModel):
    """The prescription rules; section numbers refer to RULES.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules_version: str = "2"
    # 1. red flags
    emergency_flags: tuple[str, ...] = (
        "saddle_numbness",
        "bladder_bowel_change",
        "progressive_leg_weakness",
        "bilateral_leg_symptoms",
        "sexual_dysfunction",
    )
    urgent_flags: tuple[str, ...] = (
        "fever_or_unwell",
        "cancer_history",
        "unexplained_weight_loss",
        "major_trauma",
        "constant_night_pain",
        "immunosuppression",
        "iv_drug_use",
        "long_term_steroids",
        "osteoporosis",
        "thoracic_pain",
    )
    #: the referral's reason text; ``{flags}`` is the flags, comma-separated
    emergency_reason: str = "go to an emergency department now (red flags: {flags})"
    urgent_reason: str = (
        "see a clinician within 24 hours before exercising again (red flags: {flags})"
    )
    #: leg pain below the knee on this many days within the window: radicular review (0: off)
    radicular_days: int = Field(default=2, ge=0)
    radicular_window_days: float = 7
    # 2. phase and stage
    protect_causes: tuple[str, ...] = ("sprain_strain",)
    protect_days: int = 7
    #: sessions a week prescribed in protect and flare (None: the patient's own number)
    protect_sessions_per_week: int | None = 7
    flare_sessions_per_week: int | None = 7
    subacute_from_days: int = 42
    chronic_from_days: int = 84
    # 3. baseline
    baseline_hours: float = 72
    # 4. session verdicts
    during_link_hours: float = 2
    after_hours: float = 6
    morning_from_hours: float = 6
    morning_until_hours: float = 36
    missing_baseline: float = 2
    #: a score "at baseline" is at most baseline + tolerance
    tolerance: float = 1
    #: a baseline log in the next-day window stands in for a missing morning log
    next_day_baseline: bool = True
    green_during_below: int = 3
    #: C1 is also met when resting pain is at least green_during_below and during <= it
    green_during_at_rest: bool = True
    #: a missing after log does not block GREEN when the next day is known and at baseline
    after_optional: bool = True
    red_during_at: int = 5
    red_after_delta: float = 2
    #: RED when the next day is >= baseline + this (None: any rise above baseline)
    red_next_day_delta: float | None = 2
    # 5. progress, hold, regress
    progress_greens: int = Field(default=2, ge=1)
    step_spacing_days: float = 7
    #: a step up at the top or down at level 1 moves nothing and is no step (keeps the spacing)
    step_only_when_moved: bool = True
    adherence_days: float = 14
    adherence_fraction: float = 0.5
    #: no step up on a baseline or morning score above the baseline before it (a flare may start)
    hold_on_raised_morning: bool = True
    #: RED verdicts made final within this many hours of a regress step down no further
    regress_quiet_hours: float = 48
    # 6. flare-up
    flare_window_days: float = 7
    flare_jump: float = 2
    #: scores in a row (on different days) each >= the pre-flare median + flare_jump
    flare_rise_scores: int = Field(default=2, ge=1)
    flare_rise_gap_days: float = 3
    #: one score >= the 7-day median + this starts a flare on its own (None: off)
    flare_big_jump: float | None = 4
    flare_high_score: int = 7
    flare_high_days: int = Field(default=2, ge=1)
    flare_walk_fraction: float = 0.5
    flare_walk_min_minutes: int = 10
    flare_keep: tuple[str, ...] = ("cat_camel", "knee_hugs")
    resume_within: float = 1
    resume_level_drop: int = 1
    #: a flare in return_to_run resumes into it, the run ladder one level down
    resume_keeps_running: bool = True
    #: a flare not settled after this many days adds a routine referral (None: never)
    flare_refer_days: float | None = 14
    # 7. escalation
    #: days counted from "onset" or from the "program" start (RehabStarted.occurred_at)
    escalation_clock: Literal["onset", "program"] = "program"
    #: a check due on a day with no score waits for the first baseline/morning score
    escalate_on_score: bool = True
    #: the first baseline is the first score in the program's first days (None: the first known)
    first_baseline_days: float | None = 7
    #: no no-improvement referral when the first baseline is at most this (None: none exempt)
    no_improvement_exempt_at: float | None = 2
    no_improvement_day: int = 42
    improvement_points: float = 2
    improvement_fraction: float = 0.30
    not_recovered_day: int = 84
    recovered_baseline: float = 2
    start_back_first_item: int = 4
    start_back_last_item: int = 8
    start_back_threshold: int = 4
    #: overall score at or above this with psychosocial below threshold: medium risk (None: off)
    start_back_medium_at: int | None = 4
    # 10-11. clinicians and outcome measures
    clinician_reviews: bool = True
    outcome_measures: bool = True
    rmdq_improved_points: float = 5
    rmdq_improved_fraction: float = 0.30
    odi_improved_points: float = 10
    psfs_improved_points: float = 2
    pgic_improved_at: float = 5
    # 8. preferences and goals
    core_exercises: tuple[str, ...] = ("cat_camel", "rib_closure", "spine_curl_bridge", "knee_hugs")
    aerobic_choices: tuple[str, ...] = ("walking", "swimming", "cycling")
    default_aerobic: str = "walking"
    protect_exercise: str = "walking"
    extra_exercise: str = "bird_dog"
    extra_for_preferences: tuple[str, ...] = ("strength", "pilates")
    run_goal: str = "running"
    run_ladder: str = "running"
    run_build_days: int = 14
    run_max_baseline: float = 2
    #: the aerobic slot's level needed to enter return_to_run
    run_min_aerobic_level: int = 3
    #: entering return_to_run counts as a step (it waits for, and restarts, the spacing)
    run_entry_is_step: bool = True
    # 9. ladders
    ladders: dict[str, tuple[Rung, ...]] = Field(default_factory=_ladders)

    @cached_property
    def spans(self) -> Spans:
        """The time windows as timedeltas (the fold uses these on every event)."""
        return Spans(
            baseline=timedelta(hours=self.baseline_hours),
            during_link=timedelta(hours=self.during_link_hours),
            after=timedelta(hours=self.after_hours),
            morning_from=timedelta(hours=self.morning_from_hours),
            morning_until=timedelta(hours=self.morning_until_hours),
            step_spacing=timedelta(days=self.step_spacing_days),
            adherence=timedelta(days=self.adherence_days),
            flare_window=timedelta(days=self.flare_window_days),
            scores_kept=timedelta(days=self.flare_window_days, hours=self.baseline_hours),
            run_build=timedelta(days=self.run_build_days),
            regress_quiet=timedelta(hours=self.regress_quiet_hours),
            flare_rise_gap=timedelta(days=self.flare_rise_gap_days),
            radicular_window=timedelta(days=self.radicular_window_days),
            first_baseline=None
            if self.first_baseline_days is None
            else timedelta(days=self.first_baseline_days),
            flare_refer=None
            if self.flare_refer_days is None
            else timedelta(days=self.flare_refer_days),
        )

    def updated(self, values: dict[str, Any]) -> RuleSet:
        """This rule set with some values replaced, validated (never ``model_copy``: the
        copy would share this set's caches, built for the old values)."""
        return RuleSet.model_validate({**self.model_dump(), **values})

    def top(self, exercise_id: str) -> int:
        """The highest level of an exercise's ladder."""
        return len(self.ladders[exercise_id])

    def prescribed(self, exercise_id: str, level: int) -> PrescribedExercise:
        """The exercise at a level (clamped to its ladder), built once per rule set."""
        key = (exercise_id, level)
        found = self.rungs.get(key)
        if found is None:
            ladder = self.ladders[exercise_id]
            clamped = max(1, min(level, len(ladder)))
            rung = ladder[clamped - 1]
            found = PrescribedExercise(exercise_id=exercise_id, level=clamped, **rung.model_dump())
            self.rungs[key] = found
        return found

    @cached_property
    def rungs(self) -> dict[tuple[str, int], PrescribedExercise]:
        """Prescribed exercises built so far, by (exercise_id, level)."""
        return {}

    @cached_property
    def memo(self) -> dict[Any, Any]:
        """A per-rule-set cache for values derived only from the rules and a key."""
        return {}


#: Rule set "1": every field where v1 differs from the defaults (RULES.md, the closing table).
V1_VALUES: dict[str, Any] = {
    "rules_version": "1",
    "emergency_flags": ("saddle_numbness", "bladder_bowel_change", "progressive_leg_weakness"),
    "urgent_flags": (
        "fever_or_unwell",
        "cancer_history",
        "unexplained_weight_loss",
        "major_trauma",
        "constant_night_pain",
    ),
    "emergency_reason": "red flags: {flags}",
    "urgent_reason": "red flags: {flags}",
    "radicular_days": 0,
    "protect_sessions_per_week": None,
    "flare_sessions_per_week": None,
    "tolerance": 0,
    "next_day_baseline": False,
    "green_during_at_rest": False,
    "after_optional": False,
    "red_next_day_delta": None,
    "regress_quiet_hours": 0,
    "hold_on_raised_morning": False,
    "step_only_when_moved": False,
    "flare_rise_scores": 1,
    "flare_big_jump": None,
    "resume_keeps_running": False,
    "flare_refer_days": None,
    "escalation_clock": "onset",
    "escalate_on_score": False,
    "first_baseline_days": None,
    "no_improvement_exempt_at": None,
    "start_back_medium_at": None,
    "run_min_aerobic_level": 1,
    "run_entry_is_step": False,
    "clinician_reviews": False,
    "outcome_measures": False,
}

RULE_SETS: dict[str, RuleSet] = {"1": RuleSet.model_validate(V1_VALUES), "2": RuleSet()}
"""The built-in rule sets by ``rules_version``; replays name them (``--rules 1``)."""

DEFAULT_RULES = RULE_SETS["2"]


def builtin(version: str) -> RuleSet:
    """The built-in rule set of that version; KeyError names the versions there are."""
    try:
        return RULE_SETS[version]
    except KeyError:
        raise KeyError(f"no built-in rule set {version!r}; built in: {sorted(RULE_SETS)}") from None
