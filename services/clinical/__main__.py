"""``python -m services.clinical``: the virtual cohort under every built-in rule set.

Prints the targets per rule set and writes docs/CLINICAL.md's results and its
figures (docs/clinical-*.png). With ``--set NAME=VALUE`` it runs one rule set
with those values changed (rule set 2, or the one ``--rules`` names) and only
prints its targets: a what-if for the patients, written nowhere.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.clinical import plots, report
from services.clinical.cohort import PATIENTS, SEED, Outcome, simulate, versions
from services.clinical.metrics import targets
from services.clinical.progress import progress_bar
from services.prescriber.engine import RuleSet
from services.replay.rulesets import load_rules

console = Console()
LEVELS = (
    "Mean core level in force at the end of each program week, per archetype; "
    "one panel per rule set."
)
EXAMPLE_COURSES = (
    "The first improver, flare-prone, plateau and runner patient of the cohort under each "
    "rule set: latent resting pain (light blue line), logged morning and baseline scores "
    "(dots), pain during overloaded sessions (red crosses), true flares (pink); on the "
    "right axis, latent capacity (dashed) and the load prescribed (green steps), both in "
    "ladder levels; along the bottom, the phase in force (blue protect, green build, "
    "orange return to run, red flare, purple refer)."
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rule_sets: list[str | RuleSet] = list(args.rules or versions())
    if args.set:
        rule_sets = [load_rules(args.rules[0] if args.rules else "2", args.set)]
    names = [r if isinstance(r, str) else r.rules_version for r in rule_sets]
    started = time.perf_counter()
    with progress_bar(console) as bar:
        task = bar.add_task(
            f"virtual patients x rule sets {', '.join(names)}",
            total=args.patients * len(rule_sets),
        )
        outcome = simulate(
            args.patients, args.seed, args.weeks, rule_sets, lambda: bar.advance(task)
        )
    elapsed = time.perf_counter() - started
    _print_targets(outcome)
    if args.set:
        console.print(f"{args.patients:,} patients in {elapsed:.1f}s; nothing written (--set)")
        return 0
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    figures = {
        plots.plot_levels(outcome.facts, docs / "clinical-levels.png").name: LEVELS,
        plots.plot_examples(outcome.examples, docs / "clinical-patients.png").name: EXAMPLE_COURSES,
    }
    path = report.write(
        docs / "CLINICAL.md", report.render(outcome, args.seed, args.weeks, figures)
    )
    console.print(
        f"{args.patients:,} patients under rule sets {', '.join(names)} "
        f"in {elapsed:.1f}s; wrote {path}"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.clinical", description=__doc__)
    parser.add_argument("--patients", type=int, default=PATIENTS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--rules", action="append", help="a built-in rule set (default: all)")
    parser.add_argument("--docs", default="docs", help="where CLINICAL.md and the figures go")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change a rule value (what-if: targets printed, nothing written)",
    )
    return parser


def _print_targets(outcome: Outcome) -> None:
    measured = {v: targets(f) for v, f in outcome.facts.items()}
    table = Table(title="targets (issue 13)")
    table.add_column("target")
    table.add_column("wanted")
    for version in measured:
        table.add_column(f"rule set {version}", justify="right")
    for row in report.target_rows(measured):
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    raise SystemExit(main())
