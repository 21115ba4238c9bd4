"""Pain against program level over time, with the phases as coloured bands."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import matplotlib
except ImportError as exc:  # the services' image installs no drawing library
    raise ImportError("drawing needs the charts extra: pip install 'backtrack[charts]'") from exc

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from shared.events import Input, PainLogged, PrescriptionChanged, SessionCompleted

PHASE_COLOURS = {
    "protect": "#cfe8ff",
    "build": "#d8f5d0",
    "return_to_run": "#fff1c2",
    "flare": "#ffd6d6",
    "refer": "#e6d6ff",
}


def _level(change: PrescriptionChanged) -> float:
    levels = [e.level for e in change.exercises]
    return sum(levels) / len(levels) if levels else 0.0


def plot_user(
    user_id: str,
    events: Sequence[Input],
    changes: Sequence[PrescriptionChanged],
    path: str | Path,
) -> Path:
    """Draw one user's course to a PNG and return its path."""
    fig, pain_ax = plt.subplots(figsize=(10, 4), dpi=100)
    level_ax = pain_ax.twinx()
    end = max([e.occurred_at for e in events] + [c.occurred_at for c in changes], default=None)
    for i, change in enumerate(changes):
        stop = changes[i + 1].occurred_at if i + 1 < len(changes) else end
        if stop is not None:
            span = (_num(change.occurred_at), _num(stop))
            pain_ax.axvspan(*span, color=PHASE_COLOURS[change.phase], lw=0)
    base: list[tuple[datetime, int | None]] = [
        (e.occurred_at, e.score)
        for e in events
        if isinstance(e, PainLogged) and e.context in ("baseline", "morning")
    ]
    during: list[tuple[datetime, int | None]] = [
        (e.occurred_at, e.pain_during)
        for e in events
        if isinstance(e, SessionCompleted) and e.pain_during is not None
    ]
    _series(pain_ax, base, "-o", "#1f4e79", "baseline / morning pain")
    _series(pain_ax, during, "x", "#c0392b", "pain during sessions")
    times: list[datetime] = [c.occurred_at for c in changes] + ([end] if end else [])
    levels = [_level(c) for c in changes] + ([_level(changes[-1])] if changes else [])
    level_ax.step(_num(times), levels, where="post", color="#2e7d32", lw=2, label="program level")
    pain_ax.set(ylim=(0, 10), ylabel="pain (0-10)", title=f"{user_id}: pain and program level")
    level_ax.set(ylim=(0, 5.5), ylabel="mean exercise level")
    pain_ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))  # type: ignore[no-untyped-call]
    handles = pain_ax.get_legend_handles_labels()[0] + level_ax.get_legend_handles_labels()[0]
    handles += [Rectangle((0, 0), 1, 1, color=c) for c in PHASE_COLOURS.values()]
    labels = pain_ax.get_legend_handles_labels()[1] + level_ax.get_legend_handles_labels()[1]
    pain_ax.legend(handles, labels + list(PHASE_COLOURS), loc="upper right", fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def _series(
    ax: Axes, points: list[tuple[datetime, int | None]], style: str, colour: str, label: str
) -> None:
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, style, color=colour, ms=3, lw=1, label=label)


def _num(value: datetime | Sequence[datetime]) -> Any:
    """Matplotlib's date numbers (its stubs leave date2num untyped)."""
    return mdates.date2num(value)  # type: ignore[no-untyped-call]
