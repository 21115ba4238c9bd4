"""Key ids and rotation: BACKTRACK_SECRET signs, BACKTRACK_PREVIOUS_SECRETS only verify."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from shared import http_auth
from shared.auth import InvalidToken, KeyRing, Principal, Verifier, issue, key_id, verify
from shared.settings import DEV_SECRET, Settings

OLD, NEW, STRANGER = "the-old-secret", "the-new-secret", "a-secret-nobody-configured"
NOW = 1_800_000_000.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(payload: dict[str, object], secret: str, kid: str | None) -> str:
    """A token over ``payload`` as ``issue`` signs (``kid`` None: the format before key ids)."""
    body = _b64(json.dumps(payload).encode())
    signed = f"{kid}.{body}" if kid else body
    return f"{signed}.{_b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())}"


def test_a_token_signed_with_a_previous_secret_verifies() -> None:
    """After a rotation, old tokens still verify; new ones carry the new key's id."""
    old_token = issue("device", "p-1", OLD, now=NOW)
    ring = Settings(secret=NEW, previous_secrets=(OLD,)).token_keys()
    assert verify(old_token, ring, now=NOW + 1) == Principal("device", "p-1")
    new_token = issue("device", "p-1", NEW, now=NOW)
    assert new_token.split(".")[0] == ring.kid == key_id(NEW) != key_id(OLD)
    assert verify(new_token, ring, now=NOW + 1) == Principal("device", "p-1")


def test_a_token_signed_with_an_unknown_key_is_refused() -> None:
    """A key id the ring does not hold is refused; so is a known key id over another key's MAC."""
    ring = KeyRing(NEW, (OLD,))
    stranger = issue("operator", None, STRANGER, now=NOW)
    with pytest.raises(InvalidToken, match="unknown key id"):
        verify(stranger, ring, now=NOW)
    _, body, signature = stranger.split(".")
    for kid in (key_id(OLD), key_id(NEW)):
        with pytest.raises(InvalidToken, match="bad signature"):
            verify(f"{kid}.{body}.{signature}", ring, now=NOW)


def test_once_the_old_secret_is_dropped_its_tokens_are_refused() -> None:
    """The last step of a rotation retires every token the old secret signed."""
    old_token = issue("clinic", "clinic-a", OLD, now=NOW)
    assert Verifier(KeyRing(NEW, (OLD,)))(old_token, now=NOW) == Principal("clinic", "clinic-a")
    with pytest.raises(InvalidToken, match="unknown key id"):
        Verifier(KeyRing(NEW))(old_token, now=NOW)


def test_tokens_without_a_key_id_verify_against_the_current_secret_only() -> None:
    """A token minted before key ids is accepted while its secret signs, not after a rotation."""
    payload = {"role": "device", "sub": "p-1", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j1"}
    legacy = sign(payload, OLD, kid=None)
    assert verify(legacy, KeyRing(OLD), now=NOW) == Principal("device", "p-1")
    with pytest.raises(InvalidToken, match="bad signature"):
        verify(legacy, KeyRing(NEW, (OLD,)), now=NOW)


def test_every_api_verifies_with_the_previous_secrets_until_they_are_dropped() -> None:
    """The one HTTP dependency takes its keys from the settings: 401 once the old secret is gone."""
    header = f"Bearer {issue('device', 'p-1', OLD)}"
    rotating = http_auth.build_verifier(Settings(secret=NEW, previous_secrets=(OLD,)))
    assert http_auth.authenticate(rotating, header) == Principal("device", "p-1")
    with pytest.raises(HTTPException) as refused:
        http_auth.authenticate(http_auth.build_verifier(Settings(secret=NEW)), header)
    assert refused.value.status_code == 401
    assert "unknown key id" in str(refused.value.detail)


def test_previous_secrets_are_a_json_list_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BACKTRACK_PREVIOUS_SECRETS is JSON, like the other list settings; the current one signs."""
    monkeypatch.setenv("BACKTRACK_SECRET", NEW)
    monkeypatch.setenv("BACKTRACK_PREVIOUS_SECRETS", json.dumps([OLD, "an-older-one"]))
    ring = Settings().token_keys()
    assert ring.kid == key_id(NEW)
    assert sorted(ring.by_kid.values()) == sorted([NEW, OLD, "an-older-one"])


@pytest.mark.parametrize(
    "options",
    [
        {"secret": NEW, "previous_secrets": (NEW,)},
        {"secret": NEW, "previous_secrets": ("",)},
        {"secret": NEW, "previous_secrets": (DEV_SECRET,), "environment": "production"},
    ],
)
def test_settings_refuse_a_previous_secret_that_is_empty_repeated_or_the_default(
    options: dict[str, object],
) -> None:
    """A previous secret equal to the current one, empty, or the dev one in production: refused."""
    with pytest.raises(ValidationError):
        Settings(**options)  # type: ignore[arg-type]
