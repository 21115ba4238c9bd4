"""The master key settings: BACKTRACK_MASTER_KEY, _FILE and PREVIOUS_MASTER_KEYS."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.sealing import MasterKey
from shared.settings import DEV_MASTER_KEY, Settings

STRONG = "k" * 48
KEY = b"\x01" * 32
OLD = b"\x02" * 32


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
def no_backtrack_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment without any BACKTRACK_* variable."""
    for name in [n for n in os.environ if n.startswith("BACKTRACK_")]:
        monkeypatch.delenv(name)


def test_the_key_from_the_environment_wraps_and_previous_ones_unwrap(
    no_backtrack_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BACKTRACK_MASTER_KEY is current; BACKTRACK_PREVIOUS_MASTER_KEYS (JSON) are held by id."""
    monkeypatch.setenv("BACKTRACK_SECRET", STRONG)
    monkeypatch.setenv("BACKTRACK_MASTER_KEY", _b64(KEY))
    monkeypatch.setenv("BACKTRACK_PREVIOUS_MASTER_KEYS", json.dumps([_b64(OLD)]))
    masters = Settings().master_keys()
    assert masters.current == MasterKey(KEY)
    assert set(masters.by_id) == {MasterKey(KEY).id, MasterKey(OLD).id}
    assert _b64(KEY) not in repr(Settings())


def test_the_key_may_come_from_a_file(no_backtrack_env: None, tmp_path: Path) -> None:
    """BACKTRACK_MASTER_KEY_FILE names a file holding the base64 (a mounted Secret, newline ok)."""
    path = tmp_path / "master-key"
    path.write_text(_b64(KEY) + "\n")
    settings = Settings(secret=STRONG, master_key_file=str(path))
    assert settings.master_keys().current == MasterKey(KEY)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"master_key": "not a key"}, "BACKTRACK_MASTER_KEY: a master key is base64"),
        ({"master_key": _b64(b"short")}, "BACKTRACK_MASTER_KEY: .* not 5"),
        ({"master_key_file": "/nonexistent/master-key"}, "BACKTRACK_MASTER_KEY_FILE: No such"),
        (
            {"master_key": _b64(KEY), "previous_master_keys": (_b64(KEY),)},
            "BACKTRACK_PREVIOUS_MASTER_KEYS: master keys must differ",
        ),
        ({"master_key": _b64(KEY), "master_key_file": "/x"}, "not both"),
    ],
)
def test_a_bad_master_key_setting_is_refused_everywhere(
    options: dict[str, object], message: str
) -> None:
    """Even in test and development a key that cannot be used is refused, naming the setting."""
    with pytest.raises(ValidationError, match=message):
        Settings(**options)  # type: ignore[arg-type]


def test_development_and_test_use_the_fixed_development_key(no_backtrack_env: None) -> None:
    """With no key set, local environments get the development master key, the same each time."""
    for environment in ("development", "test"):
        masters = Settings(environment=environment).master_keys()
        assert masters.current == MasterKey(base64.b64decode(DEV_MASTER_KEY))
