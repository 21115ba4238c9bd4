"""`backtrack token inspect` shows the jti operators revoke; bad `revoke` requests are refused."""

from __future__ import annotations

import io
import json

import pytest

from services.cli.main import main
from shared.auth import issue, key_id
from tests.unit.test_token_rotation import sign

SECRET = "cli-secret"


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKTRACK_SECRET", SECRET)
    monkeypatch.delenv("BACKTRACK_REDIS_URL", raising=False)


def _inspect(token: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["token", "inspect", token]) == 0
    shown: dict[str, object] = json.loads(capsys.readouterr().out)
    return shown


def test_inspect_shows_the_jti_and_whether_the_token_verifies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The claims come out as JSON with the jti; a foreign token says why it does not verify."""
    token = issue("device", "p-1", SECRET)
    shown = _inspect(token, capsys)
    assert shown["kid"] == key_id(SECRET)
    assert (shown["role"], shown["sub"], shown["verifies"]) == ("device", "p-1", True)
    assert isinstance(shown["jti"], str)
    assert shown["jti"] != _inspect(issue("device", "p-1", SECRET), capsys)["jti"]
    foreign = _inspect(issue("device", "p-1", "another-secret"), capsys)
    assert (foreign["verifies"], foreign["problem"]) == (False, "unknown key id")


def test_inspect_reads_old_tokens_and_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token minted before key ids shows kid null; with no argument the token comes on stdin."""
    claims = {"role": "clinic", "sub": "c-1", "iat": 1, "exp": 2, "jti": "old-jti"}
    monkeypatch.setattr("sys.stdin", io.StringIO(sign(claims, SECRET, kid=None) + "\n"))
    assert main(["token", "inspect"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["jti"], shown["kid"], shown["verifies"]) == ("old-jti", None, False)
    assert shown["problem"] == "token expired"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jti", "abc"], "BACKTRACK_REDIS_URL"),
        (["--jti", "abc", "--role", "device"], "--role narrows --subject"),
        (["--subject", "not a user!", "--redis-url", "redis://127.0.0.1:1/0"], "[A-Za-z0-9_-]"),
    ],
)
def test_revoke_refuses_what_it_cannot_do_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """No Redis, --role with a jti, or a subject that is no id: exit 2 and say why."""
    assert main(["token", "revoke", *args]) == 2
    assert message in capsys.readouterr().err


def test_revoke_needs_a_jti_or_a_subject(capsys: pytest.CaptureFixture[str]) -> None:
    """`token revoke` alone is a usage error."""
    with pytest.raises(SystemExit) as stopped:
        main(["token", "revoke"])
    assert stopped.value.code == 2
    assert "--jti" in capsys.readouterr().err
