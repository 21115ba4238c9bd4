"""The HTTP-fed run without a stack: the desk's rounds and what the clinic API may answer."""

from __future__ import annotations

import threading

import pytest

from services.clinical.desk import Desk
from services.clinical.remote import _change
from shared.cohort.outbox import Arrival
from tests.integration.events_factory import T0, make_change, make_pain


def _patients(desk: Desk, users: list[str]) -> tuple[list[threading.Thread], dict[str, object]]:
    """One thread per user that reads once and leaves; answers (or errors) by user."""
    answers: dict[str, object] = {}

    def live(user: str) -> None:
        try:
            answers[user] = desk.read(user)
        except RuntimeError as exc:
            answers[user] = exc
        finally:
            desk.leave()

    threads = [threading.Thread(target=live, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    return threads, answers


def test_a_round_starts_once_every_patient_of_the_day_waits_or_is_done() -> None:
    """settle() hands over the waiting reads only when no patient is still living its day."""
    desk = Desk()
    desk.open(3)
    threads, answers = _patients(desk, ["a", "b"])
    desk.leave()  # the third patient is done without reading
    assert sorted(desk.settle()) == ["a", "b"]
    rx = make_change(user_id="b")
    desk.answer("a", None)
    desk.answer("b", rx)
    for thread in threads:
        thread.join(10)
    assert answers == {"a": None, "b": rx}
    assert desk.settle() == []


def test_what_patients_leave_is_taken_once_in_the_order_left() -> None:
    """outgoing() returns the arrivals in the order sent, then nothing."""
    desk = Desk()
    first, second = Arrival(T0, make_pain()), Arrival(T0, make_pain())
    desk.send([first])
    desk.send([second])
    assert desk.outgoing() == [first, second]
    assert desk.outgoing() == []


def test_a_failed_desk_fails_waiting_and_later_reads_and_ends_the_round() -> None:
    """fail() wakes every waiting read with an error, refuses new ones, and settle returns."""
    desk = Desk()
    desk.open(2)
    threads, answers = _patients(desk, ["a"])
    desk.fail()
    assert desk.settle() == []
    late, more = _patients(desk, ["b"])
    for thread in threads + late:
        thread.join(10)
    assert isinstance(answers["a"], RuntimeError)
    assert isinstance(more["b"], RuntimeError)


def test_a_read_handed_to_a_round_that_fails_is_failed_too() -> None:
    """A round cut short leaves no patient waiting: fail() reaches reads already handed over."""
    desk = Desk()
    desk.open(1)
    threads, answers = _patients(desk, ["a"])
    assert desk.settle() == ["a"]
    desk.fail()
    threads[0].join(10)
    assert not threads[0].is_alive()
    assert isinstance(answers["a"], RuntimeError)


def test_the_clinic_api_answer_must_be_a_prescription() -> None:
    """A change passes through; any other event is refused."""
    rx = make_change()
    assert _change(rx) is rx
    with pytest.raises(TypeError, match="PainLogged"):
        _change(make_pain())
