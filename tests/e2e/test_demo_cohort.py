"""The demo's closed loop against the real processes: virtual patients living over HTTP.

The demo cohort's first ten patients (a late-syncing device, a flare on day
18, leg pain, a plateau, a runner) and two more with red flags (one on day 13,
one at intake whose clinic clears it on day 17) live three weeks against the
stack through the demo's own ``server_for`` and ``live_cohort``; every request
the clinic API receives is recorded on the client. The same patients then live
against the pure engine.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.cli.demo import conclude, figures, server_for
from services.cli.stack import Stack
from services.clinical.driver import Run, run_patient
from services.clinical.remote import backlog, live_cohort
from services.prescriber import engine
from shared.auth import verify
from shared.cohort.persona import Persona, make_persona
from shared.keys import Keys
from shared.redis_store import connect
from tests.e2e.conftest import SECRET
from tests.sealed import service_store

SEED, WEEKS = 2026, 3
PEOPLE = [make_persona(SEED, i) for i in (*range(10), 66, 178)]


@dataclass
class Lived:
    """The runs over HTTP, every (method, path, Authorization) the clinic API was sent,
    the prescriber's backlog as each was sent, and the report."""

    runs: list[Run]
    clinic: list[tuple[str, str, str]]
    backlogs: list[int]
    report: Path


@pytest.fixture(scope="module")
def lived(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Lived:
    """The demo's closed loop for PEOPLE, then its conclusion (figures, tables, report)."""
    clinic: list[tuple[str, str, str]] = []
    backlogs: list[int] = []
    report = tmp_path_factory.mktemp("demo") / "report.html"
    keys = Keys(stack.settings.partitions)

    async def live() -> list[Run]:
        redis = connect(stack.redis_url)

        async def note(request: httpx.Request) -> None:
            if request.url.port == stack.settings.clinic_port:
                auth = request.headers.get("authorization", "")
                clinic.append((request.method, request.url.path, auth))
                backlogs.append(await backlog(redis, keys))

        try:
            async with server_for(stack, redis, event_hooks={"request": [note]}) as server:
                runs = await live_cohort(server, PEOPLE, SEED, WEEKS)
            await conclude(service_store(redis, stack.settings.partitions), runs, report)
        finally:
            await redis.aclose()
        return runs

    return Lived(asyncio.run(live()), clinic, backlogs, report)


def _user(path: str) -> str:
    return path.split("/")[3]  # /v1/users/{user_id}/prescription[s]


def test_every_read_is_the_patients_own_with_its_device_token(lived: Lived) -> None:
    """Each patient's clinic enrols them first; every read after carries a device token
    for the user it reads, one per read."""
    enrolments = lived.clinic[: len(PEOPLE)]
    clinics = {p.user_id: p.clinic_id for p in PEOPLE}
    assert {(m, p) for m, p, _ in enrolments} == {("POST", "/v1/enrolments")}
    enrollers = [verify(auth.removeprefix("Bearer "), SECRET) for _, _, auth in enrolments]
    assert {(e.role, e.subject) for e in enrollers} == {("clinic", c) for c in clinics.values()}
    assert lived.clinic[len(PEOPLE) :]
    for method, path, auth in lived.clinic[len(PEOPLE) :]:
        principal = verify(auth.removeprefix("Bearer "), SECRET)
        assert (method, principal.role, principal.subject) == ("GET", "device", _user(path))
    reads = Counter(_user(p) for _, p, _ in lived.clinic if p.endswith("/prescription"))
    assert reads == {run.persona.user_id: run.reads for run in lived.runs}
    assert all(run.reads > 0 for run in lived.runs)


def test_every_read_waits_until_the_prescriber_has_caught_up(lived: Lived) -> None:
    """No clinic API read is sent while the prescriber has feed entries left to process."""
    assert len(lived.backlogs) == len(lived.clinic)
    assert set(lived.backlogs) == {0}


@pytest.mark.parametrize("persona", PEOPLE, ids=lambda p: f"{p.user_id}-{p.archetype}")
def test_the_stack_decides_change_for_change_as_the_engine(lived: Lived, persona: Persona) -> None:
    """The changes a patient met over HTTP equal, moment and all, those of the pure engine."""
    over_http = lived.runs[PEOPLE.index(persona)]
    engine_fed = run_patient(persona, SEED, WEEKS, engine.DEFAULT_RULES)
    assert over_http.changes == engine_fed.changes
    assert over_http.rules_version == engine.DEFAULT_RULES.rules_version
    assert (over_http.events, over_http.late) == (engine_fed.events, engine_fed.late)


def test_the_loop_covers_late_arrivals_red_flags_and_every_kind_of_step(lived: Lived) -> None:
    """The cohort exercises refolds, a red-flag referral, a clinic's clearance and
    progressions, not just intake."""
    assert sum(r.late for r in lived.runs) > 0
    kinds = Counter(e.change.change for r in lived.runs for e in r.changes)
    assert kinds["progressed"] > 0
    assert kinds["adjusted"] >= 1  # the clinic clears the day-17 patient's red flag
    red = [e for r in lived.runs for e in r.changes if e.change.referral is not None]
    assert {e.change.referral.urgency for e in red if e.change.referral} >= {"urgent"}


def test_the_figures_come_out_in_the_summary_and_the_report(lived: Lived) -> None:
    """make clinical's targets are measured for the stack's rule set and written to the report."""
    measured = figures(lived.runs)
    assert list(measured) == [engine.DEFAULT_RULES.rules_version]
    rows = {t.name: t.measured for t in measured[engine.DEFAULT_RULES.rules_version]}
    assert len(rows) == 11
    assert rows["PrescriptionChanged per patient-week"] is not None
    assert rows["red flags referred on the event that reports them"] == 1.0
    page = lived.report.read_text(encoding="utf-8")
    assert f"rule set {engine.DEFAULT_RULES.rules_version}" in page
    assert all(name in page for name in rows)
