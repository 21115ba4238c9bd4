"""Logging configuration: redaction of sensitive keys and stdlib routing."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from shared.log import REDACTED, configure_logging, redact_sensitive


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """JSON logging for one test; structlog and the root logger restored afterwards."""
    saved, handlers = structlog.get_config(), logging.getLogger().handlers[:]
    configure_logging("DEBUG", json=True)
    try:
        yield
    finally:
        structlog.configure(**saved)
        logging.getLogger().handlers[:] = handlers


def test_sensitive_keys_are_masked_at_info_at_any_depth() -> None:
    """Scores, notes, tokens and secrets are masked on INFO lines, nested dicts included."""
    line = {"event": "x", "score": 7, "Authorization": "Bearer t", "note": "private", "ok": 1}
    line["nested"] = {"pain_during": 3, "items": [{"notes": "n", "id": "e1"}]}
    out = redact_sensitive(None, "info", line)
    assert out["score"] == out["Authorization"] == out["note"] == REDACTED
    assert out["nested"] == {"pain_during": REDACTED, "items": [{"notes": REDACTED, "id": "e1"}]}
    assert out["ok"] == 1


def test_debug_lines_are_left_alone() -> None:
    """Below INFO nothing is masked (local debugging only)."""
    assert redact_sensitive(None, "debug", {"score": 7})["score"] == 7


def test_structlog_lines_are_json_with_context(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """A structlog line is one JSON object with level, timestamp and bound context, redacted."""
    structlog.contextvars.bind_contextvars(request_id="r1")
    try:
        structlog.get_logger().warning("hello", token="secret-token", count=2)
    finally:
        structlog.contextvars.clear_contextvars()
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "hello"
    assert line["level"] == "warning"
    assert line["request_id"] == "r1"
    assert line["token"] == REDACTED
    assert "timestamp" in line


def test_stdlib_loggers_render_through_structlog(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn's stdlib log records come out as the same JSON lines."""
    logging.getLogger("uvicorn.error").info("started %s", "server")
    line = orjson.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["event"] == "started server"
    assert line["level"] == "info"


def test_unknown_level_is_refused() -> None:
    """A level name that logging does not know is a ValueError."""
    with pytest.raises(ValueError, match="level"):
        configure_logging("LOUD")
