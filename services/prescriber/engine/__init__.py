"""The pure prescription engine: fold input events, decide, emit changes.

No clock, no I/O, no logging: "now" is the latest event folded. See RULES.md
for the rules and each module's docstring for the choices where it is silent.
"""

from services.prescriber.engine.change import CHANGE_NAMESPACE, emit, react
from services.prescriber.engine.decision import Prescription, decide
from services.prescriber.engine.fold import evolve, replay
from services.prescriber.engine.rules import DEFAULT_RULES, RuleSet
from services.prescriber.engine.snapshot import STATE_VERSION, dump_state, load_state
from services.prescriber.engine.state import State, initial

__all__ = [
    "CHANGE_NAMESPACE",
    "DEFAULT_RULES",
    "STATE_VERSION",
    "Prescription",
    "RuleSet",
    "State",
    "decide",
    "dump_state",
    "emit",
    "evolve",
    "initial",
    "load_state",
    "react",
    "replay",
]
