"""The Grafana dashboard queries only metrics the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.logging_svc.metrics import Metrics
from services.prescriber.feeds.metrics import StreamMetrics
from services.replay.metrics import ReplayMetrics
from shared.keys import Keys

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "backtrack.json"


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _exported() -> set[str]:
    """Series names the services' and the replays' registries expose (labelled ones included)."""
    stream = CollectorRegistry()
    StreamMetrics(None, Keys(1), stream)  # type: ignore[arg-type]
    names = set()
    for registry in (Metrics().registry, stream, ReplayMetrics("rebuild").registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_every_queried_metric_is_exported() -> None:
    """Each backtrack_* name in a panel query is a metric the code registers."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queried = {
        name
        for p in panels
        for t in p["targets"]
        for name in re.findall(r"backtrack_[a-z_]+", t["expr"])
    }
    assert queried
    assert queried <= _exported(), queried - _exported()
