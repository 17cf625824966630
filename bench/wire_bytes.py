"""Bytes per sample of the samples topic's messages, compressed as the receiver's producer does (zstd).

The runbook fleet's first 10,000 series, cut into messages as the receiver
produces them, in three shapes:

- **2000x1 per request**: a 2000-series request with one sample per series,
  split over 8 partitions: about 250 samples per message when nothing
  coalesces;
- **one scrape per partition**: the coalescer merged a whole scrape of the
  partition's series (about 1,250 samples);
- **1000x10**: a catch-up request of 1000 series with 10 samples each over
  8 partitions (about 1,250 samples, 10 per series).

Each message is encoded in the batch format the receiver writes today and in
version 1 (the series index itself instead of its steps), then compressed with
aiokafka's zstd codec, the one the producer uses. Kafka's own record-batch
framing (about 70 bytes per message) is left out. The values are the
workload's noisy floats: a real fleet's counters and small integers compress
better, so these are upper figures. Deterministic, so one run is enough.

``python -m bench.run wire_bytes``
"""

from __future__ import annotations

import struct

import numpy as np

from bench.common import BenchContext, Table
from bench.workload import BatchPlan, runbook_fleet

SERIES = 10_000
PARTITIONS = 8


def version_1(batch) -> bytes:
    """``batch`` as receivers before batch format version 2 wrote it."""
    from detector.wire.batch import MAGIC

    parts = [struct.pack("<4sB3xII", MAGIC, 1, len(batch.series_keys), len(batch))]
    for key in batch.series_keys:
        parts += [struct.pack("<I", len(key)), key]
    parts += [batch.series_index.astype("<u4").tobytes(), batch.timestamps.astype("<i8").tobytes(),
              batch.values.astype("<f8").tobytes()]
    return b"".join(parts)


def _catch_up_messages(wl, scrapes: int = 10):
    """1000-series requests of ``scrapes`` samples each, split per partition: one SampleBatch per part."""
    from detector.labels import partition_for
    from detector.wire.batch import SampleBatch

    steps = [wl.step(k) for k in range(scrapes)]
    part = np.array([partition_for(labels, PARTITIONS) for labels in wl.labels])
    for start in range(0, SERIES, 1000):
        rows = np.arange(start, min(start + 1000, SERIES))
        for p in range(PARTITIONS):
            mine = rows[part[rows] == p]
            if len(mine):
                yield SampleBatch(
                    [wl.keys[i] for i in mine],
                    np.repeat(np.arange(len(mine), dtype=np.uint32), scrapes),
                    np.stack([s[0][mine] for s in steps], axis=1).reshape(-1),
                    np.stack([s[1][mine] for s in steps], axis=1).reshape(-1),
                )


def run(ctx: BenchContext) -> list[Table]:
    from aiokafka.codec import zstd_encode

    wl = runbook_fleet(SERIES)
    shapes = {
        "2000x1 per request, ~250 samples per message": [b for k in range(3) for _, b in
                                                          BatchPlan.make(wl, PARTITIONS, 250).batches(wl, k)],
        "one scrape per partition, ~1,250 samples per message": [b for k in range(3) for _, b in
                                                                 BatchPlan.make(wl, PARTITIONS, 100_000).batches(wl, k)],
        "1000x10 per request, ~1,250 samples per message": list(_catch_up_messages(wl)),
    }
    tables = []
    for shape, batches in shapes.items():
        samples = sum(len(b) for b in batches)
        old = sum(len(zstd_encode(version_1(b))) for b in batches) / samples
        new = sum(len(zstd_encode(b.encode())) for b in batches) / samples
        table = Table(f"Samples topic, bytes per sample after the producer's zstd: {shape}",
                      f"runbook fleet, {SERIES:,} series, {PARTITIONS} partitions, {samples:,} samples; "
                      "Kafka's record framing left out")
        table.row("batch format v1 (before)", "B/sample", baseline=True, lower_is_better=True).add(old)
        table.row("batch format v2 (index steps)", "B/sample", target=20.0, lower_is_better=True).add(new)
        ctx.log(f"{shape}: v1 {old:.2f}, v2 {new:.2f} bytes/sample")
        tables.append(table)
    return tables
