"""(b) Rule evaluation cost without Kafka: RuleEngine.ingest of SampleBatches, 10k series, runbook rules.

One sample per series per 15 s of event time (a 15 s scrape), cut into
batches of 2000 samples in time order, so every 15 s of event time brings one
evaluation of the group (the 7 rules over all 10k series). Warmed up for 45
scrapes first (11 min of event time: past the 5 m rate() window, the 5 m
lookback and the store's last ring growth), then each run times the next
scrapes of the same, continuing timeline.

Rows:
* baseline: ``SeriesStore.append`` alone (no evaluation), same batches;
* ``RuleEngine.ingest``, one engine holding all 10k series (worst case: one partition);
* ``RuleEngine.ingest``, 4 engines, the series split by ``partition_for`` (job, instance)
  as the receiver splits them over 4 Kafka partitions (each evaluates its share);
* the evaluation time per tick of the one-engine case (7 rules over 10k series).
"""

from __future__ import annotations

import gc
import time

from bench.common import BenchContext, Table, load_groups, profile_call, runbook_rules
from bench.workload import BatchPlan, describe, runbook_fleet

SERIES = 10_000
BATCH_SAMPLES = 2000
WARMUP_STEPS = 45
TARGET = 200_000  # the full pipeline's target; the engine alone must be well above it


class _Scenario:
    def __init__(self, name: str, wl, plan: BatchPlan, sink) -> None:
        self.name, self.wl, self.plan, self.sink = name, wl, plan, sink
        self.step = 0

    def batches(self, steps: int) -> list:
        out = [pb for k in range(self.step, self.step + steps) for pb in self.plan.batches(self.wl, k)]
        self.step += steps
        return out

    def run(self, steps: int) -> tuple[int, float, float]:
        """(samples, wall seconds, CPU seconds of this thread)."""
        batches = self.batches(steps)
        gc.collect()
        sink = self.sink
        started, cpu = time.perf_counter(), time.thread_time()
        for partition, batch in batches:
            sink(partition, batch)
        return sum(len(b) for _, b in batches), time.perf_counter() - started, time.thread_time() - cpu


def run(ctx: BenchContext) -> Table:
    from detector.rules import RuleEngine
    from detector.store import SeriesStore

    steps = 20 if ctx.quick else 40
    files, rules_note = runbook_rules(ctx.tmp)
    groups = load_groups(files)
    wl = runbook_fleet(SERIES)
    ctx.log(f"engine: {describe(wl)}; {rules_note}")

    one = RuleEngine(groups)
    eval_time = [0.0, 0]
    evaluate = one._evaluate_group

    def timed_evaluate(index, tick, out):  # wraps the instance's method; one perf_counter pair per group evaluation
        t = time.perf_counter()
        evaluate(index, tick, out)
        eval_time[0] += time.perf_counter() - t
        eval_time[1] += 1

    one._evaluate_group = timed_evaluate
    store = SeriesStore(retention_ms=one.store.retention_ms)
    engines: dict[int, RuleEngine] = {}

    def partitioned(partition, batch):
        engine = engines.get(partition)
        if engine is None:
            engine = engines[partition] = RuleEngine(groups)
        engine.ingest(batch)

    single_plan = BatchPlan.make(wl, None, BATCH_SAMPLES)
    scenarios = {
        "append": _Scenario("append", wl, single_plan, lambda p, b: store.append(b)),
        "one": _Scenario("one", wl, single_plan, lambda p, b: one.ingest(b)),
        "four": _Scenario("four", wl, BatchPlan.make(wl, 4, BATCH_SAMPLES), partitioned),
    }
    for scenario in scenarios.values():
        scenario.run(WARMUP_STEPS)
    eval_time[:] = [0.0, 0]

    table = Table(
        f"engine: RuleEngine.ingest, {len(wl)} series, 1 sample/series/15 s, batches of {BATCH_SAMPLES}",
        f"{rules_note}; interval 15 s; {steps} scrapes ({steps * len(wl) // 1000}k samples) per run after "
        f"{WARMUP_STEPS} warm-up scrapes; samples/s = samples / wall time of the calls; per CPU-s = samples / "
        "CPU time of this thread over the same calls (per core, robust to the neighbours' load)",
    )
    rows = {
        "append": ("SeriesStore.append only (no evaluation)", None, True, ""),
        "one": ("RuleEngine.ingest, 1 engine x 10k series", TARGET, False, "store + watermark + every due evaluation"),
        "four": ("RuleEngine.ingest, 4 partition engines", TARGET, False,
                 "series split by (job, instance) as over 4 Kafka partitions"),
    }
    for key, (name, target, is_base, note) in rows.items():  # create rows in display order
        table.row(name, "samples/s", baseline=is_base, target=target, note=note)
        table.row(f"{name}, per CPU-s", "samples/CPU-s", baseline=is_base, target=target)
    r_tick = table.row("evaluation per tick, 1 engine (7 rules, 10k series)", "ms", lower_is_better=True)
    r_share = table.row("share of ingest time spent evaluating, 1 engine", "%", ratio=False)
    for i in range(ctx.runs):
        rates = {}
        for key, (name, _, _, _) in rows.items():
            eval_time[:] = [0.0, 0]
            n, wall, cpu = scenarios[key].run(steps)
            table.rows[name].add(n / wall)
            table.rows[f"{name}, per CPU-s"].add(n / cpu)
            rates[key] = n / cpu
            if key == "one":
                r_tick.add(1000 * eval_time[0] / max(eval_time[1], 1))
                r_share.add(100 * eval_time[0] / wall)
        ctx.log(f"engine run {i + 1}/{ctx.runs}: per CPU-s: append {rates['append']:,.0f}, one {rates['one']:,.0f} "
                f"({r_tick.values[-1]:.1f} ms/tick), four {rates['four']:,.0f}")
    if ctx.profile:
        profile_call(ctx.console, "RuleEngine.ingest, 1 engine", lambda: scenarios["one"].run(steps))
    return table
