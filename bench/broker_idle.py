"""The Kafka broker's CPU when nothing flows, by broker setting.

At the runbook's rate (667 samples/s) the broker's idle work was most of Headroom's
CPU per sample in the ``peers`` bench (about 40 of 63-73 CPU-s per 1M samples). This
bench starts a lone broker per candidate setting, with the samples topic's 8
partitions, lets it settle, and reads ``utime + stime`` from ``/proc`` over a window
with no client attached. The candidates rotate order from run to run, and each
figure's ratio is to the current settings measured in the same run.

A second table attaches one idle Headroom worker (8 partitions, the runbook's
rules, no samples) to the broker and compares the worker's fetch wait while
nothing is buffered: 5 s (:mod:`pipelines.faust_transport`) against the 1 s and
the fixed 100 ms of before, as the broker's plus the worker's CPU.

``python -m bench.run broker_idle`` (3 runs, about 15 minutes; ``--quick``: 15 s windows).
"""

from __future__ import annotations

import asyncio
import time

from bench.common import BenchContext, Table, WorkerProcess, runbook_rules
from bench.peers import cpu_seconds

SETTLE_S = 10.0

# name -> broker settings on top of pipelines.stack.kafka's; the first is the baseline.
CANDIDATES: dict[str, dict[str, int | str]] = {
    "Headroom's settings (heartbeat 1 s, no-op record 5 s)": {},
    "before 2026-12-06 (heartbeat 500 ms, no-op record 500 ms)": {"broker.heartbeat.interval.ms": 500,
                                                                  "metadata.max.idle.interval.ms": 500},
    "Kafka's defaults (heartbeat 2 s, session 9 s, no-op 500 ms)": {"broker.heartbeat.interval.ms": 2000,
                                                                    "broker.session.timeout.ms": 9000,
                                                                    "metadata.max.idle.interval.ms": 500},
    "no-op record every 10 s": {"metadata.max.idle.interval.ms": 10000},
    "heartbeat 2 s, session 6 s": {"broker.heartbeat.interval.ms": 2000, "broker.session.timeout.ms": 6000},
    "serial GC": {"gc": "-XX:+UseSerialGC"},
    "Kafka's thread pools (8 request handlers, 3 network threads)": {"num.io.threads": 8, "num.network.threads": 3},
}


def _idle_rate(ctx: BenchContext, name: str, overrides: dict[str, int | str], window_s: float) -> float:
    """CPU-ms per second of a fresh broker with ``overrides``, no clients, after it settles."""
    from pipelines.stack.kafka import KafkaBroker, create_topics

    settings = dict(overrides)
    gc = str(settings.pop("gc", "-XX:+UseG1GC"))
    broker = KafkaBroker(ctx.tmp / f"idle-{len(list(ctx.tmp.glob('idle-*')))}", config_overrides=settings, gc=gc)
    try:
        broker.start()
        asyncio.run(create_topics(broker.bootstrap, {"samples": 8}))
        pid = broker.pid()
        assert pid is not None
        time.sleep(SETTLE_S)
        before, started = cpu_seconds(pid), time.monotonic()
        time.sleep(window_s)
        rate = (cpu_seconds(pid) - before) / (time.monotonic() - started) * 1000
    finally:
        broker.stop()
    ctx.log(f"{name}: {rate:.1f} CPU-ms/s")
    return rate


FETCH_WAITS_MS = {"idle fetch wait 5 s (Headroom's)": 5000, "idle fetch wait 1 s (before 2026-12-06 23:40)": 1000,
                  "fixed 100 ms fetch wait (before 2026-12-06 17:20)": 100}


def _with_worker(ctx: BenchContext, idle_wait_ms: int, window_s: float) -> tuple[float, float]:
    """(broker, worker) CPU-ms per second with one idle worker attached."""
    from pipelines.stack.kafka import KafkaBroker

    n = len(list(ctx.tmp.glob("idle-*")))
    broker = KafkaBroker(ctx.tmp / f"idle-{n}")
    worker = None
    try:
        broker.start()
        files, _ = runbook_rules(ctx.tmp)
        worker = WorkerProcess(broker.bootstrap, ctx.tmp / f"idle-{n}" / "worker", app_id=f"idle{n}",
                               samples_topic=f"idle{n}-samples", rule_files=files, partitions=8,
                               extra_env={"HEADROOM_FETCH_IDLE_WAIT_MS": str(idle_wait_ms)})
        worker.start()
        time.sleep(SETTLE_S + 5)  # the group's first rebalance and the first snapshot
        pids = (broker.pid(), worker.pid)
        before, started = [cpu_seconds(p) for p in pids], time.monotonic()
        time.sleep(window_s)
        elapsed = time.monotonic() - started
        rates = [(cpu_seconds(p) - b) / elapsed * 1000 for p, b in zip(pids, before)]
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    return rates[0], rates[1]


def run(ctx: BenchContext) -> list[Table]:
    window_s = 15.0 if ctx.quick else 30.0
    table = Table("Kafka broker idle CPU by setting",
                  f"lone KRaft broker (broker + controller), 8-partition topic, no clients; CPU over {window_s:.0f} s "
                  f"after {SETTLE_S:.0f} s settling; order rotates per run")
    names = list(CANDIDATES)
    for run_index in range(ctx.runs):
        order = names[run_index % len(names):] + names[:run_index % len(names)]
        for name in order:
            rate = _idle_rate(ctx, name, CANDIDATES[name], window_s)
            table.row(name, "ms/s", baseline=(name == names[0]), lower_is_better=True).add(rate)
    attached = Table("Kafka broker and one idle worker, by the worker's fetch wait",
                     f"broker + worker (8 partitions, runbook rules, no samples); CPU over {window_s:.0f} s")
    waits = list(FETCH_WAITS_MS)
    for run_index in range(ctx.runs):
        for name in (waits if run_index % 2 == 0 else waits[::-1]):
            broker_rate, worker_rate = _with_worker(ctx, FETCH_WAITS_MS[name], window_s)
            ctx.log(f"{name}: broker {broker_rate:.1f}, worker {worker_rate:.1f} CPU-ms/s")
            first = name == waits[0]
            attached.row(f"{name}: broker + worker", "ms/s", baseline=first, lower_is_better=True).add(
                broker_rate + worker_rate)
            attached.row(f"{name}: broker", "ms/s", lower_is_better=True).add(broker_rate)
            attached.row(f"{name}: worker", "ms/s", lower_is_better=True).add(worker_rate)
    return [table, attached]
