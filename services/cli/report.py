"""The demo's HTML report: the targets, the cohort's outcome and a few patients' courses."""

from __future__ import annotations

import asyncio
import base64
import html
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from services.cli.charts import plot_user
from services.clinical.driver import Run
from services.clinical.metrics import Target
from services.clinical.report import target_rows
from shared.store import EventStore


def _pick(runs: Sequence[Run], per_archetype: int = 1) -> list[Run]:
    """The first patient of each archetype: one chart per path through the rules."""
    seen: Counter[str] = Counter()
    chosen = []
    for run in runs:
        if seen[run.persona.archetype] < per_archetype:
            seen[run.persona.archetype] += 1
            chosen.append(run)
    return chosen


def _table(title: str, rows: Counter[str]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in rows.most_common())
    return f"<h2>{html.escape(title)}</h2><table>{body}</table>"


def _targets(measured: dict[str, list[Target]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("target", "wanted"))
    head += "".join(f"<th>rule set {html.escape(v)}</th>" for v in measured)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in target_rows(measured)
    )
    return f"<h2>Targets (as make clinical measures them)</h2><table><tr>{head}</tr>{body}</table>"


async def write_report(
    store: EventStore, runs: Sequence[Run], measured: dict[str, list[Target]], path: Path
) -> Path:
    """Write the report to ``path``: figures, tables, and the charts read from the event log."""
    final = [r.changes[-1].change for r in runs if r.changes]
    parts = [
        "<!doctype html><meta charset=utf-8><title>backtrack demo report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "td,th{padding:2px 12px;text-align:left}img{width:100%}</style>",
        f"<h1>backtrack demo: {len(runs)} virtual patients</h1>",
        _targets(measured),
        _table("Final phase", Counter(c.phase for c in final)),
        _table("Prescription changes", Counter(e.change.change for r in runs for e in r.changes)),
        _table(
            "Referrals",
            Counter(f"{c.referral.urgency}: {c.referral.reason}" for c in final if c.referral),
        ),
        "<h2>Courses</h2><p>Pain (blue: baseline and morning; red: during sessions) "
        "against the mean program level (green), phases as bands.</p>",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for run in _pick(runs):
            user = run.persona.user_id
            events = [e for _, e in await store.history(user)]
            course = [e.change for e in run.changes]
            png = plot_user(user, events, course, Path(tmp) / f"{user}.png")
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(
                f"<h3>{html.escape(user)} ({run.persona.archetype})</h3>"
                f"<img alt='course of {html.escape(user)}' src='data:image/png;base64,{data}'>"
            )
    await asyncio.to_thread(path.write_text, "\n".join(parts), encoding="utf-8")
    return path
