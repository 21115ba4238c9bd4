"""Rule set 1 stays exactly replayable: a committed cohort gives the changes v1 gave.

``tests/golden/rules_v1/`` holds a seeded cohort's input events in arrival
order and every ``PrescriptionChanged`` the v1 engine emitted for them, folded
the way live processing folds (``fold_history``). Both files are data, not
regenerated: a difference in one byte of one change fails.
"""

from __future__ import annotations

import gzip
from collections import defaultdict
from pathlib import Path

from services.prescriber.arrivals import fold_history
from services.prescriber.engine.rules import builtin
from shared.codec import dumps, loads
from shared.events import Input, PrescriptionChanged

GOLDEN = Path(__file__).parents[2] / "golden" / "rules_v1"


def _lines(name: str) -> list[bytes]:
    with gzip.open(GOLDEN / name, "rb") as handle:
        return [line for line in handle.read().split(b"\n") if line]


def test_rule_set_1_replays_the_committed_cohort_byte_for_byte() -> None:
    """Every change (ids, versions, phases, doses, reasons) is the one v1 emitted."""
    histories: dict[str, list[Input]] = defaultdict(list)
    for line in _lines("cohort.jsonl.gz"):
        event = loads(line)
        assert not isinstance(event, PrescriptionChanged)
        histories[event.user_id].append(event)
    rules = builtin("1")
    emitted = [
        dumps(change)
        for user_id, events in histories.items()
        for change in fold_history(user_id, events, rules).changes
    ]
    expected = _lines("changes.jsonl.gz")
    assert len(histories) == 60
    assert len(emitted) == len(expected)
    assert emitted == expected
