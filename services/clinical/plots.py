"""The figures of docs/CLINICAL.md: levels by week per archetype, and a few patients' courses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from statistics import mean

try:
    import matplotlib
except ImportError as exc:  # the services' image installs no drawing library
    raise ImportError("drawing needs the charts extra: pip install 'backtrack[charts]'") from exc

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from services.clinical.driver import Run
from services.clinical.facts import Facts
from shared.cohort.load import prescribed_load
from shared.cohort.persona import ARCHETYPES

_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
_COLOURS = dict(zip(ARCHETYPES, _PALETTE, strict=False))
PHASES = {
    "protect": "#6baed6",
    "build": "#74c476",
    "return_to_run": "#fd8d3c",
    "flare": "#de2d26",
    "refer": "#756bb1",
}


def plot_levels(facts: dict[str, list[Facts]], path: Path) -> Path:
    """Mean core level in force at the end of each program week, per archetype and rule set."""
    fig, axes = plt.subplots(1, len(facts), figsize=(6 * len(facts), 4), dpi=100, squeeze=False)
    for ax, (version, group) in zip(axes[0], facts.items(), strict=True):
        for archetype in ARCHETYPES:
            members = [p for p in group if p.archetype == archetype]
            if not members:
                continue
            weeks = max(p.weeks for p in members)
            ys = [_mean([p.weekly_levels[w] for p in members]) for w in range(weeks)]
            ax.plot(range(1, weeks + 1), ys, "-o", ms=3, label=archetype, color=_COLOURS[archetype])
        ax.set(
            title=f"rule set {version}",
            xlabel="program week",
            ylabel="mean core level in force",
            ylim=(0.8, 5.2),
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_examples(examples: dict[str, list[Run]], path: Path) -> Path:
    """A few patients under each rule set: pain, capacity, the load prescribed and the phase.

    True flares are shaded pink; the strip along the bottom is the phase in force
    (``PHASES``: protect blue, build green, return to run orange, flare red, refer purple).
    """
    versions = list(examples)
    rows = max((len(runs) for runs in examples.values()), default=0)
    fig, axes = plt.subplots(
        rows, len(versions), figsize=(6 * len(versions), 2.8 * rows), dpi=100, squeeze=False
    )
    for col, version in enumerate(versions):
        for row, run in enumerate(examples[version]):
            _course(
                axes[row][col],
                run,
                f"{run.persona.user_id} ({run.truth.archetype}), rules {version}",
            )
    return _save(fig, path)


def _course(ax: Axes, run: Run, title: str) -> None:
    for start, last in run.truth.flares:
        ax.axvspan(start, last + 1, color="#ffd6d6", lw=0)
    end = run.weeks * 7 + 1
    for i, emitted in enumerate(run.changes):  # the engine's phases, as a strip at the bottom
        until = run.day_of(run.changes[i + 1].at) if i + 1 < len(run.changes) else end
        colour = PHASES[emitted.change.phase]
        ax.axvspan(run.day_of(emitted.at), until, ymax=0.04, color=colour, lw=0)
    days = [d for d, _, _ in run.truth.daily]
    ax.plot(
        days,
        [r for _, r, _ in run.truth.daily],
        color="#9db4cc",
        lw=1.5,
        label="resting pain (latent)",
    )
    if run.scores:
        xs, ys = zip(*run.scores, strict=True)
        ax.plot(xs, ys, ".", color="#1f4e79", ms=4, label="morning / baseline score")
    over = [s for s in run.truth.sessions if s.overloaded]
    ax.plot(
        [s.day for s in over],
        [s.during for s in over],
        "x",
        color="#c0392b",
        label="overload: pain during",
    )
    ax.set(ylim=(0, 10), xlim=(0, end), ylabel="pain (0-10)", xlabel="program day", title=title)
    ax.title.set_fontsize(8)
    load = ax.twinx()
    load.plot(
        days,
        [c for _, _, c in run.truth.daily],
        "--",
        color="#2e7d32",
        lw=1,
        label="capacity (latent)",
    )
    steps = [(run.day_of(e.at), prescribed_load(e.change)) for e in run.changes]
    if steps:
        xs, ys = zip(*[*steps, (end, steps[-1][1])], strict=True)
        load.step(xs, ys, where="post", color="#2e7d32", lw=2, label="load prescribed")
    load.set(ylim=(0, 8), ylabel="load (ladder levels)")
    handles = ax.get_legend_handles_labels()[0] + load.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + load.get_legend_handles_labels()[1]
    ax.legend(handles, labels, fontsize=6, loc="upper right", ncol=2)


def _mean(values: Sequence[int | None]) -> float:
    known = [v for v in values if v is not None]
    return mean(known) if known else float("nan")


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
