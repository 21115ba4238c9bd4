"""Where virtual patients' threads meet the rounds that serve them over HTTP.

Each patient lives its day in a thread of its own and reads its prescription
synchronously; ``Desk.read`` parks the thread until a round answers. The
round's driver (``services.clinical.remote``) calls ``settle`` to learn when
every patient of the day is either waiting for a read or done with the day,
takes what they left to post with ``outgoing``, and answers each read.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from shared.cohort.outbox import Arrival
from shared.events import PrescriptionChanged


class _Ticket:
    """One patient's read, waiting for its round."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.value: PrescriptionChanged | None = None
        self.failed = False

    def give(self, value: PrescriptionChanged | None) -> None:
        self.value = value
        self.ready.set()

    def fail(self) -> None:
        self.failed = True
        self.ready.set()


class Desk:
    """Where patients' threads leave what reached the server and wait for their reads.

    A read stays open until a round answers it or the desk fails, so a round
    cut short (an error, Ctrl-C) leaves no patient waiting for ever.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = 0
        self._open: dict[str, _Ticket] = {}
        self._outgoing: list[Arrival] = []
        self._failed = False

    def open(self, patients: int) -> None:
        """A day begins: this many patients will live it."""
        with self._cond:
            self._busy = patients

    def leave(self) -> None:
        """A patient is done with the day."""
        with self._cond:
            self._busy -= 1
            self._cond.notify_all()

    def send(self, arrivals: Sequence[Arrival]) -> None:
        """Events that reached the server, to be posted in the next round."""
        with self._cond:
            self._outgoing += arrivals

    def read(self, user_id: str) -> PrescriptionChanged | None:
        """Wait for a round to read ``user_id``'s prescription (patient's thread)."""
        ticket = _Ticket()
        with self._cond:
            if self._failed:
                ticket.fail()
            else:
                self._open[user_id] = ticket
                self._cond.notify_all()
        ticket.ready.wait()
        if ticket.failed:
            raise RuntimeError("the demo stopped before this read was answered")
        return ticket.value

    def settle(self) -> list[str]:
        """Block until every patient of the day waits or is done; return who waits.

        Called again only once every read it returned has been answered.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._failed or len(self._open) == self._busy)
            return [] if self._failed else list(self._open)

    def answer(self, user_id: str, value: PrescriptionChanged | None) -> None:
        """Answer a patient's open read."""
        with self._cond:
            ticket = self._open.pop(user_id)
        ticket.give(value)

    def outgoing(self) -> list[Arrival]:
        """Take what is to be posted, in the order it was left."""
        with self._cond:
            out, self._outgoing = self._outgoing, []
            return out

    def fail(self) -> None:
        """Stop: every open read and every read still to come raises; ``settle`` returns."""
        with self._cond:
            self._failed = True
            for ticket in self._open.values():
                ticket.fail()
            self._open.clear()
            self._cond.notify_all()
