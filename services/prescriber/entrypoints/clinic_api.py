"""Clinic reads: a user's prescriptions, within the caller's token scope.

device: its own user; clinic: users enrolled with that clinic now (a
transfer ends the old clinic's access at once); operator: everyone. A user
outside the scope is 403, whether or not they exist, so tokens cannot probe
for patients of other clinics. An erased user the scope allows is 404
``user erased`` (``shared.http_auth``). Every read but a device's of its own user,
and every refusal, is one entry in the audit log (``shared.audit``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.data_keys import KeyDestroyed
from shared.events import PrescriptionChanged, UserId
from shared.http_auth import PrincipalDep, audited, authorize_audited_read
from shared.store import EventStore, StoreUnavailable

router = APIRouter(prefix="/v1")
RETRY_AFTER_SECONDS = 1


class Failure(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Failure, "description": "Missing, malformed, forged or expired bearer token."},
    403: {"model": Failure, "description": "The token may not read this user."},
    429: {"model": Failure, "description": "Over the token's rate limit. Retry after Retry-After."},
    503: {"model": Failure, "description": "Event store unavailable. Retry after Retry-After."},
}


@asynccontextmanager
async def store_available() -> AsyncIterator[None]:
    """Turn a store outage into 503 with Retry-After (reads are safe to retry), never 500.

    Enrolments are safe to retry too: enrolling again records the same clinic.
    """
    try:
        yield
    except (StoreUnavailable, RedisConnectionError, RedisTimeoutError):
        retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
        raise HTTPException(503, "event store unavailable; retry", retry) from None
    except KeyDestroyed:  # erased between the check and the read
        raise HTTPException(404, "user erased") from None


def get_store(request: Request) -> EventStore:
    store: EventStore = request.app.state.store
    return store


StoreDep = Annotated[EventStore, Depends(get_store)]


def _json(change: PrescriptionChanged) -> Any:
    return change.model_dump(mode="json")


@router.get(
    "/users/{user_id}/prescription",
    response_model=PrescriptionChanged,
    responses={
        **ERRORS,
        404: {"model": Failure, "description": "No prescription yet, or the user was erased."},
    },
)
async def latest(
    user_id: UserId, request: Request, principal: PrincipalDep, store: StoreDep
) -> Any:
    """The user's latest PrescriptionChanged."""
    async with store_available():
        await authorize_audited_read(request, user_id, principal, store)
        change = await audited(request, user_id, principal, store.latest_prescription(user_id))
    if change is None:
        raise HTTPException(404, "no prescription for this user yet")
    return _json(change)


@router.get(
    "/users/{user_id}/prescriptions",
    response_model=list[PrescriptionChanged],
    responses={**ERRORS, 404: {"model": Failure, "description": "The user was erased."}},
)
async def every(user_id: UserId, request: Request, principal: PrincipalDep, store: StoreDep) -> Any:
    """Every PrescriptionChanged of the user, oldest first."""
    async with store_available():
        await authorize_audited_read(request, user_id, principal, store)
        changes = await audited(request, user_id, principal, store.prescriptions(user_id))
    return [_json(change) for _, change in changes]


__all__ = ["ERRORS", "Failure", "StoreDep", "router", "store_available"]
