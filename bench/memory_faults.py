"""Faults as figures (issue 9, items 1-2): one dense series among 100k, and a timestamp a year ahead.

Memory: one partition's rule engine holding 100k series, one sample each per
15 s scrape for 5 minutes, measured as the store's own arrays
(``SeriesStore.nbytes``) per series, alone and beside one dense series (20,000
samples 1 ms apart, in one request): with limits off (size classes alone) and
with the worker's defaults (``HEADROOM_SERIES_MIN_INTERVAL=1s``), after the
worker's sweep (retire, shrink, pack). Before size
classes every ring was as wide as the densest series needed: 100k x 32768
slots x 16 bytes, 52 GB (not run: it does not fit).

Jump: one partition (the worker's engines and limits, the runbook's 7 rules,
2000 series) after 5 minutes of scrapes gets one sample stamped a year ahead.
Before, that message ran every 15 s tick of the year (2.1 million group
evaluations) in one call; now the message's call runs at most
``HEADROOM_MAX_EVALUATIONS_PER_STEP`` (32), the worker runs the rest in steps
with a yield between each, and ticks more than ``HEADROOM_MAX_CATCH_UP`` (1 h)
behind are skipped. "Longest step" is the longest the event loop is held.
"""

from __future__ import annotations

import gc
import time

import numpy as np

from bench.common import BenchContext, Table, load_groups, runbook_rules
from bench.workload import BatchPlan, runbook_fleet

SPARSE = 100_000
DENSE_SAMPLES = 20_000
JUMP_SERIES = 2000
SCRAPES = 21  # 5 minutes at 15 s
T0 = 1_700_000_000_000 // 15_000 * 15_000
YEAR_MS = 365 * 24 * 3_600_000


def _store_bytes_per_series(sparse: int, dense: bool, limits: dict) -> float:
    from detector.labels import canonical_bytes
    from detector.promql import compile_expr
    from detector.rules import AlertingRule, RuleEngine, RuleGroup
    from detector.wire.batch import SampleBatch

    rule = AlertingRule("Down", compile_expr("up == 0"), "up == 0")
    engine = RuleEngine([RuleGroup("g", "bench", 15_000, (rule,))], **limits)
    keys = [canonical_bytes((("__name__", "up"), ("instance", f"host-{i}"), ("job", "node"))) for i in range(sparse)]
    index = np.arange(sparse, dtype=np.uint32)
    for k in range(SCRAPES):
        engine.ingest(SampleBatch(keys, index, np.full(sparse, T0 + k * 15_000, dtype=np.int64), np.ones(sparse)))
        if dense and k == SCRAPES // 2:
            labels = (("__name__", "up"), ("instance", "dense"), ("job", "node"))
            t = T0 + k * 15_000
            engine.ingest(SampleBatch.from_series([(labels, [(t + i, 1.0) for i in range(DENSE_SAMPLES)])]))
    engine.free_expired()  # the worker's sweep (once a minute of event time): retire, shrink, pack
    return engine.store.nbytes / sparse


def _jump(groups, limits: dict) -> dict[str, float]:
    from detector.partition import PartitionDetectors
    from detector.wire.batch import SampleBatch

    wl = runbook_fleet(JUMP_SERIES)
    plan = BatchPlan.make(wl, None, 2000)
    det = PartitionDetectors(groups, engine_options=limits, scores=False, forecasts=False)
    for k in range(SCRAPES):
        for _, batch in plan.batches(wl, k):
            det.ingest(batch)
    evaluate, count = det.rules._evaluate_group, [0]

    def counted(index, tick, out):  # noqa: ANN001 - one call per group evaluation
        count[0] += 1
        evaluate(index, tick, out)

    det.rules._evaluate_group = counted
    newest = det.rules.newest
    bogus = SampleBatch([wl.keys[0]], np.zeros(1, dtype=np.uint32), np.array([newest + YEAR_MS]), np.ones(1))
    gc.collect()
    started = time.perf_counter()
    out = det.ingest(bogus)
    message_ms = 1000 * (time.perf_counter() - started)
    in_message = count[0]
    steps, longest = 0, 0.0
    all_started = time.perf_counter()
    while det.pending:
        t = time.perf_counter()
        step = det.catch_up()
        longest = max(longest, 1000 * (time.perf_counter() - t))
        steps += 1
    return {
        "message_groups": in_message,
        "message_ms": message_ms,
        "steps": steps,
        "longest_ms": longest,
        "catch_up_ms": message_ms + 1000 * (time.perf_counter() - all_started),
        "groups": count[0],
        "skipped": out.engine.skipped,
    }


def run(ctx: BenchContext) -> list[Table]:
    from pipelines.settings import Settings

    worker = Settings().engine_limits()
    off = {**worker, "min_interval_ms": 0}
    sparse = 20_000 if ctx.quick else SPARSE
    memory = Table(
        f"memory: store bytes per series, {sparse // 1000}k series at one sample per 15 s, with one dense series",
        f"{SCRAPES} scrapes (5 min); the dense series: {DENSE_SAMPLES:,} samples 1 ms apart in one request; bytes = "
        "SeriesStore.nbytes (every array the store holds) / sparse series. One ring width for all (before): "
        f"{sparse:,} x 32768 slots x 16 B = {sparse * 32768 * 16 / 1e9:.1f} GB, not run",
    )
    r_alone = memory.row(f"{sparse // 1000}k series alone", "bytes", baseline=True, lower_is_better=True)
    r_off = memory.row("+ one dense series, limits off (size classes only)", "bytes", lower_is_better=True)
    r_on = memory.row("+ one dense series, worker defaults (1 s min interval)", "bytes", lower_is_better=True)
    files, note = runbook_rules(ctx.tmp)
    groups = load_groups(files)
    jump = Table(
        f"jump: one sample a year ahead, one partition of {JUMP_SERIES} series, worker limits",
        f"{note}; after {SCRAPES} scrapes; limits: "
        f"{worker['max_evaluations_per_step']} per step, catch-up {worker['max_catch_up_ms'] // 60_000} min. "
        "Before: 2.1M group evaluations in the message's one call",
    )
    rows = {
        "message_groups": jump.row("group evaluations in the message's own call", "count", ratio=False, lower_is_better=True),
        "message_ms": jump.row("the message's call, wall", "ms", ratio=False, lower_is_better=True),
        "steps": jump.row("catch-up steps after it (each after a yield)", "count", ratio=False),
        "longest_ms": jump.row("longest step, wall (event loop held)", "ms", ratio=False, lower_is_better=True),
        "groups": jump.row("group evaluations in all", "count", ratio=False),
        "catch_up_ms": jump.row("message + all steps, wall", "ms", ratio=False, lower_is_better=True),
        "skipped": jump.row("group evaluations skipped (counted)", "count", ratio=False),
    }
    for i in range(ctx.runs):
        gc.collect()
        r_alone.add(_store_bytes_per_series(sparse, False, off))
        r_off.add(_store_bytes_per_series(sparse, True, off))
        r_on.add(_store_bytes_per_series(sparse, True, worker))
        figures = _jump(groups, worker)
        for key, row in rows.items():
            row.add(figures[key])
        ctx.log(f"memory_faults run {i + 1}/{ctx.runs}: {r_alone.values[-1]:.0f} / {r_off.values[-1]:.0f} / "
                f"{r_on.values[-1]:.0f} bytes per series; jump: {figures['message_groups']:.0f} groups in the message, "
                f"{figures['steps']} steps, longest {figures['longest_ms']:.1f} ms")
    return [memory, jump]
