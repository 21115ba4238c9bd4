"""Maximum lifetime per role: issue and the CLI refuse longer; verification refuses forgeries."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from services.cli.main import main
from shared.auth import MAX_TTL, InvalidToken, Principal, Role, issue, key_id, verify
from shared.settings import Settings
from tests.unit.test_token_rotation import sign

SECRET = "lifetime-secret"
NOW = 1_800_000_000
YEAR = 365 * 24 * 3600
ROLES: list[tuple[Role, str | None]] = [("device", "p-1"), ("clinic", "c-1"), ("operator", None)]


def _claims(role: str, subject: str | None, lifetime: int) -> dict[str, object]:
    return {"role": role, "sub": subject, "iat": NOW, "exp": NOW + lifetime, "jti": "j-1"}


def test_the_cli_refuses_a_ten_year_operator_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backtrack token operator --ttl 315360000` prints no token, names the limit and setting."""
    monkeypatch.setenv("BACKTRACK_SECRET", SECRET)
    assert main(["token", "operator", "--ttl", "315360000"]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""
    assert "at most 86400 s" in printed.err
    assert "BACKTRACK_TOKEN_MAX_TTL_OPERATOR" in printed.err


def test_the_cli_mints_up_to_the_maximum_the_settings_allow(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The maximum is a setting: the CLI grants exactly it, and refuses one second more."""
    monkeypatch.setenv("BACKTRACK_SECRET", SECRET)
    monkeypatch.setenv("BACKTRACK_TOKEN_MAX_TTL_DEVICE", str(100 * 24 * 3600))
    assert main(["token", "device", "--user", "p-1", "--ttl", str(100 * 24 * 3600)]) == 0
    token = capsys.readouterr().out.strip()
    body = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims["exp"] - int(claims["iat"]) == 100 * 24 * 3600
    assert main(["token", "device", "--user", "p-1", "--ttl", str(100 * 24 * 3600 + 1)]) == 2
    assert "BACKTRACK_TOKEN_MAX_TTL_DEVICE" in capsys.readouterr().err


@pytest.mark.parametrize(("role", "subject"), ROLES)
def test_issue_refuses_a_ttl_over_the_roles_maximum(role: Role, subject: str | None) -> None:
    """Each role's maximum is granted and one second more is refused."""
    assert verify(issue(role, subject, SECRET, MAX_TTL[role], NOW), SECRET, NOW + 1).role == role
    with pytest.raises(ValueError, match="at most"):
        issue(role, subject, SECRET, MAX_TTL[role] + 1, NOW)


@pytest.mark.parametrize(("role", "subject"), ROLES)
def test_a_forged_long_token_is_refused_at_verification(role: Role, subject: str | None) -> None:
    """A correctly signed token living longer than its role's maximum is refused, however signed."""
    token = sign(_claims(role, subject, MAX_TTL[role] + 1), SECRET, key_id(SECRET))
    with pytest.raises(InvalidToken, match="lifetime exceeds"):
        verify(token, SECRET, now=NOW + 1)


def test_a_ten_year_token_minted_before_key_ids_is_refused() -> None:
    """The 10-year operator token an older CLI minted no longer verifies."""
    token = sign(_claims("operator", None, 10 * YEAR), SECRET, kid=None)
    with pytest.raises(InvalidToken, match="lifetime exceeds"):
        verify(token, SECRET, now=NOW + 1)


def test_device_tokens_minted_before_key_ids_keep_their_year() -> None:
    """Old device tokens (a year by default) work until a rotation; clinic ones get no grace."""
    assert verify(sign(_claims("device", "p-1", YEAR), SECRET, None), SECRET, NOW + 1) == Principal(
        "device", "p-1"
    )
    for claims in (_claims("device", "p-1", YEAR + 1), _claims("clinic", "c-1", 91 * 24 * 3600)):
        with pytest.raises(InvalidToken, match="lifetime exceeds"):
            verify(sign(claims, SECRET, None), SECRET, now=NOW + 1)
    with pytest.raises(InvalidToken, match="lifetime exceeds"):
        verify(sign(_claims("device", "p-1", YEAR), SECRET, key_id(SECRET)), SECRET, NOW + 1)


def test_lowering_a_maximum_refuses_longer_tokens_already_out() -> None:
    """Verification reads the maximum from the settings, so lowering it cuts off longer tokens."""
    token = issue("operator", None, SECRET, 8 * 3600, NOW)
    strict = Settings(secret=SECRET, token_ttl_operator=3600, token_max_ttl_operator=3600)
    with pytest.raises(InvalidToken, match="lifetime exceeds"):
        verify(token, SECRET, NOW + 1, strict.token_lifetimes())


def test_a_default_lifetime_over_the_maximum_is_refused() -> None:
    """Settings whose default lifetime exceeds the maximum do not load."""
    with pytest.raises(ValidationError, match="lifetime"):
        Settings(token_ttl_clinic=91 * 24 * 3600)
