"""What one worker holds per series: 100k series of the runbook fleet, rules only and defaults.

``python -m bench.run worker_memory [--runs N] [--quick]``

One :class:`~pipelines.worker.Worker` (the worker's code without Faust: its
partitions' engines, metrics and per-series gauges) with the ``backpressure``
pack, as the ``peers`` bench's worker runs it, 8 partitions, fed the runbook
fleet of ``bench/workload.py`` at one sample per series per 15 s for
``SCRAPES`` scrapes (10 minutes of event time; 5 with ``--quick``) as the receiver would send it:
each scrape cut into messages of at most 2000 samples per partition, in time
order, the inputs of global rule groups copied to the global lane, every
message encoded and decoded again (so the worker holds its own key bytes, as
after Kafka), each partition's snapshot taken when the worker says it is due
(every 30 s), as its state keeper does. The worker's clock is the event time. After the last scrape its
``/metrics`` page is rendered once (as a scrape of the worker does, which
keeps each series' gauge labels).

Each run is a fresh process (``python -m bench.worker_memory``): RSS
(``VmRSS``) after the fleet's batches are built (and the bench's own garbage
trimmed), against RSS after the scrapes, per series, and again after one more
``malloc_trim`` (what is held, without free pages); and in one more process per mode, the same feed under
tracemalloc, grouped by the file and line that allocated what is still held
at the end (the top lines, and the total by component). tracemalloc counts
Python objects and numpy arrays alike, not allocator slack, so the RSS figure
is the one to set against Prometheus's (``peers``).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

SERIES = 100_000
SCRAPES = 41  # 10 minutes at 15 s: every ring has reached the size the retention (~10 min) needs
QUICK_SCRAPES = 21  # 5 minutes
MESSAGE_SAMPLES = 2000
PARTITIONS = 8
MODES = {"rules": {"anomaly_scores": False, "forecasts": False}, "defaults": {}}
TOP_LINES = 12
TRIM_EVERY = 2  # scrapes: pipelines.heap.TRIM_INTERVAL_S of event time


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _malloc_trim() -> None:
    """glibc's malloc_trim(0) for the bench's own measurements, whatever the tree under test does."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)


def _trim_ms(trim) -> float:  # noqa: ANN001 - release_free_memory
    started = time.perf_counter()
    trim()
    return 1000 * (time.perf_counter() - started)


def _component(filename: str) -> str:
    """Where an allocation was made, as a short name: the module under detector/ or pipelines/."""
    path = filename.replace(os.sep, "/")
    for root in ("detector/", "pipelines/", "bench/"):
        at = path.rfind("/" + root)
        if at >= 0:
            return path[at + 1 :]
    if "/numpy/" in path:
        return "numpy (arrays made inside numpy)"
    return "other: " + path.rsplit("/", 2)[-1]


