"""Structured logging for every process: structlog, one configuration.

Lines are JSON when stderr is not a terminal (one object per line, for log
shippers) and coloured key-value text on a terminal. Context bound with
``structlog.contextvars.bind_contextvars`` (request ids, partition, ...) is
merged first, so every line of a unit of work carries it. The standard
library's loggers (uvicorn, FastStream, redis) are routed through the same
processors and renderer.

Invariant 9: pain scores, notes and tokens never appear in logs at INFO or
above. Callers must not log them in the first place: log counts, ids and
statuses, never payloads or headers. ``redact_sensitive`` is defence in depth
only: it masks keys named in ``SENSITIVE_KEYS`` (at any depth of nested dicts)
on lines at INFO and above; DEBUG lines are left alone for local debugging.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final

import orjson
import structlog
from structlog.types import EventDict, Processor, WrappedLogger

SENSITIVE_KEYS: Final = frozenset(
    {"score", "pain_during", "note", "notes", "token", "authorization", "secret", "password"}
)
REDACTED: Final = "[redacted]"
_QUIET_BELOW: Final = logging.INFO


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if _sensitive(k) else _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


def _sensitive(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SENSITIVE_KEYS


def redact_sensitive(_: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Mask values of sensitive keys on lines at INFO and above (never raises)."""
    level = logging.getLevelNamesMapping().get(method_name.upper(), logging.INFO)
    if level < _QUIET_BELOW:
        return event_dict
    for key in list(event_dict):
        if _sensitive(key):
            event_dict[key] = REDACTED
        elif isinstance(event_dict[key], Mapping | list | tuple):
            event_dict[key] = _mask(event_dict[key])
    return event_dict


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _drop_color_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("color_message", None)  # uvicorn's ANSI duplicate of the message
    return event_dict


def _json_dumps(obj: MutableMapping[str, Any], **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def _traceback_formatter() -> structlog.typing.ExceptionRenderer:
    try:
        return structlog.dev.RichTracebackFormatter(show_locals=False)
    except (AttributeError, ModuleNotFoundError):  # rich is optional
        return structlog.dev.plain_traceback


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_sensitive,
    ]


def configure_logging(level: str | int = "INFO", json: bool | None = None) -> None:
    """Configure structlog and the standard library's root logger once per process.

    ``json=None`` picks JSON unless stderr is a terminal. Safe to call again
    (tests do): the previous root handlers are replaced.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")  # noqa: TRY004 - a bad value, not type
    as_json = not sys.stderr.isatty() if json is None else json
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_json_dumps)
        if as_json
        # Tracebacks without locals: locals hold events, scores and tokens.
        else structlog.dev.ConsoleRenderer(exception_formatter=_traceback_formatter())
    )
    shared = _shared_processors()
    # The console renderer prints exceptions itself; JSON needs them as text.
    tail = [structlog.processors.format_exc_info, renderer] if as_json else [renderer]
    structlog.configure(
        processors=[*shared, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail],
    )
    handler = logging.StreamHandler(_Stderr())
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.setLevel(logging.NOTSET)  # an earlier uvicorn dictConfig may have set one
        named.propagate = True


def get_logger(name: str | None = None) -> Any:
    """A structlog logger (bound with ``logger=name`` when given)."""
    logger = structlog.get_logger()
    return logger.bind(logger=name) if name else logger


__all__ = ["REDACTED", "SENSITIVE_KEYS", "configure_logging", "get_logger", "redact_sensitive"]
