"""A seeded virtual cohort through the pure engine under each rule set, side by side.

Patients are independent, so each is lived once per rule set, reduced to its
facts at once (a run's events are not kept), and only a few example runs are
kept whole for the figures. One process suffices: a thousand patients under
two rule sets take well under a minute (docs/CLINICAL.md gives the time).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from services.clinical.driver import Run, run_patient
from services.clinical.facts import Facts, facts
from services.clinical.metrics import Target, targets
from services.prescriber.engine.rules import RULE_SETS, RuleSet, builtin
from shared.cohort.persona import Persona, personas

EXAMPLES = ("improver", "flare", "plateau", "runner")
PATIENTS = 1000  # make clinical's cohort
SEED = 2026


@dataclass
class Outcome:
    """Every patient's facts per rule set, and the example patients' whole runs."""

    patients: list[Persona]
    facts: dict[str, list[Facts]] = field(default_factory=dict)
    examples: dict[str, list[Run]] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    late: dict[str, int] = field(default_factory=dict)
    refolds: dict[str, int] = field(default_factory=dict)


def versions() -> list[str]:
    """The built-in rule sets, in version order."""
    return sorted(RULE_SETS, key=lambda v: (len(v), v))


def examples(people: Sequence[Persona]) -> list[int]:
    """Indices of the first patient of each example archetype."""
    chosen: dict[str, int] = {}
    for p in people:
        if p.archetype in EXAMPLES and p.archetype not in chosen:
            chosen[p.archetype] = p.index
    return [chosen[a] for a in EXAMPLES if a in chosen]


def simulate(
    n: int,
    seed: int,
    weeks: int = 12,
    rule_sets: Sequence[str | RuleSet] | None = None,
    done: Callable[[], None] | None = None,
) -> Outcome:
    """Live ``n`` patients under each rule set (a built-in version, or a RuleSet filed under
    its ``rules_version``); ``done`` is called after each patient-run."""
    people = personas(n, seed)
    outcome = Outcome(people)
    keep = set(examples(people))
    for chosen in rule_sets or versions():
        rules = builtin(chosen) if isinstance(chosen, str) else chosen
        version = rules.rules_version
        found, kept = [], []
        events = late = refolds = 0
        for persona in people:
            run = run_patient(persona, seed, weeks, rules)
            found.append(facts(run))
            events, late, refolds = events + run.events, late + run.late, refolds + run.refolds
            if persona.index in keep:
                kept.append(run)
            if done is not None:
                done()
        outcome.facts[version], outcome.examples[version] = found, kept
        outcome.events[version], outcome.late[version] = events, late
        outcome.refolds[version] = refolds
    return outcome


def measured(version: str, n: int = PATIENTS, seed: int = SEED) -> list[Target]:
    """The targets as make clinical measures them for one rule set (its whole cohort)."""
    return targets(simulate(n, seed, rule_sets=[version]).facts[version])