def child(mode: str, series: int, scrapes: int, trace: bool, trim: bool = True) -> dict:
    """One run in this (fresh) process: build, measure RSS, feed, measure again."""
    import tempfile
    from pathlib import Path

    from bench.common import load_groups, runbook_rules
    from bench.workload import runbook_fleet
    from detector.labels import LANE_CLOCK, canonical_bytes, partition_for
    from detector.wire.batch import SampleBatch
    try:
        from pipelines.heap import release_free_memory
    except ImportError:  # a tree from before the heap trim (to measure it the same way)
        def release_free_memory() -> bool:
            return False
    from pipelines.settings import Settings
    from pipelines.worker import Worker

    files, _ = runbook_rules(Path(tempfile.mkdtemp()))
    groups = load_groups(files)
    settings = Settings(partitions=PARTITIONS, **MODES[mode])
    clock = [0.0]
    worker = Worker(settings, groups, clock=lambda: clock[0], monotonic=lambda: clock[0])
    wl = runbook_fleet(series)
    part = np.array([partition_for(labels, PARTITIONS, settings.partition_by) for labels in wl.labels])
    feeds_global = np.array([worker.placement.feeds_global_lane(labels) for labels in wl.labels], dtype=bool) \
        if worker.has_global_lane else np.zeros(len(wl), dtype=bool)
    clock_key = canonical_bytes(LANE_CLOCK)
    order = wl.time_order
    chunks = []  # (lane, partition, rows) in arrival order
    for p in range(PARTITIONS):
        rows = order[part[order] == p]
        chunks += [(settings.samples_topic, p, rows[i : i + MESSAGE_SAMPLES]) for i in range(0, len(rows), MESSAGE_SAMPLES)]
    rows = order[feeds_global[order]]
    chunks += [(settings.global_samples_topic, 0, rows[i : i + MESSAGE_SAMPLES]) for i in range(0, len(rows), MESSAGE_SAMPLES)]
    chunks.sort(key=lambda c: int(wl.offset_ms[c[2][0]]))
    keys = [[wl.keys[i] for i in rows.tolist()] for _, _, rows in chunks]

    def scrape(k: int) -> list[tuple[str, int, bytes]]:
        stamps, values = wl.step(k)
        out = []
        for (lane, p, rows), chunk_keys in zip(chunks, keys):
            batch = SampleBatch(chunk_keys, np.arange(len(rows), dtype=np.uint32), stamps[rows], values[rows])
            if lane == settings.global_samples_topic:
                newest = int(stamps[rows].max())
                batch = SampleBatch.concat([batch, SampleBatch([clock_key], np.zeros(1, dtype=np.uint32),
                                                               np.array([newest]), np.ones(1))])
            out.append((lane, p, batch.encode(), int(stamps[rows].max())))
        return out

    offsets: dict[tuple[str, int], int] = {}
    trim_ms = 0.0
    gc.collect()
    _malloc_trim()  # the workload's own garbage out of the baseline
    before = _rss()
    if trace:
        tracemalloc.start()
    for k in range(scrapes):
        for lane, p, body, newest in scrape(k):
            clock[0] = newest / 1000 + 0.5
            offset = offsets[(lane, p)] = offsets.get((lane, p), -1) + 1
            out = worker.handle(lane, p, offset, body)
            for due_lane, due in out.snapshots:  # taken as the worker's state keeper does (sent to Kafka there)
                worker.lanes[due_lane].snapshot(due)
            if out.snapshots and trim:  # as pipelines/app.py does after a snapshot
                trim_ms = max(trim_ms, _trim_ms(release_free_memory))
        worker.advance_idle()
        if trim and (k + 1) % TRIM_EVERY == 0:  # the worker's timer (pipelines/app.py), on event time here
            trim_ms = max(trim_ms, _trim_ms(release_free_memory))
    page_bytes = len(worker.gauges.exposition())
    gc.collect()
    rss_after = _rss()
    _malloc_trim()
    rss_floor = _rss()
    result = {"mode": mode, "series": len(wl), "rss_before": before, "rss_after": rss_after, "rss_floor": rss_floor, "page_bytes": page_bytes, "trim_ms": trim_ms,
              "held": {lane: sum(len(e.store) for e in engines.engines.values()) for lane, engines in worker.lanes.items()}}
    if trace:
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snapshot.statistics("lineno")
        result["traced"] = sum(s.size for s in stats)
        result["top"] = [(f"{_component(s.traceback[0].filename)}:{s.traceback[0].lineno}", s.size, s.count)
                         for s in stats[:TOP_LINES]]
        by: dict[str, int] = {}
        for s in snapshot.statistics("filename"):
            name = _component(s.traceback[0].filename)
            by[name] = by.get(name, 0) + s.size
        result["components"] = sorted(by.items(), key=lambda kv: -kv[1])
    return result


def _spawn(mode: str, series: int, scrapes: int, trace: bool) -> dict:
    command = [sys.executable, "-m", "bench.worker_memory", mode, str(series), str(scrapes), "trace" if trace else "rss"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(ctx):  # noqa: ANN001, ANN201 - BenchContext -> list[Table]
    from bench.common import Table

    series = int(os.environ.get("HEADROOM_BENCH_WORKER_MEMORY_SERIES", SERIES))
    scrapes = QUICK_SCRAPES if ctx.quick else SCRAPES
    rss = Table(
        f"worker_memory: what one worker holds per series, ~{series // 1000}k runbook series, {scrapes} scrapes at 15 s",
        "a fresh process per run: RSS growth from before the first scrape to after the last (and one /metrics page) "
        f"/ series; {PARTITIONS} partitions, backpressure pack, messages of {MESSAGE_SAMPLES} samples, encoded and decoded",
    )
    traced = Table(f"worker_memory: tracemalloc, bytes still held per series by where they were allocated ({series // 1000}k series)",
                   "one traced run per mode; top components and lines")
    for mode in MODES:
        row = rss.row(f"worker, {mode}: RSS growth / series", "bytes", lower_is_better=True, baseline=mode == "rules")
        floor = rss.row(f"worker, {mode}: the same after one more malloc_trim (no free pages)", "bytes", ratio=False,
                        lower_is_better=True)
        for i in range(ctx.runs):
            got = _spawn(mode, series, scrapes, trace=False)
            row.add((got["rss_after"] - got["rss_before"]) / got["series"])
            floor.add((got["rss_floor"] - got["rss_before"]) / got["series"])
            ctx.log(f"worker_memory {mode} run {i + 1}/{ctx.runs}: {row.values[-1]:.0f} B/series RSS "
                    f"(held {got['held']}, /metrics page {got['page_bytes'] / 1e6:.1f} MB)")
        got = _spawn(mode, series, scrapes, trace=True)
        n = got["series"]
        traced.row(f"{mode}: all traced", "bytes", ratio=False).add(got["traced"] / n)
        for name, size in got["components"][:10]:
            traced.row(f"{mode}: {name}", "bytes", ratio=False).add(size / n)
        for where, size, count in got["top"]:
            traced.row(f"{mode}:   line {where} ({count / n:.2f} blocks/series)", "bytes", ratio=False).add(size / n)
    return [rss, traced]


if __name__ == "__main__":
    mode, series, scrapes, how = sys.argv[1:5]
    print(json.dumps(child(mode, int(series), int(scrapes), how == "trace", trim=os.environ.get("HEADROOM_BENCH_NO_TRIM") is None)))
