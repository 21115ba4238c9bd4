"""docs/CLINICAL.md's generated part: targets and a table per archetype, rule sets side by side.

The hand-written part of the document (the model, the definitions) stays as
it is; only what lies between the two markers is replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from statistics import median

from services.clinical.cohort import Outcome
from services.clinical.metrics import Summary, Target, by_archetype, targets
from shared.cohort.persona import ARCHETYPES

BEGIN = "<!-- make clinical: begin -->"
END = "<!-- make clinical: end -->"
_BINS = ((0, 6), (7, 41), (42, 49), (50, 83), (84, 10_000))


def render(outcome: Outcome, seed: int, weeks: int, figures: dict[str, str]) -> str:
    """The generated block, markers included; ``figures`` maps file names to captions."""
    versions = list(outcome.facts)
    summaries = {v: by_archetype(outcome.facts[v]) for v in versions}
    lines = [
        BEGIN,
        "",
        f"{len(outcome.patients):,} virtual patients (seed {seed}), {weeks} weeks each, "
        f"under rule set{'s' if len(versions) > 1 else ''} {', '.join(versions)}. "
        "Events folded in arrival order: "
        + "; ".join(
            f"rule set {v}: {outcome.events[v]:,} events, {outcome.late[v]:,} arrived late, "
            f"{outcome.refolds[v]:,} refolds"
            for v in versions
        )
        + ".",
        "",
        "### Targets",
        "",
        *target_table({v: targets(outcome.facts[v]) for v in versions}),
        "",
    ]
    order = [a for a in (*ARCHETYPES, "all") if a in summaries[versions[0]]]
    for archetype in order:
        title = "Whole cohort" if archetype == "all" else f"Archetype `{archetype}`"
        lines += [
            f"### {title}",
            "",
            *archetype_table({v: summaries[v][archetype] for v in versions}),
            "",
        ]
    lines += ["### Figures", ""]
    for name, caption in figures.items():
        lines += [f"![{name}]({name})", "", caption, ""]
    lines.append(END)
    return "\n".join(lines)


def write(path: Path, block: str) -> Path:
    """Replace the block between the markers of ``path`` (append it if there is none)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def target_table(measured: dict[str, list[Target]]) -> list[str]:
    """Markdown rows: each target, its threshold, and what each rule set measured."""
    versions = list(measured)
    rows = [
        "| target | wanted | " + " | ".join(f"rule set {v}" for v in versions) + " |",
        "|---|---|" + "---|" * len(versions),
    ]
    rows += ["| " + " | ".join(row) + " |" for row in target_rows(measured, "**not met**")]
    return rows


def target_rows(measured: dict[str, list[Target]], missed: str = "not met") -> list[list[str]]:
    """Per target: its name, what is wanted, and what each rule set measured (in that order)."""
    versions = list(measured)
    return [
        [target.name, wanted(target), *(target_cell(measured[v][i], missed) for v in versions)]
        for i, target in enumerate(measured[versions[0]])
    ]


def wanted(target: Target) -> str:
    """The threshold as a condition: ``≥ 90%``, ``≤ 0.5``."""
    return ("≥ " if target.at_least else "≤ ") + _value(target.threshold, target.percent)


def target_cell(target: Target, missed: str = "not met") -> str:
    """What was measured, and whether that meets the target."""
    return f"{_value(target.measured, target.percent)} {'met' if target.met else missed}"


def archetype_table(by_version: dict[str, Summary]) -> list[str]:
    """Markdown rows: one figure per row, one rule set per column."""
    versions = list(by_version)
    rows = [
        "| | " + " | ".join(f"rule set {v}" for v in versions) + " |",
        "|---|" + "---|" * len(versions),
    ]
    for label, cell in _ROWS:
        rows.append(f"| {label} | " + " | ".join(cell(by_version[v]) for v in versions) + " |")
    return rows


def _phases(s: Summary) -> str:
    return ", ".join(f"{phase} {count / s.patients:.0%}" for phase, count in s.phases.items())


def _progressed(s: Summary) -> str:
    return f"{_value(s.progressed, True)} / {_value(s.progressed_by_week_4, True)}"


def _flares(s: Summary) -> str:
    if not s.flares:
        return "–"
    late = "–" if s.median_flare_latency is None else f"{s.median_flare_latency:g}"
    return (
        f"{s.flares}: {_value(s.flares_within, True)} within 2 days, "
        f"{_value(s.flares_detected, True)} during the flare, median {late} days late"
    )


def _overloads(s: Summary) -> str:
    if not s.overloads:
        return "–"
    clear = (
        f"; clear (1 level or more): {s.clear_overloads}, "
        f"{_value(s.clear_overloads_answered, True)} held or stepped down"
        if s.clear_overloads
        else ""
    )
    return (
        f"{s.overloads} ({s.overloads / s.patients:.2f} per patient): "
        f"{_value(s.overloads_answered, True)} held or stepped down, "
        f"{_value(s.overloads_stepped_down, True)} stepped down{clear}"
    )


def _referrals(s: Summary) -> str:
    if not s.referrals:
        return "–"
    return "<br>".join(
        f"{reason}: {len(days)}, day {min(days)}–{median(days):g}–{max(days)}"
        for reason, days in s.referrals.items()
    )


def _referral_days(s: Summary) -> str:
    days = [d for ds in s.referrals.values() for d in ds]
    if not days:
        return "–"
    return ", ".join(
        f"{low}-{high if high < 10_000 else ''}: {sum(low <= d <= high for d in days)}"
        for low, high in _BINS
    )


def _value(x: float | None, percent: bool = False, digits: int = 2) -> str:
    if x is None:
        return "–"
    if percent:
        return f"{x:.0%}"
    return f"{x:g}" if float(x).is_integer() else f"{x:.{digits}f}"


_ROWS: tuple[tuple[str, Callable[[Summary], str]], ...] = (
    ("patients", lambda s: str(s.patients)),
    ("final phase", _phases),
    ("median final core level", lambda s: _value(s.median_level)),
    ("progressed at all / by program week 4", _progressed),
    ("median program day of the first progression", lambda s: _value(s.median_first_progression)),
    ("deload / resume cycles per patient", lambda s: f"{_value(s.deloads)} / {_value(s.resumes)}"),
    ("simulated flares", _flares),
    ("patients progressed during a simulated flare", lambda s: str(s.flare_progressions)),
    ("sessions over capacity", _overloads),
    ("new referrals by reason: how many, program day min–median–max", _referrals),
    ("referrals by program day", _referral_days),
    ("PrescriptionChanged per patient-week", lambda s: _value(s.changes_per_week)),
)  # fmt: skip
