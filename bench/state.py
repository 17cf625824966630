"""(state) What surviving a restart costs: snapshots plus catch-up, against a changelog.

The worker's detectors of one partition holding all 10k series of the runbook
fleet (rules, anomaly scores, forecasts; the worst case: one partition), fed
batches of 2000 samples, one sample per series per 15 s, warmed up for 45
scrapes. Three copies continue the same timeline side by side:

* **off** (baseline): ``PartitionDetectors.ingest`` alone;
* **snapshots**: the same, plus a snapshot every 2 scrapes, which is every
  30 s of wall time for live data at a 15 s scrape (the worker's default
  ``HEADROOM_SNAPSHOT_INTERVAL``), written to a compacted topic of a real Kafka
  broker (acks=all);
* **changelog**: the same, plus, after every batch, one record per series the
  batch touched holding that series' state rows (store ring, model row, counter
  row, forecast row), produced with a real aiokafka producer to a compacted topic
  (what a Faust table changelog would do), flushed per batch.

Rates are samples per CPU-second of this process (the broker is another
process), so the ratios say what each option costs the worker's core. Restore
times: decode and load the snapshot, then catch up 30 s of samples (2 scrapes,
the most a 30 s interval leaves to replay), against reading back one record per
series from the changelog (the latest ones only, as if fully compacted: the
changelog's best case) and loading them into the rows.
"""

from __future__ import annotations

import asyncio
import gc
import time

import numpy as np

from bench.common import BenchContext, Table, load_groups, runbook_rules
from bench.workload import BatchPlan, describe, runbook_fleet

SERIES = 10_000
BATCH_SAMPLES = 2000
WARMUP_STEPS = 45
SNAPSHOT_EVERY = 2  # scrapes: 30 s of live data at a 15 s scrape
MAX_BYTES = 64 * 1024 * 1024


class _Timeline:
    """One PartitionDetectors fed the fleet's scrapes in order."""

    def __init__(self, wl, plan: BatchPlan, groups) -> None:
        from detector.partition import PartitionDetectors

        self.wl, self.plan = wl, plan
        self.detectors = PartitionDetectors(groups)
        self.step = 0

    def batches(self, steps: int) -> list:
        out = [[b for _, b in self.plan.batches(self.wl, k)] for k in range(self.step, self.step + steps)]
        self.step += steps
        return out


def _state_rows(detectors, keys: list[bytes]) -> list[bytes]:
    """Each series' state as one changelog record value: store ring, model, counter and forecast rows."""
    store, scorer, forecaster = detectors.rules.store, detectors.scorer.scorer("default"), detectors.forecaster
    sids = np.fromiter((store._ids[k] for k in keys), dtype=np.intp, count=len(keys))
    rows = scorer.rows_for(keys)
    fc = np.fromiter((forecaster._keys.get(k, -1) for k in keys), dtype=np.intp, count=len(keys))
    ts, vals = store.rings(sids, width=store.capacity)
    model = scorer.model
    scalars, profiles, visits = model.scalars[rows], model.profiles[rows], model.visits[rows]
    last_t, last_v = scorer.counters.last_t[rows], scorer.counters.last_v[rows]
    trend = forecaster.trend._state[:, np.maximum(fc, 0)].T
    out = []
    for i in range(len(keys)):
        parts = [ts[i].tobytes(), vals[i].tobytes(), scalars[i].tobytes(), profiles[i].tobytes(), visits[i].tobytes(),
                 last_t[i : i + 1].tobytes(), last_v[i : i + 1].tobytes()]
        if fc[i] >= 0:
            parts.append(trend[i].tobytes())
        out.append(b"".join(parts))
    return out


