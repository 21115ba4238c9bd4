"""Access matrix: every endpoint x every role x every kind of token, against the real processes.

The target is always user OWN, enrolled with clinic-own. "device other" is a
device token of another user; "clinic other" a token of another clinic. The
ingest's endpoints appear once per kind of event that tells writers apart:
a pain log (devices), a clinician's review (clinics) and an outcome (both).
After each call to an enrolment endpoint clinic-own enrols OWN again. An
erasure targets a fresh user that clinic-own enrols just before, never OWN.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.cli.stack import Stack
from shared.auth import issue
from tests.e2e.conftest import SECRET

OWN, OTHER, FRESH = "am-own", "am-other", "am-fresh"
ROLES: dict[str, tuple[str, str | None]] = {
    "device-own": ("device", OWN),
    "device-other": ("device", OTHER),
    "clinic-own": ("clinic", "clinic-own"),
    "clinic-other": ("clinic", "clinic-other"),
    "operator": ("operator", None),
}
ENDPOINTS = {
    "post-event": ("ingest", "POST", "/v1/events"),
    "post-batch": ("ingest", "POST", "/v1/events/batch"),
    "post-review": ("ingest", "POST", "/v1/events"),
    "post-batch-review": ("ingest", "POST", "/v1/events/batch"),
    "post-outcome": ("ingest", "POST", "/v1/events"),
    "get-prescription": ("clinic", "GET", "/v1/users/{user_id}/prescription"),
    "get-prescriptions": ("clinic", "GET", "/v1/users/{user_id}/prescriptions"),
    "get-stream": ("clinic", "GET", "/v1/users/{user_id}/prescriptions/stream"),
    "post-subscription": ("clinic", "POST", "/v1/subscriptions"),
    "get-subscriptions": ("clinic", "GET", "/v1/subscriptions"),
    "delete-subscription": ("clinic", "DELETE", "/v1/subscriptions/{sub_id}"),
    "get-deliveries": ("clinic", "GET", "/v1/subscriptions/{sub_id}/deliveries"),
    "post-enrolment": ("clinic", "POST", "/v1/enrolments"),
    "delete-enrolment": ("clinic", "DELETE", "/v1/enrolments/{user_id}"),
    "delete-user": ("clinic", "DELETE", "/v1/users/{user_id}"),
}
#: A public address literal (no DNS); port 9 discards, and the subscriptions are deleted.
HOOK = "http://93.184.215.14:9/hook"
#: With a valid token. "item-403": 202, but the batch item is refused as forbidden.
EXPECTED: dict[tuple[str, str], int | str] = {
    ("post-event", "device-own"): 202,
    ("post-event", "device-other"): 403,
    ("post-event", "clinic-own"): 403,
    ("post-event", "clinic-other"): 403,
    ("post-event", "operator"): 202,
    ("post-batch", "device-own"): 202,
    ("post-batch", "device-other"): "item-403",
    ("post-batch", "clinic-own"): "item-403",
    ("post-batch", "clinic-other"): "item-403",
    ("post-batch", "operator"): 202,
    # Only clinics (for their own users) and operators write ClinicianReviewed.
    ("post-review", "device-own"): 403,
    ("post-review", "device-other"): 403,
    ("post-review", "clinic-own"): 202,
    ("post-review", "clinic-other"): 403,
    ("post-review", "operator"): 202,
    ("post-batch-review", "device-own"): "item-403",
    ("post-batch-review", "device-other"): "item-403",
    ("post-batch-review", "clinic-own"): 202,
    ("post-batch-review", "clinic-other"): "item-403",
    ("post-batch-review", "operator"): 202,
    # OutcomeRecorded: the user's device, the user's clinic, operators.
    ("post-outcome", "device-own"): 202,
    ("post-outcome", "device-other"): 403,
    ("post-outcome", "clinic-own"): 202,
    ("post-outcome", "clinic-other"): 403,
    ("post-outcome", "operator"): 202,
    ("get-prescription", "device-own"): 200,
    ("get-prescription", "device-other"): 403,
    ("get-prescription", "clinic-own"): 200,
    ("get-prescription", "clinic-other"): 403,
    ("get-prescription", "operator"): 200,
    ("get-prescriptions", "device-own"): 200,
    ("get-prescriptions", "device-other"): 403,
    ("get-prescriptions", "clinic-own"): 200,
    ("get-prescriptions", "clinic-other"): 403,
    ("get-prescriptions", "operator"): 200,
    ("get-stream", "device-own"): 200,
    ("get-stream", "device-other"): 403,
    ("get-stream", "clinic-own"): 200,
    ("get-stream", "clinic-other"): 403,
    ("get-stream", "operator"): 200,
    # The body names clinic-own and OWN: another clinic may not subscribe for them.
    ("post-subscription", "device-own"): 403,
    ("post-subscription", "device-other"): 403,
    ("post-subscription", "clinic-own"): 201,
    ("post-subscription", "clinic-other"): 403,
    ("post-subscription", "operator"): 201,
    ("get-subscriptions", "device-own"): 403,
    ("get-subscriptions", "device-other"): 403,
    ("get-subscriptions", "clinic-own"): 200,
    ("get-subscriptions", "clinic-other"): 200,
    ("get-subscriptions", "operator"): 200,
    # The subscription belongs to clinic-own; to another clinic it does not exist.
    ("delete-subscription", "device-own"): 403,
    ("delete-subscription", "device-other"): 403,
    ("delete-subscription", "clinic-own"): 204,
    ("delete-subscription", "clinic-other"): 404,
    ("delete-subscription", "operator"): 204,
    ("get-deliveries", "device-own"): 403,
    ("get-deliveries", "device-other"): 403,
    ("get-deliveries", "clinic-own"): 200,
    ("get-deliveries", "clinic-other"): 404,
    ("get-deliveries", "operator"): 200,
    # Only clinics enrol; any clinic may take a patient on (another clinic: a transfer).
    ("post-enrolment", "device-own"): 403,
    ("post-enrolment", "device-other"): 403,
    ("post-enrolment", "clinic-own"): 201,
    ("post-enrolment", "clinic-other"): 201,
    ("post-enrolment", "operator"): 403,
    # The enrolling clinic or an operator ends an enrolment; to another clinic it is 403.
    ("delete-enrolment", "device-own"): 403,
    ("delete-enrolment", "device-other"): 403,
    ("delete-enrolment", "clinic-own"): 204,
    ("delete-enrolment", "clinic-other"): 403,
    ("delete-enrolment", "operator"): 204,
    # Only operators erase; the patient's own clinic may not.
    ("delete-user", "device-own"): 403,
    ("delete-user", "device-other"): 403,
    ("delete-user", "clinic-own"): 403,
    ("delete-user", "clinic-other"): 403,
    ("delete-user", "operator"): 202,
}
#: Whatever the role and endpoint, a token that does not verify is 401.
BAD_TOKENS = ("missing", "expired", "forged", "wrong-secret", "malformed")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(token: str) -> str:
    """The token with its payload rewritten to an operator's, keeping the old signature."""
    kid, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload |= {"role": "operator", "sub": None, "exp": payload["exp"] + 3600}
    return f"{kid}.{_b64(json.dumps(payload).encode())}.{signature}"


