"""The demo's HTML report: the cohort's outcome and a few patients' courses as charts."""

from __future__ import annotations

import asyncio
import base64
import html
import tempfile
from collections import Counter
from pathlib import Path

from services.cli.charts import plot_user
from shared.cohort import Patient
from shared.events import PrescriptionChanged
from shared.store import EventStore

Changes = dict[str, list[tuple[str, PrescriptionChanged]]]


def _pick(people: list[Patient], per_archetype: int = 1) -> list[Patient]:
    """The first patient of each archetype: one chart per path through the rules."""
    seen: Counter[str] = Counter()
    chosen = []
    for person in people:
        if seen[person.archetype] < per_archetype:
            seen[person.archetype] += 1
            chosen.append(person)
    return chosen


def _table(title: str, rows: Counter[str]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in rows.most_common())
    return f"<h2>{html.escape(title)}</h2><table>{body}</table>"


async def write_report(
    store: EventStore, people: list[Patient], changes: Changes, path: Path
) -> Path:
    final = [c[-1][1] for c in changes.values() if c]
    parts = [
        "<!doctype html><meta charset=utf-8><title>backtrack demo report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "td{padding:2px 12px}img{width:100%}</style>",
        f"<h1>backtrack demo: {len(people)} simulated patients</h1>",
        _table("Final phase", Counter(c.phase for c in final)),
        _table("Prescription changes", Counter(ch.change for c in changes.values() for _, ch in c)),
        _table(
            "Referrals",
            Counter(f"{c.referral.urgency}: {c.referral.reason}" for c in final if c.referral),
        ),
        "<h2>Courses</h2><p>Pain (blue: baseline and morning; red: during sessions) "
        "against the mean program level (green), phases as bands.</p>",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for person in _pick(people):
            events = [e for _, e in await store.history(person.user_id)]
            course = [c for _, c in changes.get(person.user_id, [])]
            png = plot_user(person.user_id, events, course, Path(tmp) / f"{person.user_id}.png")
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(
                f"<h3>{html.escape(person.user_id)} ({person.archetype})</h3>"
                f"<img alt='course of {html.escape(person.user_id)}' "
                f"src='data:image/png;base64,{data}'>"
            )
    await asyncio.to_thread(path.write_text, "\n".join(parts), encoding="utf-8")
    return path
