"""``DELETE /v1/users/{user_id}``: erase a patient (operator tokens only; DESIGN.md "Privacy").

The answer, 202 ``{"user_id", "state"}``, comes once the erasure is recorded
and the patient's data key destroyed (``Eraser.begin``): from then on nothing
of theirs can be read, and reads answer 404. The deletion itself (and the
``PatientErased`` notices) finishes in a task of this process; if the process
dies first, the next start of any prescriber resumes it (``ErasureTasks``).
``state`` is ``done`` when an earlier erasure of the user had finished.

Any other token is 403 (recorded as a refusal, as reads are). The call is
recorded in the audit log as the operator's (``by`` the token's ``jti``)
before anything is destroyed.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel

from services.prescriber.entrypoints.clinic_api import ERRORS, Failure, store_available
from services.prescriber.erasure import ErasureTasks
from shared.audit import reader
from shared.events import UserId
from shared.http_auth import PrincipalDep, audit_log, route

router = APIRouter(prefix="/v1")


class ErasureAccepted(BaseModel):
    """The erasure is recorded and the data key destroyed; the deletion finishes behind."""

    user_id: str
    state: Literal["started", "done"]


@router.delete(
    "/users/{user_id}",
    status_code=202,
    response_model=ErasureAccepted,
    responses={**ERRORS, 403: {"model": Failure, "description": "Not an operator token."}},
)
async def erase_user(user_id: UserId, request: Request, principal: PrincipalDep) -> Any:
    """Erase the user: their data key destroyed now, their data deleted behind the answer."""
    audit, what = audit_log(request), route(request)
    if principal.role != "operator":
        async with store_available():
            await audit.refused(principal, what, user_id)
        raise HTTPException(403, "forbidden: only operator tokens erase users")
    by = f"operator:{reader(principal)}"
    tasks: ErasureTasks = request.app.state.erasure_tasks
    async with store_available():
        await audit.record("operator", reader(principal), what, user_id)
        record = await tasks.eraser.begin(user_id, by)
    if record.state == "started":
        tasks.finish(user_id, by)
    return {"user_id": user_id, "state": record.state}


__all__ = ["ErasureAccepted", "router"]
