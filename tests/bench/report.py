"""Repeat a measurement, print median and spread, keep rows for the summary."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    unit: str
    median: float
    low: float
    high: float
    runs: int

    def line(self) -> str:
        return (
            f"{self.name:<48} {self.median:>12,.0f} {self.unit:<10} "
            f"(min {self.low:,.0f}, max {self.high:,.0f}, {self.runs} runs)"
        )


ROWS: list[Row] = []
#: Lines a benchmark adds to the summary (ratios, figures that are not rates).
NOTES: list[str] = []


def measure(name: str, unit: str, run: Callable[[], float], runs: int = 3) -> Row:
    """Call ``run`` (which returns a rate) ``runs`` times; record and print the median."""
    values = [run() for _ in range(runs)]
    row = Row(name, unit, statistics.median(values), min(values), max(values), runs)
    ROWS.append(row)
    print(row.line(), flush=True)
    return row


def rate(count: int, work: Callable[[], object]) -> float:
    """``count`` items per second of one call of ``work``."""
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)
