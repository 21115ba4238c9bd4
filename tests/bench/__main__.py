"""``python -m tests.bench``: every benchmark, a summary, and docs/BENCHMARKS.md.

Each benchmark starts its own Redis. Figures are medians of several runs;
ratios compare with raw redis-py on the same server in the same run, because
these machines are noisy.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from shared.redis_server import find_binary
from tests.bench import (
    at_rest,
    audit,
    crypto,
    e2e,
    engine,
    flood,
    history,
    load,
    memory,
    migrate,
    pipeline,
    replay,
)
from tests.bench.report import NOTES, ROWS

PACKAGES = ("faststream", "redis", "hiredis", "pydantic", "fastapi", "uvicorn", "orjson")


def _machine() -> list[str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    redis = subprocess.run(
        [find_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[2]
    return [
        f"- machine: {os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.platform()}",
        f"- Python {platform.python_version()}, Redis {redis.removeprefix('v=')}",
        "- " + ", ".join(f"{name} {version(name)}" for name in PACKAGES),
    ]


def write(path: Path = Path("docs/BENCHMARKS.md")) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Medians of "
        "several runs (min-max in brackets); the machine is shared and noisy, so compare "
        "the ratios to raw Redis measured in the same run. What the profiles show and "
        "what was tuned: [PERFORMANCE.md](PERFORMANCE.md).",
        "",
        *_machine(),
        "",
        "| what | median | unit | min | max | runs |",
        "|---|---:|---|---:|---:|---:|",
        *(
            f"| {r.name} | {r.median:,.0f} | {r.unit} | {r.low:,.0f} | {r.high:,.0f} | {r.runs} |"
            for r in ROWS
        ),
        "",
        *(f"- {note}" for note in NOTES),
        "",
        "![prescriber cost per event vs history length](bench-history-cost.png)",
        "",
        "![consumer lag under load](load-lag.png)",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    benches = (
        engine,
        pipeline,
        history,
        memory,
        replay,
        load,
        e2e,
        flood,
        crypto,
        at_rest,
        migrate,
        audit,
    )
    for bench in benches:
        bench.main()
    print("\nsummary")
    for row in ROWS:
        print("  " + row.line())
    for note in NOTES:
        print("  " + note)
    write()
    print("written to docs/BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
