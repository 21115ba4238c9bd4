"""Other rule sets for a what-if: ``--set name=value`` pairs and rules files."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from services.prescriber import engine


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, lists, true/false), else the text itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def load_rules(path: str | None = None, pairs: Sequence[str] = ()) -> engine.RuleSet:
    """DEFAULT_RULES overridden by a JSON or TOML file, then by ``name=value`` pairs.

    An unknown name is a validation error (RuleSet forbids extras). Without a
    rules_version of its own the result is tagged ``what-if``.
    """
    values: dict[str, Any] = {}
    if path:
        data = Path(path).read_bytes()
        values |= tomllib.loads(data.decode()) if path.endswith(".toml") else orjson.loads(data)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE, got {pair!r}")
        values[name.strip()] = parse_value(value.strip())
    values.setdefault("rules_version", "what-if")
    return engine.RuleSet.model_validate(values)


__all__ = ["load_rules", "parse_value"]
