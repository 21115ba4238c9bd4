"""Snapshots: the state as JSON bytes, and back, exactly.

``STATE_VERSION`` changes whenever the state's shape does; ``load_state``
refuses other versions (ValueError) so the shell refolds from history instead
of trusting a snapshot it cannot read.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import TypeAdapter

from services.prescriber.engine.state import State

STATE_VERSION = 2

_adapter: TypeAdapter[State] = TypeAdapter(State)


def dump_state(state: State) -> bytes:
    """The state as JSON bytes tagged with STATE_VERSION."""
    body = _adapter.dump_python(state, mode="json")
    return orjson.dumps({"state_version": STATE_VERSION, "state": body})


def load_state(data: bytes) -> State:
    """Read a snapshot written by ``dump_state``; ValueError for another version."""
    raw: Any = orjson.loads(data)
    if not isinstance(raw, dict) or raw.get("state_version") != STATE_VERSION:
        raise ValueError("snapshot is not at this STATE_VERSION; refold from history")
    return _adapter.validate_python(raw["state"])
