"""Who may write what at the ingest, and the reviewer it records (pure: no store, no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest

from services.logging_svc.writers import Forbidden, admit, needs_clinic, reviewer
from shared.auth import Principal
from shared.events import ClinicianReviewed, Input
from tests.integration.events_factory import T0, make_pain, make_started

DEVICE = Principal("device", "u-1")
CLINIC = Principal("clinic", "clinic-a")
OPERATOR = Principal("operator", None)


def review(**overrides: Any) -> ClinicianReviewed:
    fields: dict[str, Any] = {
        "event_id": "3e7b9d21-8c4f-4a6e-b5d0-7f2a1c9e4b66",
        "user_id": "u-1",
        "occurred_at": T0,
        "action": "exclude_exercise",
        "exercise_id": "bird_dog",
        "note": "knee surgery last year",
    }
    return ClinicianReviewed(**(fields | overrides))


def test_clinic_review_is_stored_with_its_clinic_whatever_the_client_said() -> None:
    """A clinic's review of its own user is admitted with reviewed_by = the clinic id."""
    admitted = admit(CLINIC, review(reviewed_by="clinic-b"), "clinic-a")
    assert isinstance(admitted, ClinicianReviewed)
    assert admitted.reviewed_by == "clinic-a"
    assert admitted.model_dump(exclude={"reviewed_by"}) == review().model_dump(
        exclude={"reviewed_by"}
    )


def test_operator_review_is_stored_as_operator() -> None:
    """An operator's review is admitted for any user with reviewed_by = ``operator``."""
    for sent in (None, "clinic-a"):
        admitted = admit(OPERATOR, review(reviewed_by=sent))
        assert isinstance(admitted, ClinicianReviewed)
        assert admitted.reviewed_by == "operator"


@pytest.mark.parametrize("clinic_of_user", ["clinic-b", None])
def test_clinic_may_not_write_for_a_user_of_another_clinic_or_none(
    clinic_of_user: str | None,
) -> None:
    """A user of another clinic, or of no clinic, is not the clinic's to review."""
    with pytest.raises(Forbidden, match="may not write user u-1"):
        admit(CLINIC, review(), clinic_of_user)


def test_device_may_not_write_a_review_even_for_itself() -> None:
    """Devices never write ClinicianReviewed, and the refusal names the type."""
    with pytest.raises(Forbidden, match="device tokens may not write ClinicianReviewed"):
        admit(DEVICE, review())


@pytest.mark.parametrize("event", [make_pain(), make_started()], ids=lambda e: e.type)
def test_clinic_may_not_write_patient_side_types(event: Input) -> None:
    """A clinic token writing a pain log or an intake is refused, naming the type."""
    with pytest.raises(Forbidden, match=f"clinic tokens may not write {event.type}"):
        admit(CLINIC, event, "clinic-a")


def test_device_events_pass_unchanged() -> None:
    """What a device may write is admitted as the very same event (no copy on the hot path)."""
    event = make_pain()
    assert admit(DEVICE, event) is event
    with pytest.raises(Forbidden, match="may not write user u-2"):
        admit(DEVICE, make_pain(user_id="u-2"))


def test_only_clinic_writes_and_device_intakes_naming_a_clinic_need_the_users_clinic() -> None:
    """The store is read for a clinic's review or outcome and for a device's own intake that
    names a clinic; never for pain logs, intakes naming none, others' users or operators."""
    assert needs_clinic(CLINIC, review())
    assert needs_clinic(DEVICE, make_started(clinic_id="clinic-a"))
    assert not needs_clinic(CLINIC, make_pain())
    assert not needs_clinic(DEVICE, make_pain())
    assert not needs_clinic(DEVICE, make_started())
    assert not needs_clinic(DEVICE, make_started(user_id="u-2", clinic_id="clinic-a"))
    assert not needs_clinic(OPERATOR, review())
    assert not needs_clinic(OPERATOR, make_started(clinic_id="clinic-a"))


@pytest.mark.parametrize("clinic_of_user", ["clinic-b", None])
def test_a_device_may_not_name_a_clinic_that_did_not_enrol_it(clinic_of_user: str | None) -> None:
    """A device's intake naming another clinic than its user's (or any, unenrolled) is refused."""
    with pytest.raises(Forbidden, match="not enrolled with that clinic"):
        admit(DEVICE, make_started(clinic_id="clinic-a"), clinic_of_user)


def test_a_device_may_name_its_enrolling_clinic_or_none() -> None:
    """The enrolling clinic, or no clinic at all, is admitted unchanged."""
    named, unnamed = make_started(clinic_id="clinic-a"), make_started()
    assert admit(DEVICE, named, "clinic-a") is named
    assert admit(DEVICE, unnamed, None) is unnamed
    assert admit(OPERATOR, make_started(clinic_id="clinic-z")).clinic_id == "clinic-z"


def test_reviewer_is_refused_for_devices() -> None:
    """A device has no reviewer name: asking for one is a programming error."""
    assert (reviewer(CLINIC), reviewer(OPERATOR)) == ("clinic-a", "operator")
    with pytest.raises(ValueError, match="device"):
        reviewer(DEVICE)
