"""Bearer tokens: signing, verification and what each role may do."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.auth import (
    DEFAULT_TTL,
    InvalidToken,
    Principal,
    Role,
    from_header,
    issue,
    key_id,
    verify,
)
from shared.events import INPUT_TYPES

SECRET = "test-secret"
NOW = 1_800_000_000.0


def _payload(token: str) -> dict[str, object]:
    body = token.split(".")[-2]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


@pytest.mark.parametrize(
    ("role", "subject"), [("device", "p-0001"), ("clinic", "clinic_7"), ("operator", None)]
)
def test_issue_then_verify_round_trips(role: str, subject: str | None) -> None:
    """A token issued for a role and subject verifies to exactly that principal."""
    token = issue(role, subject, SECRET, now=NOW)  # type: ignore[arg-type]
    assert verify(token, SECRET, now=NOW + 1) == Principal(role, subject)  # type: ignore[arg-type]


def test_token_is_kid_payload_signature_with_role_defaults() -> None:
    """The token is kid.payload.signature in base64url and expires after the role's default TTL."""
    token = issue("clinic", "c1", SECRET, now=NOW)
    assert token.count(".") == 2
    assert token.split(".")[0] == key_id(SECRET)
    assert all(c.isalnum() or c in "-_." for c in token)
    payload = _payload(token)
    assert payload["iat"] == int(NOW)
    assert payload["exp"] == int(NOW) + DEFAULT_TTL["clinic"]
    assert DEFAULT_TTL["operator"] < DEFAULT_TTL["clinic"] < DEFAULT_TTL["device"]


def test_each_token_has_its_own_id() -> None:
    """Two tokens issued at the same instant differ (random jti)."""
    assert issue("operator", None, SECRET, now=NOW) != issue("operator", None, SECRET, now=NOW)


def test_forged_payload_is_rejected() -> None:
    """Changing the payload (device of another user) without re-signing fails verification."""
    token = issue("device", "alice", SECRET, now=NOW)
    payload = _payload(token) | {"sub": "bob"}
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    kid, _, signature = token.split(".")
    with pytest.raises(InvalidToken, match="signature"):
        verify(f"{kid}.{forged_body}.{signature}", SECRET, now=NOW)


def test_wrong_secret_is_rejected() -> None:
    """A token signed with another secret does not verify."""
    token = issue("operator", None, "other-secret", now=NOW)
    with pytest.raises(InvalidToken):
        verify(token, SECRET, now=NOW)


def test_expired_token_is_rejected() -> None:
    """A token is refused from its exp second on, and accepted just before."""
    token = issue("device", "p1", SECRET, ttl_seconds=60, now=NOW)
    assert verify(token, SECRET, now=NOW + 59).subject == "p1"
    with pytest.raises(InvalidToken, match="expired"):
        verify(token, SECRET, now=NOW + 60)


def test_token_from_the_far_future_is_rejected() -> None:
    """A token whose iat is beyond the clock skew allowance is refused."""
    token = issue("device", "p1", SECRET, now=NOW + 3600)
    with pytest.raises(InvalidToken, match="future"):
        verify(token, SECRET, now=NOW)


@pytest.mark.parametrize(
    "token",
    ["", None, "abc", "a.b.c", "!!!.???", "e30.", "." * 3, "x" * 5000, "bm90IGpzb24.c2ln", "é.x.y"],
)
def test_malformed_tokens_are_rejected(token: str | None) -> None:
    """Missing, empty, oversized or non-base64url tokens raise InvalidToken, never another error."""
    with pytest.raises(InvalidToken):
        verify(token, SECRET, now=NOW)


