"""Other rule sets for a what-if: ``--set name=value`` pairs and rules files."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from services.prescriber import engine
from services.prescriber.engine.rules import RULE_SETS


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, lists, true/false), else the text itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def load_rules(path: str | None = None, pairs: Sequence[str] = ()) -> engine.RuleSet:
    """A built-in rule set (``path`` names its version: "1", "2") or DEFAULT_RULES
    overridden by a JSON or TOML file, then by ``name=value`` pairs.

    An unknown name is a validation error (RuleSet forbids extras). A built-in
    set alone keeps its version; anything else without a rules_version of its
    own is tagged ``what-if``.
    """
    values: dict[str, Any] = {}
    base = engine.DEFAULT_RULES
    if path in RULE_SETS:
        base = RULE_SETS[path]
        if not pairs:
            return base
    elif path:
        data = Path(path).read_bytes()
        values |= tomllib.loads(data.decode()) if path.endswith(".toml") else orjson.loads(data)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE, got {pair!r}")
        values[name.strip()] = parse_value(value.strip())
    values.setdefault("rules_version", "what-if")
    return base.updated(values)


__all__ = ["load_rules", "parse_value"]