async def _measure(ctx: BenchContext, table: Table, steps: int) -> None:
    from aiokafka import AIOKafkaProducer

    from detector.partition import PartitionDetectors
    from pipelines.stack.kafka import create_topics
    from pipelines.state import SnapshotTopic, state_topic_config

    files, rules_note = runbook_rules(ctx.tmp)
    groups = load_groups([*files, "anomaly"])
    wl = runbook_fleet(SERIES)
    ctx.log(f"state: {describe(wl)}; {rules_note} + anomaly pack; scores and forecasts on")
    plan = BatchPlan.make(wl, None, BATCH_SAMPLES)
    lines = {name: _Timeline(wl, plan, groups) for name in ("off", "snapshots", "changelog")}
    for line in lines.values():
        for scrape in line.batches(WARMUP_STEPS):
            for batch in scrape:
                line.detectors.ingest(batch)

    broker = ctx.broker()
    config = state_topic_config(MAX_BYTES)
    await create_topics(broker.bootstrap, {"bench-state": 1, "bench-changelog": 1}, config=config)
    topic = SnapshotTopic(broker.bootstrap, "bench-state", "bench-samples", 1, MAX_BYTES)
    await topic.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                                max_batch_size=1024 * 1024, max_request_size=MAX_BYTES)
    await producer.start()
    offset = 0
    try:
        window = f"CPU per 30 s of live data ({SNAPSHOT_EVERY} scrapes, {SNAPSHOT_EVERY * len(wl) // 1000}k samples)"
        r = {
            "off": table.row(f"{window}: ingest, no state kept (off)", "ms", baseline=True, lower_is_better=True),
            "snapshots": table.row(f"{window}: ingest + one snapshot written to Kafka", "ms", lower_is_better=True,
                                   note="what HEADROOM_SNAPSHOT_INTERVAL=30s costs"),
            "changelog": table.row(f"{window}: ingest + changelog records per batch", "ms", lower_is_better=True,
                                   note="the touched series' rows, one record per series per batch"),
        }
        rate = {
            "off": table.row("ingest rate, no state kept (off)", "samples/CPU-s", baseline=True),
            "changelog": table.row("ingest rate with the changelog", "samples/CPU-s", note="its cost grows with the samples"),
        }
        r_backlog = table.row("ingest rate with snapshots every 30 s, in a backlog", "samples/CPU-s",
                              note="derived: the off rate, less one snapshot's CPU (the two rows above) per 30 s")
        r_size = table.row("snapshot size, 10k series", "MB", ratio=False)
        r_per = table.row("snapshot size per series", "bytes", ratio=False)
        r_snap = table.row("snapshot: capture + encode + zstd, CPU", "ms", ratio=False, lower_is_better=True)
        r_save = table.row("write it to Kafka (acks=all), wall", "ms", ratio=False, lower_is_better=True)
        r_load = table.row("read it back from Kafka, wall", "ms", ratio=False, lower_is_better=True)
        r_restore = table.row("restore: decode + load, CPU", "ms", ratio=False, lower_is_better=True)
        r_catch = table.row("catch up 30 s of samples (2 scrapes, 20k samples), CPU", "ms", ratio=False,
                            lower_is_better=True)
        r_total = table.row("restart recovery: read + restore + catch-up, wall", "ms", ratio=False, lower_is_better=True)
        r_cl_bytes = table.row("changelog bytes written per scrape", "MB", ratio=False)
        r_cl_restore = table.row("restore from the changelog: read the 10k latest records + load rows, wall", "ms",
                                 ratio=False, lower_is_better=True)
        for run in range(ctx.runs):
            rates = {}
            for name, line in lines.items():
                scrapes = line.batches(steps)
                samples = sum(len(b) for scrape in scrapes for b in scrape)
                written = 0
                gc.collect()
                cpu = time.process_time()
                for k, scrape in enumerate(scrapes):
                    for batch in scrape:
                        line.detectors.ingest(batch)
                        if name == "changelog":
                            values = _state_rows(line.detectors, batch.series_keys)
                            for key, value in zip(batch.series_keys, values):
                                await producer.send("bench-changelog", value, key=key, partition=0)
                                written += len(value)
                            await producer.flush()
                    if name == "snapshots" and (k + 1) % SNAPSHOT_EVERY == 0:
                        await topic.save("bench-samples", 0, offset, line.detectors.snapshot())
                        offset += 1
                used = time.process_time() - cpu
                rates[name] = samples / used
                if name in rate:
                    rate[name].add(rates[name])
                r[name].add(1000 * used / (steps / SNAPSHOT_EVERY))
                if name == "changelog":
                    r_cl_bytes.add(written / steps / 1e6)
            # A backlog is ingested as fast as the core allows; snapshots still come
            # once per 30 s of wall time, so each costs its CPU once per 30 s.
            snapshot_s = (r["snapshots"].values[-1] - r["off"].values[-1]) / 1000
            r_backlog.add(rates["off"] * 30 / (30 + max(snapshot_s, 0.0)))

            line = lines["snapshots"]
            t = time.process_time()
            data = line.detectors.snapshot()
            r_snap.add(1000 * (time.process_time() - t))
            r_size.add(len(data) / 1e6)
            r_per.add(len(data) / len(wl))
            t = time.perf_counter()
            await topic.save("bench-samples", 0, offset, data)
            r_save.add(1000 * (time.perf_counter() - t))
            t0 = time.perf_counter()
            _, loaded = await topic.load("bench-samples", 0)
            r_load.add(1000 * (time.perf_counter() - t0))
            t = time.process_time()
            restored = PartitionDetectors.restore(loaded, groups)
            r_restore.add(1000 * (time.process_time() - t))
            catch_up = [b for scrape in line.batches(2) for b in scrape]
            t = time.process_time()
            for batch in catch_up:
                restored.ingest(batch)
            r_catch.add(1000 * (time.process_time() - t))
            r_total.add(1000 * (time.perf_counter() - t0))
            for batch in catch_up:  # keep the timeline whole for the next run
                line.detectors.ingest(batch)

            r_cl_restore.add(await _changelog_restore(broker.bootstrap, lines["changelog"].detectors, len(wl)))
            ctx.log(f"state run {run + 1}/{ctx.runs}: CPU ms per 30 s off {r['off'].values[-1]:.0f}, snapshots "
                    f"{r['snapshots'].values[-1]:.0f}, changelog {r['changelog'].values[-1]:.0f}; snapshot {len(data) / 1e6:.1f} MB "
                    f"in {r_snap.values[-1]:.0f} ms, recovery {r_total.values[-1]:.0f} ms, "
                    f"changelog restore {r_cl_restore.values[-1]:.0f} ms")
    finally:
        await producer.stop()
        await topic.stop()


