"""The forecaster runs once per rule tick over every batch the tick brought: the same warnings and
estimates as one batch per scrape, far fewer forecaster calls, and nothing lost across a snapshot."""

from __future__ import annotations

import numpy as np

from detector.forecast.engine import ForecastEngine
from detector.partition import FORECAST_PENDING_MAX, PartitionDetectors
from detector.rules import load_rule_files
from detector.wire.batch import SampleBatch

T0_MS = 1_700_000_000_000
SCRAPE_MS = 15_000
WORKERS = 6


def saturation(worker: int, k: int) -> float:
    """Flat, then worker w ramps to its bound from scrape 200 + 20 w, then recovers."""
    rng = np.random.default_rng(1000 * worker + k)
    start = 200 + 20 * worker
    v = 0.2 + 0.8 * min(max(k - start, 0), 120) / 120 - 0.9 * max(k - start - 140, 0) / 60
    return float(np.clip(v + rng.normal(0, 0.02), 0, 1))


def scrape(k: int) -> list[tuple[tuple, list[tuple[int, float]]]]:
    t = T0_MS + k * SCRAPE_MS
    series = [((("__name__", "worker_dispatch_channel_saturation"), ("worker_id", f"w{w}")), [(t, saturation(w, k))])
              for w in range(WORKERS)]
    series += [((("__name__", "node_load1"), ("instance", f"n{i}")), [(t, 1.0 + (k + i) % 5)]) for i in range(4)]
    return series


def events(out_list):
    warnings = [(t.labels, t.state, t.previous, t.eval_time) for out in out_list for t in out.transitions
                if t.source == "forecast"]
    # by series and time: within one evaluation the order of series follows the forecaster's rows
    estimates = sorted((f.labels, f.t_ms, None if f.eta_s != f.eta_s else f.eta_s, f.state)
                       for out in out_list for f in out.forecasts)
    return sorted(warnings), estimates


def feed(split: bool, steps: int = 420, snapshot_at: int | None = None):
    groups = load_rule_files(["backpressure"])
    detectors = PartitionDetectors(groups, scores=False)
    outs = []
    for k in range(steps):
        if snapshot_at is not None and k == snapshot_at:
            detectors = PartitionDetectors.restore(detectors.snapshot(), groups, scores=False)
        series = scrape(k)
        batches = [SampleBatch.from_series([s]) for s in series] if split else [SampleBatch.from_series(series)]
        outs += [detectors.ingest(b) for b in batches]
    # the next tick's evaluation: what the last one left pending is forecast now
    outs.append(detectors.advance_to(T0_MS + steps * SCRAPE_MS))
    assert detectors._forecast_pending_samples == 0
    return outs


def test_many_small_batches_per_tick_forecast_as_one_batch_per_scrape(monkeypatch):
    calls = []
    ingest = ForecastEngine.ingest
    monkeypatch.setattr(ForecastEngine, "ingest", lambda self, *a, **k: calls.append(1) or ingest(self, *a, **k))
    whole = events(feed(split=False))
    whole_calls = len(calls)
    calls.clear()
    split = events(feed(split=True))
    assert whole == split
    warnings, estimates = whole
    fired = {labels for labels, state, _, _ in warnings if state == "firing"}
    assert len(fired) == WORKERS, warnings  # every ramp warned, so the comparison covered warnings
    assert len(estimates) > 100
    # ten batches a scrape, but the forecaster still runs about once a tick
    assert len(calls) <= whole_calls + 2, (len(calls), whole_calls)


def test_samples_held_for_the_next_tick_survive_a_snapshot():
    steps = 420
    straight = events(feed(split=True, steps=steps))
    # restored in the middle of the ramps: mid-scrape batches of the last tick are pending then
    restored = events(feed(split=True, steps=steps, snapshot_at=260))
    assert straight == restored


def test_the_forecaster_runs_anyway_once_enough_samples_wait():
    """A watermark that does not move (samples all in one instant, a stalled tick) holds a bounded
    number of samples back, not everything."""
    groups = load_rule_files(["backpressure"])
    detectors = PartitionDetectors(groups, scores=False)
    key = (("__name__", "worker_dispatch_channel_saturation"), ("worker_id", "w0"))
    held = []
    for i in range(FORECAST_PENDING_MAX // 1000 + 2):
        series = [((("__name__", "x"), ("i", str(j))), [(T0_MS, 1.0)]) for j in range(1000)] + [(key, [(T0_MS, 0.5)])]
        detectors.ingest(SampleBatch.from_series(series))
        held.append(detectors._forecast_pending_samples)
    assert max(held) < FORECAST_PENDING_MAX + 1001
    assert held[-1] < held[-2] or min(held) == 0
