"""Enrolment: a clinic takes a patient on, or lets them go (DESIGN.md "Enrolment").

``POST /v1/enrolments`` (clinic tokens only) binds a user to the caller's
clinic and answers a device token for the patient's app. When another clinic
held the user it is a transfer, and that clinic loses access at once: reads,
stream events and webhook deliveries all check the user's clinic as it is now.
``DELETE /v1/enrolments/{user_id}`` ends an enrolment: the enrolling clinic or
an operator may; another clinic gets 403 whether or not the user exists, as
reads do, so clinics cannot probe. Every change is recorded with who and when
(``EventStore.enrol``, ``unenrol``).

The device token goes to the enrolling clinic, which hands it to the
patient's app; so every enrolment and unenrolment first revokes the user's
earlier device tokens (``shared.revocation_log``, by subject), and a clinic
that loses the patient loses the token it was given too. The new token is
issued after that revocation (issue times have milliseconds), so it is newer
than its cutoff and older than any later one. An erased user cannot be
enrolled again (409): their id stays erased unless an operator readmits it.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict

from services.prescriber.entrypoints.clinic_api import Failure, StoreDep, store_available
from shared import auth
from shared.events import UserId
from shared.http_auth import PrincipalDep, erasures_of
from shared.revocation_log import revoke
from shared.store import UserErased

router = APIRouter(prefix="/v1")
#: the 409 for an erased user's id
ERASED = "user erased: the id cannot be enrolled again"
log = structlog.get_logger("backtrack.enrolment")

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Failure, "description": "Missing, malformed, forged or expired bearer token."},
    503: {"model": Failure, "description": "Event store unavailable. Retry after Retry-After."},
}


class EnrolmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: UserId


class Enrolled(BaseModel):
    """The user is the caller's patient now; ``device_token`` is for the patient's app."""

    user_id: str
    clinic_id: str
    device_token: str


@router.post(
    "/enrolments",
    status_code=201,
    response_model=Enrolled,
    responses={
        **_ERRORS,
        400: {"model": Failure, "description": "The body is not JSON."},
        403: {"model": Failure, "description": "Only clinic tokens enrol."},
        409: {"model": Failure, "description": "The user was erased; the id is not reused."},
    },
)
async def enrol(
    body: EnrolmentRequest,
    request: Request,
    response: Response,
    principal: PrincipalDep,
    store: StoreDep,
) -> Any:
    """Enrol the user with the caller's clinic (a transfer if another clinic had them)."""
    clinic = principal.subject
    if principal.role != "clinic" or clinic is None:
        raise HTTPException(403, f"forbidden: {principal.role} tokens may not enrol")
    settings = request.app.state.settings
    lifetimes = settings.token_lifetimes()
    erasures = erasures_of(request)
    async with store_available():
        if erasures is not None and await erasures.erased(body.user_id):
            raise HTTPException(409, ERASED)
        try:  # the script checks the erasure record too: an erasure begun meanwhile
            record = await store.enrol(body.user_id, clinic, by=f"clinic:{clinic}")
        except UserErased:
            raise HTTPException(409, ERASED) from None
        await _revoke_devices(request, body.user_id, lifetimes)
    log.info("enrolled", user_id=body.user_id, clinic_id=clinic, previous=record.previous)
    token = auth.issue("device", body.user_id, settings.secret, lifetimes=lifetimes)
    response.headers["Cache-Control"] = "no-store"  # the answer carries a bearer token
    return {"user_id": body.user_id, "clinic_id": clinic, "device_token": token}


@router.delete(
    "/enrolments/{user_id}",
    status_code=204,
    response_class=Response,
    responses={
        **_ERRORS,
        403: {
            "model": Failure,
            "description": "Not an operator, nor the clinic the user is enrolled with.",
        },
    },
)
async def unenrol(
    user_id: UserId, request: Request, principal: PrincipalDep, store: StoreDep
) -> Response:
    """End the user's enrolment: the enrolling clinic, or an operator (whichever clinic)."""
    if principal.role == "operator":
        clinic, by = None, "operator"
    elif principal.role == "clinic" and principal.subject is not None:
        clinic, by = principal.subject, f"clinic:{principal.subject}"
    else:
        raise HTTPException(403, f"forbidden: {principal.role} tokens may not unenrol")
    async with store_available():
        record = await store.unenrol(user_id, clinic, by)
    if record is None and clinic is not None:
        raise HTTPException(403, "forbidden: this clinic has not enrolled that user")
    if record is not None:
        async with store_available():
            await _revoke_devices(request, user_id, request.app.state.settings.token_lifetimes())
        log.info("unenrolled", user_id=user_id, clinic_id=record.previous, by=by)
    return Response(status_code=204)


async def _revoke_devices(request: Request, user_id: str, lifetimes: auth.Lifetimes) -> None:
    """Revoke every device token of ``user_id`` issued until now."""
    await revoke(request.app.state.redis, "subject", user_id, lifetimes, role="device")


__all__ = ["EnrolmentRequest", "router"]
