"""A running stack in the engine's place: virtual patients over HTTP, a day at a time.

First each patient's clinic enrols them through the clinic API, and the
patient's app keeps the device token the enrolment returns. Then each patient
lives its days through the same ``Life`` as in ``make clinical``; only the
feed differs. ``HttpFeed.deliver`` leaves what reached the server on
the ``Desk``; ``HttpFeed.latest`` waits there for the day's next round. A round
starts once every patient is either waiting for a read or done with the day:
what reached the server is posted through the ingest API (batched across
patients), the prescriber is waited for, and every waiting patient's
prescription is read through the clinic API with that patient's own device
token (404: none yet). At the end of each day the rest of the day's events are
posted and waited for too, so the stack is current before the next day starts.

A patient's code calls its reader synchronously, so each lives its day in a
thread of its own (one per patient: a round needs them all waiting); rounds
run on the event loop. At the end every patient's changes are read back, each
dated by the arrival of the event that caused it, as the engine feed does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from operator import attrgetter

import httpx
import orjson
from redis.asyncio import Redis

from services.clinical.desk import Desk
from services.clinical.driver import Life, Run
from shared import codec
from shared.auth import issue
from shared.cohort.outbox import Arrival
from shared.cohort.persona import Persona
from shared.events import Event, PrescriptionChanged
from shared.keys import PRESCRIBER_GROUP, Keys

BATCH = 500  # the ingest API's largest batch


@dataclass(frozen=True)
class Server:
    """The running stack as the cohort reaches it.

    ``ingest`` carries a token that may post every patient's events; ``clinic``
    needs no token of its own (an enrolment carries the clinic's token, minted
    with ``secret``; each read the patient's device token) and should keep
    ``concurrency`` connections alive; ``caught_up`` returns once the
    prescriber has processed everything posted so far.
    """

    ingest: httpx.AsyncClient
    clinic: httpx.AsyncClient
    secret: str
    caught_up: Callable[[], Awaitable[None]]
    concurrency: int = 4  # on 2 cores more only queues: client and API share them


class HttpFeed:
    """One patient's events go to the desk; its reads wait there for the round."""

    def __init__(self, desk: Desk, user_id: str) -> None:
        self.desk = desk
        self.user_id = user_id

    def deliver(self, arrivals: Sequence[Arrival]) -> list[PrescriptionChanged]:
        """Leave the arrivals for the next post; the changes are read back at the end."""
        self.desk.send(arrivals)
        return []

    def latest(self) -> PrescriptionChanged | None:
        """The prescription the clinic API returns once the prescriber has caught up."""
        return self.desk.read(self.user_id)


Headers = dict[str, str]


async def enrol(server: Server, people: Sequence[Persona]) -> dict[str, Headers]:
    """Each patient's clinic enrols them (``POST /v1/enrolments``); the device token each
    enrolment returns, as the headers of that patient's app."""
    limit = asyncio.Semaphore(server.concurrency)
    clinics = {
        clinic: {"Authorization": f"Bearer {issue('clinic', clinic, server.secret)}"}
        for clinic in {p.clinic_id for p in people}
    }

    async def one(person: Persona) -> Headers:
        body = {"user_id": person.user_id}
        async with limit:
            reply = await server.clinic.post(
                "/v1/enrolments", json=body, headers=clinics[person.clinic_id]
            )
        reply.raise_for_status()
        return {"Authorization": f"Bearer {reply.json()['device_token']}"}

    tokens = await asyncio.gather(*(one(p) for p in people))
    return {p.user_id: token for p, token in zip(people, tokens, strict=True)}


class Rounds:
    """Posts, waits for the prescriber, and reads with each patient's device token."""

    def __init__(self, server: Server, auth: dict[str, Headers]) -> None:
        self.server = server
        self.auth = auth
        self.limit = asyncio.Semaphore(server.concurrency)
        self.posted = 0

    async def serve(self, desk: Desk, waiting: list[str]) -> None:
        """Post what arrived, wait for the prescriber, answer every waiting read."""
        await self.post(desk.outgoing())
        found = await asyncio.gather(*(self.latest(user) for user in waiting))
        for user, change in zip(waiting, found, strict=True):
            desk.answer(user, change)

    async def post(self, arrivals: list[Arrival]) -> None:
        """Post in arrival order (each patient's own order kept), then wait for the prescriber."""
        arrivals.sort(key=attrgetter("at"))
        for start in range(0, len(arrivals), BATCH):
            chunk = arrivals[start : start + BATCH]
            body = b'{"events":[' + b",".join(codec.dumps(a.event) for a in chunk) + b"]}"
            reply = await self.server.ingest.post(
                "/v1/events/batch", content=body, headers={"Content-Type": "application/json"}
            )
            reply.raise_for_status()
            refused = [r for r in orjson.loads(reply.content)["results"] if "error" in r]
            if refused:
                raise RuntimeError(f"ingest refused {len(refused)} events, first: {refused[0]}")
            self.posted += len(chunk)
        await self.server.caught_up()

    async def latest(self, user_id: str) -> PrescriptionChanged | None:
        """``GET /v1/users/{user_id}/prescription`` with the patient's token; 404 is None."""
        async with self.limit:
            reply = await self.server.clinic.get(
                f"/v1/users/{user_id}/prescription", headers=self.auth[user_id]
            )
        if reply.status_code == 404:
            return None
        reply.raise_for_status()
        return _change(codec.loads(reply.content))

    async def every(self, user_id: str) -> list[PrescriptionChanged]:
        """Every change of the patient, oldest first, read with the patient's token."""
        async with self.limit:
            reply = await self.server.clinic.get(
                f"/v1/users/{user_id}/prescriptions", headers=self.auth[user_id]
            )
        reply.raise_for_status()
        return [_change(codec.from_raw(raw)) for raw in orjson.loads(reply.content)]


async def live_cohort(
    server: Server,
    people: Sequence[Persona],
    seed: int,
    weeks: int,
    day_done: Callable[[int, int, int], None] | None = None,
) -> list[Run]:
    """Live every patient's course against the stack.

    ``day_done(day, days, posted)`` is called after each program day with the
    number of days in the course and of events posted so far.

    The runs' changes are what the stack emitted, in version order; a run's
    ``rules_version`` is the one its changes carry.
    """
    desk, rounds = Desk(), Rounds(server, await enrol(server, people))
    lives = [Life(p, seed, weeks, HttpFeed(desk, p.user_id), "") for p in people]
    days = lives[0].days if lives else 0
    with ThreadPoolExecutor(max(len(lives), 1), thread_name_prefix="patient") as pool:
        for day in range(days):
            await _day(pool, desk, rounds, lives, day)
            if day_done is not None:
                day_done(day, days, rounds.posted)
    runs = [life.finish() for life in lives]
    await rounds.post(desk.outgoing())
    every = await asyncio.gather(*(rounds.every(p.user_id) for p in people))
    for run, changes in zip(runs, every, strict=True):
        run.record(changes)
        run.rules_version = changes[-1].rules_version if changes else ""
    return runs


def _change(event: Event) -> PrescriptionChanged:
    if not isinstance(event, PrescriptionChanged):
        raise TypeError(f"the clinic API answered a {event.type}, not a PrescriptionChanged")
    return event


async def _day(
    pool: ThreadPoolExecutor, desk: Desk, rounds: Rounds, lives: Sequence[Life], day: int
) -> None:
    """Every patient lives ``day`` in its thread; rounds answer their reads; the rest is posted."""
    loop = asyncio.get_running_loop()
    desk.open(len(lives))
    living = [loop.run_in_executor(pool, _live, desk, life, day) for life in lives]
    try:
        while waiting := await asyncio.to_thread(desk.settle):
            await rounds.serve(desk, waiting)
        await asyncio.gather(*living)
    except BaseException:
        desk.fail()  # the threads end at their next read; nobody waits for their results
        for future in living:
            future.cancel()
        raise
    await rounds.post(desk.outgoing())


def _live(desk: Desk, life: Life, day: int) -> None:
    try:
        life.live(day)
    finally:
        desk.leave()


async def backlog(redis: Redis, keys: Keys) -> int:
    """Feed entries the prescriber has not yet read or not yet acknowledged."""
    total = 0
    for feed in keys.feeds():
        for group in await redis.xinfo_groups(feed):
            if group["name"] in (PRESCRIBER_GROUP.encode(), PRESCRIBER_GROUP):
                total += (group.get("lag") or 0) + (group.get("pending") or 0)
    return total


async def caught_up(redis: Redis, keys: Keys, patience: float = 120, poll: float = 0.005) -> None:
    """Return once the prescriber has processed and acknowledged every feed entry."""
    deadline = time.monotonic() + patience
    while await backlog(redis, keys):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the prescriber did not catch up within {patience:.0f} s")
        await asyncio.sleep(poll)
