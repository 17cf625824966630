"""(c) Throughput through the real Faust worker: sample batches in Kafka -> ``headroom worker`` -> rules.

Setup (once): the 10k-series runbook fleet, one sample per series per 15 s,
cut as the receiver cuts it: per Kafka partition (4, by job/instance), at most
2500 samples per message (~600 KB, mostly the series table). Pre-encoded
``SampleBatch`` messages for 36 warm-up scrapes (9 min of event time: rate()
windows full, the store's rings at their final size) plus the measured scrapes
are produced with aiokafka to one samples topic before anything consumes.

Each run starts a fresh ``python -m pipelines.cli worker`` (HEADROOM_* env,
the runbook rules, a new app id, hence a new consumer group reading the topic
from the start) and polls its ``/metrics`` every 50 ms for
``headroom_worker_samples_total``, restricted to the counters it reads
(``?name[]=``: the whole page, with a gauge per series, would cost the worker
more than the polling is worth):

* whole stream: samples / time from the first poll showing any sample
  consumed to the first poll showing all of them;
* steady: the same from the first poll past the warm-up scrapes; also per
  worker CPU-second (utime + stime of the worker process over that window).

Baseline, in the same run: a plain aiokafka consumer in this process reading
the same messages from the start and decoding each with ``SampleBatch.decode``
(no rules, no Faust).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

from bench.common import BenchContext, Table, WorkerProcess, print_profile, runbook_rules, scrape
from bench.workload import BatchPlan, describe, runbook_fleet

SERIES = 10_000
PARTITIONS = 4
MAX_BATCH = 2500
WARMUP_STEPS = 36
TOPIC = "bench-pipeline-samples"
TARGET = 200_000
POLL_S = 0.05
_TICKS = os.sysconf("SC_CLK_TCK")

POLLED = "?" + "&".join(f"name[]={name}" for name in (
    "headroom_worker_samples_total", "headroom_rule_evaluation_failures_total", "headroom_alert_transitions_total",
    "headroom_worker_batches_total", "headroom_worker_folds_total"))


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


async def _produce(bootstrap: str, wl, steps: int) -> tuple[int, int, int]:
    from aiokafka import AIOKafkaProducer

    plan = BatchPlan.make(wl, PARTITIONS, MAX_BATCH)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_request_size=8 * 1024 * 1024,
                                max_batch_size=1024 * 1024)
    await producer.start()
    messages = samples = size = 0
    try:
        pending = []
        for k in range(steps):
            for partition, batch in plan.batches(wl, k):
                value = batch.encode()
                pending.append(await producer.send(TOPIC, value=value, partition=partition))
                messages += 1
                samples += len(batch)
                size += len(value)
            if len(pending) > 200:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return messages, samples, size


async def _baseline(bootstrap: str, total: int, warm: int) -> tuple[float, float, float]:
    """(whole-stream samples/s, steady samples/s, steady samples/CPU-s) for a plain consumer + decode."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from detector.wire.batch import SampleBatch

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=1024 * 1024)
    await consumer.start()
    try:
        parts = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        count = 0
        first = steady = None
        async with asyncio.timeout(300):
            while count < total:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        count += len(SampleBatch.decode(record.value))
                if first is None and count:
                    first = (time.perf_counter(), count)
                if steady is None and count >= warm:
                    steady = (time.perf_counter(), count, time.process_time())
        end, cpu_end = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return ((total - first[1]) / (end - first[0]), (total - steady[1]) / (end - steady[0]),
            (total - steady[1]) / max(cpu_end - steady[2], 1e-9))


def _worker_run(ctx: BenchContext, bootstrap: str, rule_files: list[str], total: int, warm: int, run: int,
                profile_to: Path | None = None) -> dict:
    app_id = f"bench-pipe-{run}-{uuid.uuid4().hex[:6]}"
    worker = WorkerProcess(bootstrap, ctx.tmp / app_id, app_id=app_id, samples_topic=TOPIC, rule_files=rule_files,
                           partitions=PARTITIONS, profile_to=profile_to)
    try:
        started = time.monotonic()
        worker.start()
        ready = time.monotonic() - started
        first = steady = None
        trace: list[tuple[float, float]] = []
        deadline = time.monotonic() + 300
        while True:
            metrics = scrape(worker.metrics_url + POLLED) or {}
            now = time.perf_counter()
            count = metrics.get("headroom_worker_samples_total", 0)
            if count > 0:
                trace.append((now, count))
            if first is None and count > 0:
                first = (now, count)
            if steady is None and count >= warm:
                steady = (now, count, _cpu_seconds(worker.pid))
            if count >= total:
                end, cpu_end = now, _cpu_seconds(worker.pid)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker consumed {count} of {total} samples in 300 s; see {worker.log_file}")
            time.sleep(POLL_S)
        # Polls between which the counter did not move although samples were waiting: the worker made no progress.
        stalled = sum(b[0] - a[0] for a, b in zip(trace, trace[1:]) if b[1] == a[1])
        return {
            "ready_s": ready,
            "stalled_s": stalled,
            "whole": (total - first[1]) / (end - first[0]),
            "steady": (total - steady[1]) / (end - steady[0]),
            "steady_cpu": (total - steady[1]) / max(cpu_end - steady[2], 1e-9),
            "errors": metrics.get("headroom_rule_evaluation_failures_total", 0),
            "transitions": sum(v for k, v in metrics.items() if k.startswith("headroom_alert_transitions_total")),
            # how many messages a backlog's folds took at once (Worker.handle_many)
            "per_fold": metrics.get("headroom_worker_batches_total", 0) / max(metrics.get("headroom_worker_folds_total", 0), 1),
        }
    finally:
        worker.stop()