async def _changelog_restore(bootstrap: str, detectors, n: int) -> float:
    """Milliseconds to read the last ``n`` changelog records and load them into state rows."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition("bench-changelog", 0)
    started = time.perf_counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=MAX_BYTES,
                                max_partition_fetch_bytes=MAX_BYTES, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, max(end - n, 0))
        store, scorer = detectors.rules.store, detectors.scorer.scorer("default")
        cap = store.capacity
        ring = cap * 8
        model = scorer.model
        n_scalars, bins = model.scalars.shape[1], model.profiles.shape[1]
        ts = np.empty((n, cap), dtype=np.int64)
        vals = np.empty((n, cap))
        scalars = np.empty((n, n_scalars))
        profiles = np.empty((n, bins), dtype=np.float32)
        visits = np.empty((n, bins), dtype=np.uint8)
        rows: dict[bytes, int] = {}
        got = 0
        while got < n:
            for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                for record in records:
                    v = record.value
                    i = rows.setdefault(record.key, len(rows))
                    ts[i] = np.frombuffer(v, np.int64, cap, 0)
                    vals[i] = np.frombuffer(v, np.float64, cap, ring)
                    scalars[i] = np.frombuffer(v, np.float64, n_scalars, 2 * ring)
                    profiles[i] = np.frombuffer(v, np.float32, bins, 2 * ring + 8 * n_scalars)
                    visits[i] = np.frombuffer(v, np.uint8, bins, 2 * ring + 8 * n_scalars + 4 * bins)
                    got += 1
    finally:
        await consumer.stop()
    return 1000 * (time.perf_counter() - started)


def run(ctx: BenchContext) -> Table:
    steps = 4 if ctx.quick else 8
    table = Table(
        f"state: snapshots + catch-up vs a changelog, {SERIES // 1000}k series in one partition",
        f"PartitionDetectors (runbook rules + anomaly pack, scores, forecasts), batches of {BATCH_SAMPLES}, "
        f"1 sample/series/15 s, {WARMUP_STEPS} warm-up scrapes, {steps} scrapes per run; rates are samples per CPU "
        "second of this process; real Kafka broker (another process), compacted topics",
    )
    asyncio.run(_measure(ctx, table, steps))
    return table
