"""A virtual patient's body: capacity, irritation and how pain answers a session.

Capacity is the load (in ladder levels, ``shared.cohort.load``) the back
tolerates. It has two parts: what training built (``trained``, starting at
capacity0) and what comes back as the episode settles by itself (``recovery``
levels per point the natural course has taken off resting pain: function
recovers with pain in the natural history of low back pain). Then:

- resting pain: the natural course, less what training took off (up to
  ``benefit`` points once two levels are trained), plus the irritation that
  overload left and any simulated flare;
- effective capacity: capacity, less a tenth for each point that irritation
  and flare add to resting pain (an irritable back tolerates less);
- the dose ratio r of a session: its load over the effective capacity.

A session at r in (0.5, 1] trains up to ``gain`` levels (all of it from
r = 0.85, half if not completed), less as capacity nears its ceiling; below
0.5 nothing grows. Above 1 the excess x = load - effective capacity is an
overload: pain during rises by 1 + 2.5 x (at least 5 from x = 1), pain after
sits above resting, irritation grows by 1.5 x (the next morning is raised by
as much), and training loses 0.1 x. Overload answers scale with the patient's
``sensitivity``. Irritation halves over each day after the morning it raised.
More than four days without a session, training fades by 0.01 a day, never
below where it started.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from shared.events import Difficulty

from .persona import Persona

STALL_BELOW = 0.5  # dose ratio under which load teaches the tissue nothing
FULL_FROM = 0.85  # dose ratio from which a session gives the whole gain
CLEAR_OVERLOAD = 1.0  # levels of excess that hurt at least 5/10 during


@dataclass(frozen=True)
class Response:
    """How one session went: latent load and capacity, what the patient reports."""

    load: float
    capacity: float
    excess: float
    during: int
    after: int
    difficulty: Difficulty
    completed: bool


def score(x: float) -> int:
    """A pain level as the 0-10 integer a patient logs."""
    return 0 if x < 0.5 else 10 if x > 9.5 else round(x)


class Body:
    """The latent state of one patient, advanced one day and one session at a time."""

    def __init__(self, persona: Persona) -> None:
        self.p = persona
        self.trained = persona.capacity0
        self.irritation = 0.0
        self.idle = 0

    def capacity(self, day: int) -> float:
        """Trained capacity plus what the natural course has given back by ``day``."""
        p = self.p
        return self.trained + p.recovery * max(0.0, p.pain0 - p.natural(day))

    def resting(self, day: int) -> float:
        """Resting pain on ``day``: natural course, training benefit, irritation, flares."""
        p = self.p
        trained = min(1.0, max(0.0, (self.trained - p.capacity0) / 2))
        level = max(p.floor, p.natural(day) - p.benefit * trained)
        return level + self.irritation + p.flare_lift(day)

    def effective(self, day: int) -> float:
        """The load tolerated on ``day``: capacity, 10% less per point of irritation or flare."""
        irritable = self.irritation + self.p.flare_lift(day)
        return self.capacity(day) * max(0.4, 1.0 - 0.1 * irritable)

    def session(self, day: int, load: float, rng: random.Random) -> Response:
        """Do a session of ``load``: report the pain and adapt (or suffer) accordingly."""
        rest, tolerated = self.resting(day), self.effective(day)
        ratio, excess = load / tolerated, load - tolerated
        self.idle = 0
        if excess <= 0:
            during = rest - 0.3 + 1.5 * max(0.0, ratio - 0.8) + rng.gauss(0.0, 0.6)
            after = rest - 0.2 + rng.gauss(0.0, 0.5)
            difficulty: Difficulty = "easy" if ratio < 0.6 and rng.random() < 0.7 else "ok"
            if rng.random() < 0.04:
                difficulty = "hard"
            completed = rng.random() < 0.96
            self._train(day, ratio, completed)
            return Response(
                load, tolerated, excess, score(during), score(after), difficulty, completed
            )
        hurt = self.p.sensitivity * excess
        during = rest + 1.0 + 2.5 * hurt + rng.gauss(0.0, 0.6)
        if excess >= CLEAR_OVERLOAD:
            during = max(during, 5.0)
        after = rest + 0.5 + 1.5 * hurt + rng.gauss(0.0, 0.5)
        self.irritation = min(4.0, self.irritation + 1.5 * hurt)
        self.trained = max(0.8 * self.p.capacity0, self.trained - 0.1 * excess)
        difficulty = "hard" if rng.random() < min(1.0, 0.4 + 0.6 * excess) else "ok"
        completed = rng.random() >= min(0.8, 0.25 + 0.35 * excess)
        return Response(load, tolerated, excess, score(during), score(after), difficulty, completed)

    def settle(self) -> None:
        """A day passes after its morning: irritation halves; long idle, training fades."""
        self.irritation *= 0.5
        self.idle += 1
        if self.idle > 4 and self.trained > self.p.capacity0:
            self.trained = max(self.p.capacity0, self.trained - 0.01)

    def _train(self, day: int, ratio: float, completed: bool) -> None:
        if ratio <= STALL_BELOW:
            return
        dose = min(1.0, (ratio - STALL_BELOW) / (FULL_FROM - STALL_BELOW))
        room = min(1.0, max(0.0, self.p.capacity_max - self.capacity(day)))
        self.trained += self.p.gain * dose * room * (1.0 if completed else 0.5)
