"""Input for the one-width snapshot fixture (``one_width_snapshot.bin``), shared by the test and its generator.

The fixture was written by the store layout before size classes (commit
4864ba2, every ring as wide as the busiest series needed), from this history:

    git archive 4864ba2 detector | tar -x -C /tmp/old && cd /tmp && PYTHONPATH=/tmp/old python REPO/tests/unit/data/one_width_history.py REPO/tests/unit/data/one_width_snapshot.bin

It must only use APIs that existed then.
"""

from __future__ import annotations

import sys

from detector.partition import PartitionDetectors
from detector.promql import compile_expr
from detector.rules import AlertingRule, RuleGroup
from detector.rules.recording import RecordingRule
from detector.wire.batch import SampleBatch

T0 = 1_700_000_000_000 // 15_000 * 15_000
SPLIT = T0 + 10 * 60_000  # the snapshot is taken after the batches before this time
END = T0 + 16 * 60_000


def groups() -> list[RuleGroup]:
    down = AlertingRule("Down", compile_expr("up == 0"), "up == 0", for_ms=60_000)
    rate = RecordingRule("job:x:rate1m", compile_expr("rate(x[1m])"), "rate(x[1m])")
    return [RuleGroup("g", "inline", 15_000, (down, rate))]


def batches(start: int, end: int) -> list[SampleBatch]:
    """One batch per 15 s scrape; ``y`` bursts at 10 samples a second for 30 s in the 3rd minute."""
    out = []
    for t in range(start, end, 15_000):
        minute = (t - T0) // 60_000
        series = [
            ((("__name__", "up"), ("instance", "a")), [(t, 0.0 if 2 <= minute < 12 else 1.0)]),
            ((("__name__", "up"), ("instance", "b")), [(t, 1.0)]),
            ((("__name__", "x"), ("instance", "a")), [(t, float((t - T0) // 1000))]),
        ]
        if minute == 3 and (t - T0) % 60_000 < 30_000:
            series.append(((("__name__", "y"), ("instance", "a")), [(t + i * 100, float(i)) for i in range(150)]))
        out.append(SampleBatch.from_series(series))
    return out


def detectors() -> PartitionDetectors:
    return PartitionDetectors(groups(), scores=False, forecasts=False)


def write_snapshot(split: int, path: str) -> PartitionDetectors:
    """The history up to ``split`` into fresh detectors, their snapshot written to ``path`` (the generators)."""
    live = detectors()
    for batch in batches(T0, split):
        live.ingest(batch)
    with open(path, "wb") as fd:
        fd.write(live.snapshot())
    return live


if __name__ == "__main__":
    live = write_snapshot(SPLIT, sys.argv[1])
    print("ring width", live.store.capacity, "series", len(live.store))
