"""How a virtual patient knows its prescription: all it knows of any prescriber."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from shared.events import PrescriptionChanged

PrescriptionReader = Callable[[datetime], PrescriptionChanged | None]
"""The latest prescription the server holds at a moment (None before the first)."""
