"""Encryption at rest per event: seal and open of stream fields (shared.sealing), in one process.

``python -m tests.bench.crypto`` prints microseconds per event (median of
several runs) for a typical PainLogged and PrescriptionChanged, beside the
codec's own decode for scale, and the cost of a data key cache miss (unwrap).
Not part of ``make bench`` yet.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from shared import codec, sealing
from shared.sealing import DataKey, MasterKey, MasterKeys
from tests.bench.report import NOTES

GOLDEN = Path(__file__).parent.parent / "golden"
EVENTS = ("PainLogged.v2", "PrescriptionChanged.v1")


def per_call(work: Callable[[], object], calls: int = 20_000, runs: int = 7) -> float:
    """Median microseconds per call of ``work`` over ``runs`` runs of ``calls`` calls."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(calls):
            work()
        timings.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(timings)


def main() -> None:
    key = DataKey.of(sealing.new_data_key())
    master = MasterKeys(MasterKey(sealing.new_data_key()))
    for name in EVENTS:
        fields = codec.to_fields(codec.loads((GOLDEN / f"{name}.json").read_bytes()))
        sealed = sealing.seal(key, fields)
        data = fields["data"]
        figures = {
            "seal": per_call(lambda f=fields: sealing.seal(key, f)),
            "open": per_call(lambda s=sealed: sealing.open_sealed(key, s)),
            "seal+open": per_call(lambda f=fields: sealing.open_sealed(key, sealing.seal(key, f))),
            "codec decode (for scale)": per_call(lambda d=data: codec.loads(d)),
        }
        print(f"{name}: {len(data)} bytes of JSON, sealed {len(sealed['data'])}")
        for label, micros in figures.items():
            print(f"  {label:<26} {micros:6.2f} us/event")
        NOTES.append(
            f"sealing a {name} ({len(data)} B of JSON): "
            + ", ".join(f"{label} {micros:.1f} us" for label, micros in figures.items())
        )
    wrapped = sealing.wrap(master.current, sealing.new_data_key(), "p-0001")
    miss = per_call(lambda: DataKey.of(sealing.unwrap(master, wrapped, "p-0001")), calls=5_000)
    print(f"data key cache miss (unwrap + cipher set-up, no Redis) {miss:6.2f} us/user")
    NOTES.append(f"data key cache miss (unwrap + cipher set-up, no Redis): {miss:.1f} us per user")


if __name__ == "__main__":
    main()
