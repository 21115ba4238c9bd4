"""Safe by default: what the settings refuse outside development and test, and the CLI's share.

The suite runs as ``BACKTRACK_ENVIRONMENT=test``; these tests set the
environment they are about explicitly.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from services.cli.main import _parser, _settings, main
from shared.settings import DEV_MASTER_KEY, DEV_SECRET, MIN_SECRET_BYTES, Settings

STRONG = "k" * MIN_SECRET_BYTES
MASTER = base64.b64encode(b"m" * 32).decode()


@pytest.fixture
def no_backtrack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment without any BACKTRACK_* variable."""
    for name in [n for n in os.environ if n.startswith("BACKTRACK_")]:
        monkeypatch.delenv(name)


def test_the_default_environment_is_production(no_backtrack_env: None) -> None:
    """With nothing set the settings are production's, so the development secret is refused."""
    assert Settings(secret=STRONG, master_key=MASTER).environment == "production"
    with pytest.raises(ValidationError, match="development secret"):
        Settings()


@pytest.mark.parametrize("environment", ["production", "Production", " prod ", "staging", "PROD"])
def test_every_environment_but_development_and_test_is_strict(environment: str) -> None:
    """Any spelling that is not development or test refuses the relaxed settings, naming them."""
    with pytest.raises(ValidationError, match="BACKTRACK_SECRET is the development secret"):
        Settings(environment=environment)
    with pytest.raises(ValidationError, match=f"BACKTRACK_SECRET is {MIN_SECRET_BYTES - 1} bytes"):
        Settings(environment=environment, secret="k" * (MIN_SECRET_BYTES - 1))
    with pytest.raises(ValidationError, match="BACKTRACK_WEBHOOK_ALLOW_PRIVATE"):
        Settings(environment=environment, secret=STRONG, webhook_allow_private=True)
    for previous in ((DEV_SECRET,), ("k" * (MIN_SECRET_BYTES - 1),)):
        with pytest.raises(ValidationError, match="BACKTRACK_PREVIOUS_SECRETS"):
            Settings(environment=environment, secret=STRONG, previous_secrets=previous)
    with pytest.raises(ValidationError, match="BACKTRACK_MASTER_KEY is not set"):
        Settings(environment=environment, secret=STRONG)
    with pytest.raises(ValidationError, match="development master key"):
        Settings(environment=environment, secret=STRONG, master_key=DEV_MASTER_KEY.decode())
    with pytest.raises(ValidationError, match="development master key"):
        Settings(
            environment=environment,
            secret=STRONG,
            master_key=MASTER,
            previous_master_keys=(DEV_MASTER_KEY.decode(),),
        )
    assert not Settings(environment=environment, secret=STRONG, master_key=MASTER).is_local


@pytest.mark.parametrize("environment", ["development", " Development ", "TEST", "test"])
def test_development_and_test_allow_the_relaxed_settings(environment: str) -> None:
    """Local environments (any case, spaces ignored) take the development secret and more."""
    settings = Settings(environment=environment, secret="e2e-secret", webhook_allow_private=True)
    assert settings.environment == environment.strip().lower()
    assert settings.is_local
    assert Settings(environment=environment).secret == DEV_SECRET


def test_token_refuses_the_development_secret_with_no_environment_set() -> None:
    """``backtrack token operator`` in a clean environment prints no token and says what to set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKTRACK_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "token", "operator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert "BACKTRACK_SECRET" in done.stderr
    assert "BACKTRACK_ENVIRONMENT=development" in done.stderr


def test_token_is_minted_with_a_real_secret_or_in_development(
    no_backtrack_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A secret of 32 bytes in production, or the development secret in development, works."""
    monkeypatch.setenv("BACKTRACK_SECRET", STRONG)
    monkeypatch.setenv("BACKTRACK_MASTER_KEY", MASTER)
    assert main(["token", "operator"]) == 0
    monkeypatch.delenv("BACKTRACK_SECRET")
    monkeypatch.delenv("BACKTRACK_MASTER_KEY")
    monkeypatch.setenv("BACKTRACK_ENVIRONMENT", "development")
    assert main(["token", "operator"]) == 0
    assert len(capsys.readouterr().out.split()) == 2


@pytest.mark.parametrize("command", [["up"], ["demo"]])
def test_up_and_demo_on_the_embedded_redis_run_as_development(
    no_backtrack_env: None, command: list[str]
) -> None:
    """The local stack needs no secret; given an external Redis it is production again."""
    assert _settings(_parser().parse_args(command)).environment == "development"
    external = _parser().parse_args([*command, "--redis-url", "redis://db.internal:6379/0"])
    with pytest.raises(ValidationError, match="development secret"):
        _settings(external)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "backtrack.example"])
def test_a_stack_reachable_from_the_network_is_production(
    no_backtrack_env: None, monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """Listening beyond loopback, even the embedded stack demands a real secret."""
    monkeypatch.setenv("BACKTRACK_HOST", host)
    with pytest.raises(ValidationError, match="development secret"):
        _settings(_parser().parse_args(["up"]))
    monkeypatch.setenv("BACKTRACK_HOST", "::1")
    assert _settings(_parser().parse_args(["up"])).environment == "development"


def test_an_explicit_environment_wins_over_the_local_default(
    no_backtrack_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BACKTRACK_ENVIRONMENT=production makes even the embedded stack demand a real secret."""
    monkeypatch.setenv("BACKTRACK_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="development secret"):
        _settings(_parser().parse_args(["up"]))