def test_signed_but_invalid_payload_is_rejected() -> None:
    """A correctly signed payload with an unknown role is still refused."""
    import hashlib  # noqa: PLC0415
    import hmac  # noqa: PLC0415

    body = base64.urlsafe_b64encode(b'{"role":"root","sub":null,"iat":1,"exp":9999999999}')
    body_text = body.rstrip(b"=").decode()
    sig = hmac.new(SECRET.encode(), body_text.encode(), hashlib.sha256).digest()
    token = f"{body_text}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    with pytest.raises(InvalidToken, match="role"):
        verify(token, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("role", "subject"),
    [("device", None), ("device", "bad id!"), ("clinic", ""), ("operator", "x"), ("root", None)],
)
def test_issue_refuses_subjects_that_do_not_fit_the_role(role: str, subject: str | None) -> None:
    """Devices and clinics need a valid id, operators none, and roles are a closed set."""
    with pytest.raises(ValueError, match=r"subject|role"):
        issue(role, subject, SECRET, now=NOW)  # type: ignore[arg-type]


def test_issue_refuses_empty_secret_and_non_positive_ttl() -> None:
    """An empty secret or a zero lifetime is a programming error, not a token."""
    with pytest.raises(ValueError, match="secret"):
        issue("operator", None, "", now=NOW)
    with pytest.raises(ValueError, match="ttl"):
        issue("operator", None, SECRET, ttl_seconds=0, now=NOW)


def test_device_writes_and_reads_only_its_own_user() -> None:
    """A device token is scoped to one user for writes and reads."""
    device = Principal("device", "alice")
    assert device.can_write("PainLogged", "alice", None)
    assert not device.can_write("PainLogged", "bob", None)
    assert device.can_read("alice", None)
    assert not device.can_read("bob", "c1")


@pytest.mark.parametrize(
    ("role", "subject", "allowed"),
    [
        ("device", "alice", {"RehabStarted", "PainLogged", "SessionCompleted", "OutcomeRecorded"}),
        ("clinic", "c1", {"ClinicianReviewed", "OutcomeRecorded"}),
        ("operator", None, set(INPUT_TYPES)),
    ],
)
def test_each_role_writes_only_its_event_types(
    role: Role, subject: str | None, allowed: set[str]
) -> None:
    """Devices, clinics and operators may each write exactly the types DESIGN.md lists."""
    principal = Principal(role, subject)
    assert {kind for kind in INPUT_TYPES if principal.writes(kind)} == allowed
    for kind in INPUT_TYPES:
        assert principal.can_write(kind, "alice", "c1") == (kind in allowed)


def test_clinic_reads_and_writes_only_its_users() -> None:
    """A clinic token reads and writes only users of that clinic; a user of none is not its."""
    clinic = Principal("clinic", "c1")
    assert clinic.can_read("alice", "c1")
    assert not clinic.can_read("alice", "c2")
    assert not clinic.can_read("alice", None)
    assert clinic.can_write("ClinicianReviewed", "alice", "c1")
    assert not clinic.can_write("ClinicianReviewed", "alice", "c2")
    assert not clinic.can_write("OutcomeRecorded", "alice", None)


def test_operator_reads_and_writes_everyone() -> None:
    """An operator token may write and read any user."""
    operator = Principal("operator", None)
    assert operator.can_write("ClinicianReviewed", "anyone", None)
    assert operator.can_read("anyone", None)


@pytest.mark.parametrize(
    ("header", "token"), [("Bearer abc.def", "abc.def"), ("bearer  abc.def ", "abc.def")]
)
def test_from_header_extracts_bearer_token(header: str, token: str) -> None:
    """The Authorization header's bearer token is returned, scheme case-insensitive."""
    assert from_header(header) == token


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwdw==", "Bearer", "Bearer   "])
def test_from_header_rejects_other_schemes(header: str | None) -> None:
    """A missing header, another scheme or an empty token raises InvalidToken."""
    with pytest.raises(InvalidToken):
        from_header(header)


NAMES = st.sampled_from(("alice", "bob", "c1", "c2", "operator"))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(("device", "clinic", "operator")),
    NAMES,
    NAMES,
    st.none() | NAMES,
)
def test_clinician_actions_come_only_from_permitted_writers(
    role: Role, subject: str, user: str, clinic_of_user: str | None
) -> None:
    """A review is writable by an operator, or by a clinic for a user of that clinic; never else."""
    principal = Principal(role, None if role == "operator" else subject)
    allowed = role == "operator" or (role == "clinic" and clinic_of_user == subject)
    assert principal.can_write("ClinicianReviewed", user, clinic_of_user) is allowed
