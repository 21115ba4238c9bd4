"""Every number of RULES.md v1 as a default of one frozen ``RuleSet``.

Operators replay history under other values with ``RuleSet(**overrides)`` or
``RuleSet.model_validate(mapping)``; an unknown name is a validation error, so
a typo can never silently fall back to the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

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


class RuleSet(BaseModel):
    """The prescription rules; section numbers refer to RULES.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules_version: str = "1"
    # 1. red flags
    emergency_flags: tuple[str, ...] = (
        "saddle_numbness",
        "bladder_bowel_change",
        "progressive_leg_weakness",
    )
    urgent_flags: tuple[str, ...] = (
        "fever_or_unwell",
        "cancer_history",
        "unexplained_weight_loss",
        "major_trauma",
        "constant_night_pain",
    )
    # 2. phase and stage
    protect_causes: tuple[str, ...] = ("sprain_strain",)
    protect_days: int = 7
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
    green_during_below: int = 3
    red_during_at: int = 5
    red_after_delta: float = 2
    # 5. progress, hold, regress
    progress_greens: int = Field(default=2, ge=1)
    step_spacing_days: float = 7
    adherence_days: float = 14
    adherence_fraction: float = 0.5
    # 6. flare-up
    flare_window_days: float = 7
    flare_jump: float = 2
    flare_high_score: int = 7
    flare_high_days: int = Field(default=2, ge=1)
    flare_walk_fraction: float = 0.5
    flare_walk_min_minutes: int = 10
    flare_keep: tuple[str, ...] = ("cat_camel", "knee_hugs")
    resume_within: float = 1
    resume_level_drop: int = 1
    # 7. escalation
    no_improvement_day: int = 42
    improvement_points: float = 2
    improvement_fraction: float = 0.30
    not_recovered_day: int = 84
    recovered_baseline: float = 2
    start_back_first_item: int = 4
    start_back_last_item: int = 8
    start_back_threshold: int = 4
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
        )

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


RULE_SETS: dict[str, RuleSet] = {"1": RuleSet()}
"""The built-in rule sets by ``rules_version``; replays name them (``--rules 1``)."""

DEFAULT_RULES = RULE_SETS["1"]


def builtin(version: str) -> RuleSet:
    """The built-in rule set of that version; KeyError names the versions there are."""
    try:
        return RULE_SETS[version]
    except KeyError:
        raise KeyError(f"no built-in rule set {version!r}; built in: {sorted(RULE_SETS)}") from None
