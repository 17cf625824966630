"""(e) Cost of anomaly scoring and forecasting at 10k series: samples per CPU-second, memory per series.

``.venv/bin/python -m bench.run scoring [--runs N] [--quick] [--profile]``

The runbook fleet of ``bench/workload.py`` (10,003 series, one sample per
series per 15 s scrape), each scrape cut into ``SampleBatch``es of 2000 samples
in time order, as Kafka messages arrive. Every component is warmed up for 110
scrapes first (past the default detector's 100-sample warm-up, so every
sample takes the full scoring path), then each run times the next scrapes of
the same, continuing timeline. Rates are samples per CPU-second of this thread
(one core); every row gets the same batches.

Rows:

* baseline: ``AnomalyScorer.score_batch``, the default detector, per message;
* ``ForecastEngine.ingest_batch``: every sample of the message goes in (most
  series have no bound and are skipped after their first lookup);
* ``PartitionDetectors.ingest`` (what the worker's agent calls): runbook rules
  alone, + anomaly scores (appended as derived series), + forecasts;
* river, per sample, on the first 100 series of the same fleet:
  ``HalfSpaceTrees`` (defaults, values min-max scaled to [0, 1] beforehand)
  and ``GaussianScorer`` (``grace_period=100``), ``score_one`` then
  ``learn_one``, one model per series, warmed up on 300 samples each.

Memory per series: the numpy state of the scorer and the forecaster (array
bytes, capacity included, divided by the series they hold), and the
tracemalloc growth when 10k new series arrive (two scrapes into a fresh
object: dicts, keys, label tuples and arrays); river's as tracemalloc growth
per warmed-up model.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from bench.common import BenchContext, Table, load_groups, profile_call, runbook_rules
from bench.workload import BatchPlan, describe, runbook_fleet

SERIES = 10_000
BATCH_SAMPLES = 2000
WARMUP_STEPS = 110
RIVER_SERIES = 100
RIVER_WARMUP = 300
TARGET_RATE = 200_000
TARGET_BYTES = 4096


class _Stream:
    """One component fed the fleet's batches on its own continuing timeline."""

    def __init__(self, wl, plan: BatchPlan, sink: Callable) -> None:
        self.wl, self.plan, self.sink = wl, plan, sink
        self.step = 0

    def run(self, steps: int) -> tuple[int, float]:
        """(samples, CPU seconds of this thread) for the next ``steps`` scrapes."""
        batches = [b for k in range(self.step, self.step + steps) for _, b in self.plan.batches(self.wl, k)]
        self.step += steps
        gc.collect()
        sink = self.sink
        cpu = time.thread_time()
        for batch in batches:
            sink(batch)
        return sum(len(b) for b in batches), time.thread_time() - cpu


class _River:
    """One river model per series on a subset of the fleet, ``score_one`` then ``learn_one`` per sample."""

    def __init__(self, wl, make: Callable[[], object], score: Callable, learn: Callable, scale: bool) -> None:
        self.make = make
        self.models = [make() for _ in range(RIVER_SERIES)]
        self.score, self.learn = score, learn
        self.wl, self.scale = wl, scale
        rows = np.arange(RIVER_SERIES)
        history = np.stack([wl.step(k)[1][rows] for k in range(RIVER_WARMUP)])
        self.low, self.span = history.min(axis=0), np.ptp(history, axis=0) + 1e-9
        self.step = 0
        self.run(RIVER_WARMUP)

    def values(self, steps: int) -> list[list[float]]:
        out = np.stack([self.wl.step(k)[1][:RIVER_SERIES] for k in range(self.step, self.step + steps)])
        self.step += steps
        if self.scale:
            out = np.clip((out - self.low) / self.span, 0.0, 1.0)
        return out.tolist()

    def run(self, steps: int) -> tuple[int, float]:
        scrapes = self.values(steps)
        gc.collect()
        models, score, learn = self.models, self.score, self.learn
        cpu = time.thread_time()
        for row in scrapes:
            for model, v in zip(models, row):
                score(model, v)
                learn(model, v)
        return steps * RIVER_SERIES, time.thread_time() - cpu