def _headers(role: str, kind: str) -> dict[str, str]:
    name, subject = ROLES[role]
    tokens = {
        "valid": lambda: issue(name, subject, SECRET),  # type: ignore[arg-type]
        "expired": lambda: issue(name, subject, SECRET, 60, time.time() - 3600),  # type: ignore[arg-type]
        "forged": lambda: _forge(issue(name, subject, SECRET)),  # type: ignore[arg-type]
        "wrong-secret": lambda: issue(name, subject, "not-the-secret"),  # type: ignore[arg-type]
        "malformed": lambda: issue(name, subject, SECRET).replace(".", ""),  # type: ignore[arg-type]
    }
    return {} if kind == "missing" else {"Authorization": f"Bearer {tokens[kind]()}"}


def _event(user: str, kind: str = "PainLogged", **extra: Any) -> dict[str, Any]:
    event = {
        "event_id": str(uuid.uuid4()),
        "type": kind,
        "user_id": user,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
    }
    if kind == "PainLogged":
        event |= {"score": 3, "context": "morning"}
    return event | extra


def _subscribe(stack: Stack) -> str:
    """A new subscription of clinic-own for OWN, made by an operator; its id."""
    body = {"url": HOOK, "user_ids": [OWN], "clinic_id": "clinic-own"}
    operator = _headers("operator", "valid")
    reply = httpx.post(f"{stack.clinic_url}/v1/subscriptions", json=body, headers=operator)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def _unsubscribe(stack: Stack, sub_id: str) -> None:
    operator = _headers("operator", "valid")
    httpx.delete(f"{stack.clinic_url}/v1/subscriptions/{sub_id}", headers=operator, timeout=10)


def _status(method: str, url: str, headers: dict[str, str], body: Any) -> httpx.Response:
    if url.endswith("/stream"):  # read the head only: the body never ends
        with httpx.stream(method, url, headers=headers, timeout=10) as reply:
            if reply.status_code != 200:
                reply.read()
            return reply
    return httpx.request(method, url, json=body, headers=headers, timeout=10)


def _call(stack: Stack, endpoint: str, headers: dict[str, str], user: str = OWN) -> httpx.Response:
    service, method, path = ENDPOINTS[endpoint]
    base = stack.ingest_url if service == "ingest" else stack.clinic_url
    if endpoint == "delete-user":
        user = f"am-erase-{uuid.uuid4().hex[:12]}"
        _enrol(stack, user, "clinic-own")
    sub_id = _subscribe(stack) if "{sub_id}" in path else None
    url = base + path.format(user_id=user, sub_id=sub_id)
    review = _event(user, "ClinicianReviewed", action="hold", note="seen")
    body: Any = {
        "post-event": _event(user),
        "post-batch": {"events": [_event(user)]},
        "post-review": review,
        "post-batch-review": {"events": [review]},
        "post-outcome": _event(user, "OutcomeRecorded", instrument="odi", score=40),
        "post-subscription": {"url": HOOK, "user_ids": [user], "clinic_id": "clinic-own"},
        "post-enrolment": {"user_id": user},
    }.get(endpoint)
    try:
        reply = _status(method, url, headers, body)
    finally:
        if sub_id is not None:
            _unsubscribe(stack, sub_id)
        if endpoint.endswith("-enrolment"):
            _enrol(stack, user, "clinic-own")
    if reply.status_code == 201 and endpoint == "post-subscription":
        _unsubscribe(stack, reply.json()["id"])
    return reply


