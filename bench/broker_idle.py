"""The Kafka broker's CPU when nothing flows, by broker setting.

At the runbook's rate (667 samples/s) the broker's idle work was most of Headroom's
CPU per sample in the ``peers`` bench (about 40 of 63-73 CPU-s per 1M samples). This
bench starts a lone broker per candidate setting, with the samples topic's 8
partitions, lets it settle, and reads ``utime + stime`` from ``/proc`` over a window
with no client attached. The candidates rotate order from run to run, and each
figure's ratio is to the current settings measured in the same run.

``python -m bench.run broker_idle`` (3 runs, about 10 minutes; ``--quick``: 1 run).
"""

from __future__ import annotations

import asyncio
import time

from bench.common import BenchContext, Table
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
    return [table]