def river_streams(wl) -> dict[str, _River]:
    from river import anomaly

    return {
        "hst": _River(wl, lambda: anomaly.HalfSpaceTrees(seed=42),
                      lambda m, v: m.score_one({"value": v}), lambda m, v: m.learn_one({"value": v}), scale=True),
        "gauss": _River(wl, lambda: anomaly.GaussianScorer(grace_period=100),
                        lambda m, v: m.score_one(None, v), lambda m, v: m.learn_one(None, v), scale=False),
    }


def array_bytes(*objects: object) -> int:
    """Bytes of every numpy array held by these objects or by the objects they hold (one level down)."""
    total, seen = 0, set()
    for obj in objects:
        for value in vars(obj).values():
            for inner in [value, *(vars(value).values() if hasattr(value, "__dict__") else ())]:
                if isinstance(inner, np.ndarray) and id(inner) not in seen:
                    seen.add(id(inner))
                    total += inner.nbytes
    return total


def traced_growth(make: Callable[[], object], feed: Callable[[object], None]) -> int:
    """Bytes tracemalloc sees allocated (and still held) by ``feed(make())``."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        obj = make()
        feed(obj)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        del obj


def memory(wl, plan: BatchPlan, groups, scorer, classic, forecaster, full, rivers: dict[str, _River],
           table: Table) -> None:
    from detector.anomaly import AnomalyScorer
    from detector.forecast import ForecastEngine
    from detector.partition import PartitionDetectors

    bounded = len(forecaster)

    def two_scrapes(sink_of: Callable[[object], Callable]) -> Callable[[object], None]:
        def feed(obj: object) -> None:
            sink = sink_of(obj)
            for k in range(2):
                for _, batch in plan.batches(wl, k):
                    sink(batch)
        return feed

    n = len(wl)
    rows = [
        ("AnomalyScorer (default model): numpy state / series", array_bytes(scorer) / len(scorer), TARGET_BYTES,
         "scalars, daily profile (float32) and visit counts (uint8), counter state; capacity included"),
        ("AnomalyScorer (classic model): numpy state / series", array_bytes(classic) / len(classic), TARGET_BYTES,
         "the default before 2026-12-07"),
        ("AnomalyScorer: tracemalloc growth / new series",
         traced_growth(AnomalyScorer, two_scrapes(lambda s: s.score_batch)) / n, TARGET_BYTES,
         "state rows plus the key -> row dict"),
        (f"ForecastEngine: numpy state / bounded series ({bounded} of {n})",
         array_bytes(forecaster) / bounded, TARGET_BYTES, "trend, warning, bound; capacity included"),
        ("ForecastEngine: tracemalloc growth / new series",
         traced_growth(ForecastEngine, two_scrapes(lambda f: f.ingest_batch)) / n, None,
         "every series is looked up once (label tuples for the bounded ones)"),
        ("PartitionDetectors (rules + scores + forecasts): tracemalloc growth / new series",
         traced_growth(lambda: PartitionDetectors(groups), two_scrapes(lambda d: d.ingest)) / n, None,
         "includes the rule store's rings (2 samples each) and the derived score series"),
        ("rule store rings after warm-up / series (incl. derived scores)",
         array_bytes(full.store) / len(full.store), None, "retention-sized rings, not scoring state"),
    ]
    for name, value, target, note in rows:
        table.row(name, "bytes", ratio=False, target=target, lower_is_better=True, note=note).add(value)
    for key, label in (("hst", "river HalfSpaceTrees"), ("gauss", "river GaussianScorer")):
        r = rivers[key]
        grown = traced_growth(lambda: _River(r.wl, r.make, r.score, r.learn, r.scale), lambda _: None)
        table.row(f"{label}: tracemalloc / warmed-up model", "bytes", ratio=False, target=TARGET_BYTES,
                  lower_is_better=True).add(grown / RIVER_SERIES)


def run(ctx: BenchContext) -> list[Table]:
    from detector.anomaly import AnomalyScorer
    from detector.forecast import ForecastEngine
    from detector.partition import PartitionDetectors

    steps = 10 if ctx.quick else 30
    files, rules_note = runbook_rules(ctx.tmp)
    groups = load_groups(files)
    wl = runbook_fleet(SERIES)
    plan = BatchPlan.make(wl, None, BATCH_SAMPLES)
    ctx.log(f"scoring: {describe(wl)}; {rules_note}")

    scorer, forecaster = AnomalyScorer(), ForecastEngine()
    classic = AnomalyScorer(model="classic")  # the default before 2026-12-07: what the default's change costs
    parts = {
        "rules": PartitionDetectors(groups, scores=False, forecasts=False),
        "rules+scores": PartitionDetectors(groups, forecasts=False),
        "full": PartitionDetectors(groups),
    }
    streams = {
        "scores": _Stream(wl, plan, scorer.score_batch),
        "scores-classic": _Stream(wl, plan, classic.score_batch),
        "forecasts": _Stream(wl, plan, forecaster.ingest_batch),
        **{key: _Stream(wl, plan, det.ingest) for key, det in parts.items()},
    }
    started = time.monotonic()
    for stream in streams.values():
        stream.run(WARMUP_STEPS)
    rivers = river_streams(wl)
    ctx.log(f"scoring: warm-up took {time.monotonic() - started:.0f}s")

    rate = Table(
        f"scoring: anomaly scores and forecasts, {len(wl)} series, 1 sample/series/15 s, batches of {BATCH_SAMPLES}",
        f"samples per CPU-second of this thread (one core); {steps} scrapes ({steps * len(wl) // 1000}k samples) per "
        f"run after {WARMUP_STEPS} warm-up scrapes; {rules_note}; river on {RIVER_SERIES} of the series, one model "
        "each, per sample",
    )
    names = {
        "scores": ("AnomalyScorer.score_batch (default detector)", TARGET_RATE, True, "per message"),
        "scores-classic": ("AnomalyScorer.score_batch (classic model: no stuck test, no declustering)", None, False,
                           "the default before 2026-12-07"),
        "forecasts": ("ForecastEngine.ingest_batch", TARGET_RATE, False, "every sample of the message"),
        "rules": ("PartitionDetectors.ingest: rules only", None, False, ""),
        "rules+scores": ("PartitionDetectors.ingest: rules + scores", None, False, ""),
        "full": ("PartitionDetectors.ingest: rules + scores + forecasts", TARGET_RATE, False, "the worker's default"),
        "hst": ("river HalfSpaceTrees, score_one + learn_one per sample", None, False, "values min-max scaled to [0, 1]"),
        "gauss": ("river GaussianScorer, score_one + learn_one per sample", None, False, ""),
    }
    for name, target, base, note in names.values():
        rate.row(name, "samples/CPU-s", baseline=base, target=target, note=note)
    per_sample = {key: rate.row(f"{label}: CPU per sample", "µs", ratio=False) for key, label in (
        ("scores", "default detector"), ("hst", "river HalfSpaceTrees"), ("gauss", "river GaussianScorer"))}
    for i in range(ctx.runs):
        got = {}
        for key, stream in [*streams.items(), *rivers.items()]:
            n, cpu = stream.run(steps if key not in rivers else max(steps, 20))
            got[key] = n / cpu
            rate.rows[names[key][0]].add(got[key])
            if key in per_sample:
                per_sample[key].add(1e6 * cpu / n)
        ctx.log("scoring run {}/{}: ".format(i + 1, ctx.runs) + ", ".join(f"{k} {v:,.0f}" for k, v in got.items()))

    mem = Table(f"scoring: memory per series, {len(wl)} series",
                f"numpy state from the arrays (capacity included) and tracemalloc growth; target <= {TARGET_BYTES} B")
    memory(wl, plan, groups, scorer, classic, forecaster, parts["full"], rivers, mem)
    if ctx.profile:
        profile_call(ctx.console, "PartitionDetectors.ingest, rules + scores + forecasts",
                     lambda: streams["full"].run(steps))
    return [rate, mem]