def _enrol(stack: Stack, user: str, clinic: str) -> None:
    """The clinic enrols the user (again), through the API."""
    headers = {"Authorization": f"Bearer {issue('clinic', clinic, SECRET)}"}
    url = f"{stack.clinic_url}/v1/enrolments"
    reply = httpx.post(url, json={"user_id": user}, headers=headers, timeout=10)
    assert reply.status_code == 201, reply.text


@pytest.fixture(scope="module")
def enrolled(stack: Stack) -> Stack:
    """OWN enrolled with clinic-own and OTHER with clinic-other, each with a prescription."""
    operator = _headers("operator", "valid")
    for user, clinic in ((OWN, "clinic-own"), (OTHER, "clinic-other")):
        started = _event(user, "RehabStarted", clinic_id=clinic, cause="gradual")
        reply = httpx.post(f"{stack.ingest_url}/v1/events", json=started, headers=operator)
        assert reply.status_code == 202
    deadline = time.monotonic() + 15
    for user in (OWN, OTHER):
        url = f"{stack.clinic_url}/v1/users/{user}/prescription"
        while httpx.get(url, headers=operator, timeout=5).status_code != 200:
            assert time.monotonic() < deadline, f"no prescription for {user}"
            time.sleep(0.05)
    return stack


@pytest.mark.parametrize("kind", ["valid", *BAD_TOKENS])
@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_access(enrolled: Stack, endpoint: str, role: str, kind: str) -> None:
    """Each endpoint answers each role and token kind exactly as the table says."""
    reply = _call(enrolled, endpoint, _headers(role, kind))
    expected = EXPECTED[endpoint, role] if kind == "valid" else 401
    if expected == 401:
        assert reply.status_code == 401, reply.text
        assert reply.headers["www-authenticate"].startswith("Bearer")
        return
    if expected == "item-403":
        assert reply.status_code == 202, reply.text
        (result,) = reply.json()["results"]
        assert result["index"] == 0
        assert result["error"].startswith("forbidden")
        return
    assert reply.status_code == expected, reply.text
    if endpoint.startswith("post-batch"):
        assert reply.json()["results"][0]["status"] == "accepted"
    if endpoint == "get-prescription" and expected == 200:
        assert reply.json()["user_id"] == OWN
    if endpoint == "post-subscription" and expected == 201:
        assert set(reply.json()) == {"id", "secret"}
    if endpoint == "post-enrolment" and expected == 201:
        answer = reply.json()
        assert set(answer) == {"user_id", "clinic_id", "device_token"}
        assert (answer["user_id"], answer["clinic_id"]) == (OWN, ROLES[role][1])
    if endpoint == "delete-user" and expected == 202:
        assert reply.json()["state"] == "started"
    if expected == 403:
        assert "Authorization" not in reply.text


@pytest.mark.parametrize(
    ("role", "endpoint", "expected"),
    [
        ("operator", "get-prescription", 404),
        ("operator", "get-prescriptions", 200),
        ("clinic-own", "get-prescription", 403),
        ("clinic-own", "get-prescriptions", 403),
        ("device-own", "get-prescription", 403),
    ],
)
def test_user_without_prescriptions(stack: Stack, role: str, endpoint: str, expected: int) -> None:
    """A readable user without prescriptions is 404 (or []); unknown to a clinic, it is 403."""
    reply = _call(stack, endpoint, _headers(role, "valid"), user=FRESH)
    assert reply.status_code == expected
    if expected == 200:
        assert reply.json() == []


def test_own_device_reads_404_before_its_first_prescription(stack: Stack) -> None:
    """A device reading its own user with nothing decided yet gets 404, not 403."""
    token = {"Authorization": f"Bearer {issue('device', FRESH, SECRET)}"}
    url = f"{stack.clinic_url}/v1/users/{FRESH}/prescription"
    assert httpx.get(url, headers=token, timeout=10).status_code == 404


def test_matrix_covers_every_served_endpoint(stack: Stack) -> None:
    """Every /v1 operation either service documents is in the matrix, so new ones must be added."""
    served = set()
    for service, url in (("ingest", stack.ingest_url), ("clinic", stack.clinic_url)):
        paths = httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"]
        served |= {
            (service, method.upper(), path)
            for path, methods in paths.items()
            if path.startswith("/v1/")
            for method in methods
        }
    assert served == set(ENDPOINTS.values())