def run(ctx: BenchContext) -> Table:
    from pipelines.stack.kafka import create_topics

    steps = 16 if ctx.quick else 40
    rule_files, rules_note = runbook_rules(ctx.tmp)
    wl = runbook_fleet(SERIES)
    broker = ctx.broker()
    asyncio.run(create_topics(broker.bootstrap, {TOPIC: PARTITIONS}))
    t = time.monotonic()
    messages, total, size = asyncio.run(_produce(broker.bootstrap, wl, WARMUP_STEPS + steps))
    warm = WARMUP_STEPS * len(wl)
    ctx.log(f"pipeline: {describe(wl)}; produced {messages} messages, {total:,} samples, {size / 1e6:.0f} MB "
            f"({size / messages / 1e3:.0f} KB/message, {total // messages} samples/message) in "
            f"{time.monotonic() - t:.1f}s; {rules_note}")
    table = Table(
        f"pipeline: Kafka -> headroom worker (Faust), {len(wl)} series, {PARTITIONS} partitions, runbook rules",
        f"{total // messages} samples/message; steady = after {WARMUP_STEPS} warm-up scrapes, over the last "
        f"{steps} ({steps * len(wl):,} samples); counts polled from the worker's /metrics every {POLL_S * 1000:.0f} ms",
    )
    b_whole = table.row("aiokafka consumer + SampleBatch.decode, whole stream", "samples/s", baseline=True)
    b_steady = table.row("aiokafka consumer + SampleBatch.decode, steady", "samples/s")
    b_cpu = table.row("aiokafka consumer + SampleBatch.decode, steady, per CPU-s", "samples/CPU-s", baseline=True)
    w_whole = table.row("headroom worker, whole stream (first batch -> last)", "samples/s", target=TARGET)
    w_steady = table.row("headroom worker, steady", "samples/s", target=TARGET)
    w_cpu = table.row("headroom worker, steady, per worker CPU-s", "samples/CPU-s")
    w_stall = table.row("worker: time without progress while a backlog waited", "s", ratio=False, lower_is_better=True,
                        note="sum of 50 ms polls where the counter did not move")
    w_ready = table.row("worker start -> /metrics answering", "s", ratio=False, lower_is_better=True)
    for i in range(ctx.runs):
        whole, steady, cpu = asyncio.run(_baseline(broker.bootstrap, total, warm))
        b_whole.add(whole)
        b_steady.add(steady)
        b_cpu.add(cpu)
        result = _worker_run(ctx, broker.bootstrap, rule_files, total, warm, i)
        w_whole.add(result["whole"])
        w_steady.add(result["steady"])
        w_cpu.add(result["steady_cpu"])
        w_ready.add(result["ready_s"])
        w_stall.add(result["stalled_s"])
        ctx.log(f"pipeline run {i + 1}/{ctx.runs}: consumer {whole:,.0f}/s, worker {result['whole']:,.0f}/s whole, "
                f"{result['steady']:,.0f}/s steady ({result['steady_cpu']:,.0f}/CPU-s), "
                f"{result['stalled_s']:.2f}s without progress, "
                f"{result['transitions']:.0f} alert transitions, {result['errors']:.0f} evaluation failures, "
                f"{result['per_fold']:.1f} messages per fold")
    if ctx.profile:
        stats = ctx.tmp / "worker.prof"
        result = _worker_run(ctx, broker.bootstrap, rule_files, total, warm, ctx.runs, profile_to=stats)
        ctx.log(f"pipeline, worker under cProfile: {result['steady']:,.0f}/s steady")
        if stats.exists():
            print_profile(ctx.console, "headroom worker (whole process, startup included)", stats, top=30)
        else:
            ctx.log("[yellow]the profiled worker wrote no stats[/yellow]")
    return table
