"""Who may write what (DESIGN.md "Who may write what"), and what the server adds.

Devices write their own user's RehabStarted, PainLogged, SessionCompleted and
OutcomeRecorded; clinics write ClinicianReviewed and OutcomeRecorded for the
users enrolled with them (``EventStore.clinic_of``); operators write
everything. Only clinics enrol (``POST /v1/enrolments``): a device's
RehabStarted may name no clinic or the one that enrolled its user, nothing
else. A user's clinic is needed only for a clinic token writing one of its
types and for a device's RehabStarted naming a clinic, so the hot path (pain
logs, sessions, operator writes) costs no read of the store.

A ClinicianReviewed is stored with ``reviewed_by`` set from the token: the
clinic id, or ``operator``. Whatever the client sent there is replaced.

Pure: the caller looks the clinic up when ``needs_clinic`` says so.
"""

from __future__ import annotations

from shared.auth import Principal
from shared.events import OPERATOR_REVIEWER, ClinicianReviewed, Input, RehabStarted


class Forbidden(Exception):  # noqa: N818 - reads as the outcome at the raise site
    """The token may not write this event; the message is the 403's detail."""


def needs_clinic(principal: Principal, event: Input) -> bool:
    """Whether ``admit`` needs the clinic of the event's user: a clinic token writing one
    of its types, or a device naming a clinic in its own user's RehabStarted."""
    if principal.role == "clinic":
        return principal.writes(event.type)
    return _named_clinic(principal, event) is not None


def _named_clinic(principal: Principal, event: Input) -> str | None:
    """The clinic a device's RehabStarted for its own user names, if any."""
    own = principal.role == "device" and principal.subject == event.user_id
    return event.clinic_id if own and isinstance(event, RehabStarted) else None


def admit(principal: Principal, event: Input, clinic_of_user: str | None = None) -> Input:
    """The event as it is to be stored, or Forbidden saying why not.

    ``clinic_of_user`` is the user's clinic when ``needs_clinic`` is true (None
    when the user has none); it is not read otherwise.
    """
    if not principal.can_write(event.type, event.user_id, clinic_of_user):
        raise Forbidden(_refusal(principal, event))
    named = _named_clinic(principal, event)
    if named is not None and named != clinic_of_user:
        raise Forbidden(
            f"forbidden: user {event.user_id} is not enrolled with that clinic; a device's"
            " RehabStarted names no clinic_id or the clinic that enrolled the user"
        )
    if isinstance(event, ClinicianReviewed):
        return event.model_copy(update={"reviewed_by": reviewer(principal)})
    return event


def reviewer(principal: Principal) -> str:
    """What ``reviewed_by`` records for a principal allowed to write a review."""
    if principal.role == "clinic" and principal.subject is not None:
        return principal.subject
    if principal.role == "operator":
        return OPERATOR_REVIEWER
    raise ValueError(f"{principal.role} tokens do not write reviews")


def _refusal(principal: Principal, event: Input) -> str:
    if not principal.writes(event.type):
        return f"forbidden: {principal.role} tokens may not write {event.type}"
    return f"forbidden: this token may not write user {event.user_id}"


__all__ = ["Forbidden", "admit", "needs_clinic", "reviewer"]
