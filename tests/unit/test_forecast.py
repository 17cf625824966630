"""Saturation forecasts: trend ETAs and their intervals, bound specs, early warnings without flapping."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.output.alerts import AlertTransition
from detector.wire.batch import SampleBatch
from detector.forecast import (
    DEFAULT_SPECS,
    ForecastConfig,
    ForecastEngine,
    ForecastSettings,
    ForecastSpecError,
    TrendBank,
    TrendForecaster,
    humanize,
    recognise,
)
from detector.forecast.spec import BoundSpec, specs_from
from detector.forecast.warning import FIRING, WarningBank

T0_MS = 1_700_000_000_000
SCRAPE_MS = 15_000

DEPTH = (("__name__", "pgmq_queue_depth"), ("queue_name", "orders"))
MAX_DEPTH = (("__name__", "pgmq_queue_max_depth"), ("queue_name", "orders"))
SATURATION = (("__name__", "worker_dispatch_channel_saturation"), ("worker_id", "w1"))
PERMITS = (("__name__", "worker_handler_semaphore_permits_available"), ("worker_id", "w1"))


def run(engine: ForecastEngine, series: dict, steps: int, scrape_ms: int = SCRAPE_MS, start: int = 0):
    """Feed ``series`` (labels -> f(step) -> value) one scrape per call; the events with their step."""
    table = list(series)
    out = []
    for k in range(start, start + steps):
        t = T0_MS + k * scrape_ms
        values = [float(series[labels](k)) for labels in table]
        out += [(k, e) for e in engine.ingest(table, range(len(table)), [t] * len(table), values)]
    return out


def cycles(events) -> tuple[int, int]:
    """(warnings fired, warnings resolved)."""
    fired = sum(1 for _, e in events if e.state == "firing")
    resolved = sum(1 for _, e in events if e.previous == "firing" and e.state == "inactive")
    return fired, resolved


# --------------------------------------------------------------------------- the trend forecaster


def test_linear_ramp_eta_is_exact():
    f = TrendForecaster(tau_s=600)
    for i in range(60):
        f.learn_one(15.0 * i, 1000 + 4.0 * i)  # +4 per 15 s
    # last value 1236 at t=885; 3000 is 1764 away at 4/15 per second
    eta, low, high = f.time_to_bound(3000)
    truth = 1764 * 15 / 4
    assert eta == pytest.approx(truth, rel=1e-9)
    assert low <= truth + 1e-6 and truth - 1e-6 <= high
    assert f.slope == pytest.approx(4 / 15) and f.level == pytest.approx(1236)


def test_irregular_timestamps_and_a_gap_shorter_than_tau():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.uniform(1, 40, 80))
    t[50:] += 200  # a 200 s hole
    f = TrendForecaster(tau_s=600)
    for ti in t:
        f.learn_one(ti, 5.0 + 0.25 * ti)
    eta, _, _ = f.time_to_bound(5.0 + 0.25 * (t[-1] + 1234))
    assert eta == pytest.approx(1234, rel=1e-9)


def test_a_long_gap_forgets_the_past_and_warms_up_again():
    f = TrendForecaster(tau_s=300, min_samples=8)
    for i in range(40):
        f.learn_one(15.0 * i, 10.0 * i)
    assert f.time_to_bound(1000) is not None
    f.learn_one(15.0 * 40 + 20 * 3600, 0.0)  # 20 hours later
    assert f.time_to_bound(1000) is None  # one effective sample: no estimate
    for i in range(1, 12):
        f.learn_one(15.0 * 40 + 20 * 3600 + 15 * i, -5.0 * i)  # now falling
    assert f.slope == pytest.approx(-1 / 3)
    assert f.time_to_bound(1000) is None and f.time_to_bound(-1000, "down") is not None


def test_flat_and_decreasing_series_have_no_eta():
    rng = np.random.default_rng(0)
    flat, falling = TrendForecaster(), TrendForecaster()
    for i in range(200):
        flat.learn_one(15.0 * i, 0.5)
        falling.learn_one(15.0 * i, 0.8 - 0.001 * i + rng.normal(0, 0.02))
    assert flat.time_to_bound(1.0) is None
    assert falling.time_to_bound(1.0) is None
    assert falling.time_to_bound(0.0, "down") is not None


def test_already_at_the_bound_is_zero():
    f = TrendForecaster()
    for i in range(30):
        f.learn_one(15.0 * i, 1.0 + 0.001 * i)
    assert f.time_to_bound(1.0) == (0.0, 0.0, 0.0)


def test_not_warmed_up_gives_no_estimate_and_an_open_forecast():
    f = TrendForecaster(min_samples=16)
    assert f.time_to_bound(1.0) is None
    for i in range(5):
        f.learn_one(15.0 * i, 0.1 * i)
    assert f.time_to_bound(1.0) is None
    mean, lower, upper = f.forecast(60)
    assert lower == -math.inf and upper == math.inf and math.isfinite(mean)


def test_duplicates_out_of_order_and_non_finite_samples_are_ignored():
    stale = np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0]
    clean, messy = TrendForecaster(), TrendForecaster()
    for i in range(40):
        clean.learn_one(15.0 * i, 3.0 * i)
        messy.learn_one(15.0 * i, 3.0 * i)
        messy.learn_one(15.0 * i, 999.0)  # a retry with the same timestamp
        messy.learn_one(15.0 * i - 7, -5.0)  # late
        messy.learn_one(15.0 * i + 1, stale)  # a staleness marker, then NaN and Inf
        messy.learn_one(15.0 * i + 2, math.nan)
        messy.learn_one(15.0 * i + 3, math.inf)
    assert messy.forecast(100) == clean.forecast(100)
    assert messy.time_to_bound(500) == clean.time_to_bound(500)


def _noisy_ramps(n: int, steps: int, seed: int, level: float = 0.8, tau: float = 600.0):
    """n noisy linear ramps with irregular scrapes; bank, rows, slopes, intercepts, last times, noise sd."""
    rng = np.random.default_rng(seed)
    bank = TrendBank(tau_s=tau, level=level)
    rows = bank.add(n)
    slope, x0, sd = rng.uniform(0.5, 2.0, n), rng.uniform(0, 100, n), rng.uniform(5, 40, n)
    t = np.zeros(n)
    for _ in range(steps):
        t = t + rng.uniform(5, 25, n)
        bank.learn_many(rows, t, x0 + slope * t + rng.normal(0, sd))
    return bank, rows, slope, x0, t, sd, rng


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_eta_interval_covers_the_true_crossing_at_its_nominal_rate(level):
    # 600 independent noisy ramps (one per seed-like row); the trend truly reaches the bound 900 s on
    bank, rows, slope, x0, t, _, _ = _noisy_ramps(600, 80, seed=11, level=level)
    bound = x0 + slope * (t + 900)
    eta, low, high = bank.time_to_bound_many(rows, bound, 1)
    # a chance trip of the adaptation just before the end can leave a row short of evidence
    known = ~np.isnan(eta)
    assert known.mean() >= 0.97
    eta, low, high = eta[known], low[known], high[known]
    covered = np.mean((low <= 900) & (900 <= high))
    assert level - 0.05 <= covered <= level + 0.05
    assert abs(np.median(eta) - 900) < 30  # unbiased point estimate
    assert np.all(low <= eta) and np.all(eta <= high)


def test_prediction_interval_covers_new_samples_and_widens_with_horizon_and_noise():
    bank, rows, slope, x0, t, sd, rng = _noisy_ramps(600, 80, seed=12, level=0.8)
    y = x0 + slope * (t + 300) + rng.normal(0, sd)
    known = bank.ready_many(rows)
    assert known.mean() >= 0.97
    rows, slope, x0, t, sd, y = rows[known], slope[known], x0[known], t[known], sd[known], y[known]
    mean, lower, upper = bank.forecast_many(rows, 300.0)
    assert 0.75 <= np.mean((lower <= y) & (y <= upper)) <= 0.85
    _, lo_far, up_far = bank.forecast_many(rows, 3000.0)
    assert np.all(up_far - lo_far > upper - lower)
    width = upper - lower
    noisy, quiet = sd > np.median(sd), sd <= np.median(sd)
    assert np.median(width[noisy]) > 1.5 * np.median(width[quiet])


def test_eta_interval_is_asymmetric_and_opens_when_the_slope_is_uncertain():
    rng = np.random.default_rng(5)
    f = TrendForecaster(tau_s=600)
    for i in range(60):
        f.learn_one(15.0 * i, 100 + 0.5 * i + rng.normal(0, 2))
    eta, low, high = f.time_to_bound(200)
    assert high - eta > eta - low > 0  # the far side is longer
    weak = TrendForecaster(tau_s=600)
    for i in range(60):
        weak.learn_one(15.0 * i, 100 + 0.02 * i + rng.normal(0, 5))
    found = weak.time_to_bound(110)
    assert found is None or found[2] == math.inf


# --------------------------------------------------------------------------- batch = per series


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(1, 50))
def test_the_batch_api_equals_the_per_series_api(seed, cut):
    rng = np.random.default_rng(seed)
    n, per = 7, 30
    rows = np.repeat(np.arange(n), per)
    t = np.tile(np.arange(per) * 15.0, n) + rng.uniform(0, 5, n * per)
    x = rng.normal(0, 1, n * per).cumsum()
    x[rng.random(n * per) < 0.05] = np.nan
    t[rng.random(n * per) < 0.05] -= 30  # some late samples
    order = rng.permutation(n * per)
    order = order[np.lexsort((np.argsort(order), rows[order]))]  # keep each row's own order, mix rows
    order = rng.permutation(order.reshape(n, per).T.ravel().reshape(-1, n)).ravel()  # interleave rows
    rows, t, x = rows[order], t[order], x[order]

    singles = [TrendForecaster(tau_s=300, min_samples=6) for _ in range(n)]
    for r, ti, xi in zip(rows, t, x):
        singles[r].learn_one(ti, xi)
    bank = TrendBank(tau_s=300, min_samples=6)
    ids = bank.add(n)
    for lo in range(0, n * per, cut):  # messages of `cut` samples, rows repeating inside
        bank.learn_many(ids[rows[lo:lo + cut]], t[lo:lo + cut], x[lo:lo + cut])

    mean, lower, upper = bank.forecast_many(ids, 120.0)
    eta, low, high = bank.time_to_bound_many(ids, 50.0, 1)
    for i, f in enumerate(singles):
        assert f.forecast(120.0) == (mean[i], lower[i], upper[i])
        got = f.time_to_bound(50.0)
        assert (got is None and math.isnan(eta[i])) or got == (eta[i], low[i], high[i])


def test_state_is_tiny():
    bank = TrendBank()
    bank.add(10_000)
    assert bank.nbytes_per_series == 88
    assert bank.nbytes <= 16_384 * 88  # columns, grown by doubling
    assert TrendForecaster().nbytes == 88
    assert WarningBank().nbytes_per_series <= 32
    # the dip gate's ten columns (depth, rise and approach tests) are 80 B of it; with the anomaly
    # detector's ~1.6 KB a bounded series stays under issue 11's 2 KB
    assert ForecastEngine().nbytes_per_series <= 288


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    "name, direction, bound, paired",
    [
        ("orchestration_command_channel_saturation", "up", 1.0, None),
        ("worker_completion_channel_saturation", "up", 1.0, None),
        ("worker_handler_semaphore_permits_available", "down", 0.0, None),
        ("pgmq_queue_depth", "up", None, "pgmq_queue_max_depth"),
    ],
)
def test_the_runbook_patterns_are_recognised(name, direction, bound, paired):
    labels = (("__name__", name), ("queue_name", "orders"))
    spec = recognise(labels)
    assert spec is not None and spec.direction == direction and spec.bound == bound
    found = spec.bound_labels(labels)
    assert (found is None) if paired is None else found == (("__name__", paired), ("queue_name", "orders"))


@pytest.mark.parametrize("name", ["pgmq_queue_max_depth", "api_requests_total", "mpsc_channel_size", "saturation"])
def test_other_series_are_not_forecast(name):
    assert recognise((("__name__", name),)) is None


def test_a_spec_file_with_user_specs_before_the_defaults(tmp_path):
    path = tmp_path / "forecasts.yml"
    path.write_text(
        """
settings:
  horizon: 10m
  tau: 5m
  warn_after: 4
forecasts:
  - selector: 'pgmq_queue_depth{queue_name="orders"}'
    bound: 5000
    horizon: 30m
  - selector: '{__name__=~"(.+)_in_use", pool!=""}'
    bound: {series: "$1_limit", labels: {kind: ""}}
"""
    )
    config = ForecastConfig.load(path)
    assert config.settings.horizon_s == 600 and config.settings.tau_s == 300 and config.settings.warn_after == 4
    assert config.specs[2:] == DEFAULT_SPECS
    orders = recognise(DEPTH, config.specs)
    assert orders.bound == 5000 and orders.horizon_s == 1800
    other = (("__name__", "pgmq_queue_depth"), ("queue_name", "billing"))
    assert recognise(other, config.specs).bound_name(other) == "pgmq_queue_max_depth"  # the default
    pool = (("__name__", "db_conns_in_use"), ("kind", "rw"), ("pool", "main"))
    assert recognise(pool, config.specs).bound_labels(pool) == (("__name__", "db_conns_limit"), ("pool", "main"))


def test_every_problem_in_a_spec_file_is_reported_at_once():
    with pytest.raises(ForecastSpecError) as caught:
        ForecastConfig.from_dict(
            {
                "settings": {"horizon": "soon", "colour": "red"},
                "forecasts": [
                    {"selector": "rate(x[5m])", "bound": 1},
                    {"selector": "y", "direction": "sideways"},
                    {"selector": "z", "bound": {"series": "$1_max"}},
                ],
            },
            source="f.yml",
        )
    problems = caught.value.problems
    assert len(problems) == 6, problems
    assert any("f.yml: settings: horizon" in p for p in problems)
    assert any("'colour'" in p for p in problems)
    assert any("forecasts[0]: selector" in p and "not a plain series selector" in p for p in problems)
    assert any("forecasts[1]: direction" in p for p in problems)
    assert any("forecasts[1]: bound: required" in p for p in problems)
    assert any("forecasts[2]: bound" in p and "no =~ matcher" in p for p in problems)


def test_specs_from_dicts_and_their_description():
    (spec,) = specs_from([{"selector": "disk_free_bytes", "bound": 0, "direction": "down"}])
    assert spec.describe() == '{__name__="disk_free_bytes"} down to 0'
    with pytest.raises(ValueError):
        BoundSpec(spec.selector, "up")  # neither a constant nor a pair


# --------------------------------------------------------------------------- early warnings


def ramp_to(bound: float, start: float, minutes: float, noise: float, seed: int, flat_steps: int = 240,
            clip: tuple[float, float] | None = None):
    """Flat at ``start`` for ``flat_steps`` scrapes, then linear to ``bound`` in ``minutes``, then past it."""
    rng = np.random.default_rng(seed)
    per_step = (bound - start) / (minutes * 4)

    def value(k: int) -> float:
        v = start + max(k - flat_steps, 0) * per_step + rng.normal(0, noise)
        return float(np.clip(v, *clip)) if clip else v

    return value, flat_steps + int(minutes * 4)


def test_paired_bound_depth_reaches_max_depth_with_the_alert_text():
    engine = ForecastEngine()
    depth, hit = ramp_to(10000, 2000, 30, 100, seed=1, clip=(0, 10000))
    events = run(engine, {DEPTH: lambda k: round(depth(k)), MAX_DEPTH: lambda k: 10000}, hit)
    fired = [(k, e) for k, e in events if e.state == "firing"]
    assert len(fired) == 1
    k, warning = fired[0]
    assert (hit - k) * 15 >= 5 * 60  # at least 5 minutes ahead
    assert re.fullmatch(
        r'pgmq_queue_depth\{queue_name="orders"\} reaches pgmq_queue_max_depth \(10000\) '
        r"in about \d+m \(\d+m-\d+m\)",
        warning.text,
    ), warning.text
    true_eta = (hit - k) * 15
    assert warning.eta_low_s * 0.8 <= true_eta <= warning.eta_high_s * 1.2
    assert warning.bound == 10000 and warning.bound_name == "pgmq_queue_max_depth"


def test_a_paired_series_not_yet_seen_means_no_evaluation_and_a_new_max_is_used():
    engine = ForecastEngine()
    assert run(engine, {DEPTH: lambda k: 100.0 * k}, 100) == []
    assert engine.estimate(DEPTH) is None
    run(engine, {DEPTH: lambda k: 100.0 * k, MAX_DEPTH: lambda k: 50_000}, 1, start=100)
    eta, _, _ = engine.estimate(DEPTH)
    assert eta == pytest.approx((50_000 - 10_000) / 100 * 15)


def test_constant_bound_saturation_warns_before_one():
    engine = ForecastEngine()
    # 30 minutes from 0.3 to 1: a warning needs 70% of the headroom used (min_used), reached 17 minutes in
    sat, hit = ramp_to(1.0, 0.3, 30, 0.02, seed=2, clip=(0, 1))
    events = run(engine, {SATURATION: sat}, hit)
    fired = [(k, e) for k, e in events if e.state == "firing"]
    assert len(fired) == 1 and (hit - fired[0][0]) * 15 >= 5 * 60
    assert fired[0][1].text.startswith('worker_dispatch_channel_saturation{worker_id="w1"} reaches 1 in about ')


def test_down_direction_permits_draining_to_zero():
    engine = ForecastEngine()
    permits, hit = ramp_to(0.0, 18, 25, 0.6, seed=3, clip=(0, 20))
    events = run(engine, {PERMITS: lambda k: round(permits(k))}, hit)
    fired = [(k, e) for k, e in events if e.state == "firing"]
    assert len(fired) == 1 and (hit - fired[0][0]) * 15 >= 5 * 60
    assert fired[0][1].text.startswith(
        'worker_handler_semaphore_permits_available{worker_id="w1"} drops to 0 in about ')


def climb_and_stop(stop: float, minutes: float, seed: int, start: float = 0.2, noise: float = 0.01):
    """Flat at ``start`` for an hour, then linear to ``stop`` in ``minutes``, then flat there."""
    rng = np.random.default_rng(seed)
    per_step = (stop - start) / (minutes * 4)
    return lambda k: float(np.clip(start + per_step * min(max(k - 240, 0), minutes * 4) + rng.normal(0, noise), 0, 1))


@pytest.mark.parametrize("seed", range(4))
def test_a_climb_that_stops_with_headroom_left_does_not_warn(seed):
    # 0.2 -> 0.62 in 10 minutes: the line points at 1 within 20 minutes all the way up, but the
    # level never supports it (70% of the headroom used: min_used); without that check it fires
    climb = climb_and_stop(0.62, 10, seed)
    assert [e for _, e in run(ForecastEngine(), {SATURATION: climb}, 240 + 4 * 60) if e.state == "firing"] == []
    ungated = ForecastEngine(ForecastConfig(ForecastSettings(min_used=0.0)))
    climb = climb_and_stop(0.62, 10, seed)
    assert [e.state for _, e in run(ungated, {SATURATION: climb}, 240 + 4 * 60)].count("firing") == 1


def test_headroom_used_counts_from_zero_up_and_from_the_peak_down():
    engine = ForecastEngine()
    run(engine, {SATURATION: lambda k: 0.5 + 0.001 * (k % 2), PERMITS: lambda k: 20.0 if k < 40 else 20.0 - (k - 40) * 0.1,
                 DEPTH: lambda k: 2500.0 + k % 3, MAX_DEPTH: lambda k: 5000.0}, 160)
    assert engine.used(SATURATION) == pytest.approx(0.5, abs=0.002)
    assert engine.used(DEPTH) == pytest.approx(0.5, abs=0.002)
    assert engine.used(PERMITS) == pytest.approx((20 - 8.1) / 20, abs=0.01)  # 20 free at most, 8.1 now
    assert engine.used((("__name__", "unknown_saturation"),)) is None


@pytest.mark.parametrize("seed", range(8))
def test_no_flapping_on_a_noisy_ramp(seed):
    engine = ForecastEngine()
    sat, hit = ramp_to(1.0, 0.2, 40, 0.04, seed=seed, clip=(0, 1))
    events = run(engine, {SATURATION: sat}, hit + 120)  # and 30 minutes saturated
    fired, resolved = cycles(events)
    assert fired == 1 and resolved <= 1


@pytest.mark.parametrize("seed", range(3))
def test_flat_and_decreasing_series_never_warn(seed):
    rng = np.random.default_rng(seed)
    engine = ForecastEngine()
    series = {
        SATURATION: lambda k: float(np.clip(0.7 + rng.normal(0, 0.05), 0, 1)),  # flat, high, noisy
        DEPTH: lambda k: max(9000 - 5 * k + rng.normal(0, 200), 0),  # draining
        MAX_DEPTH: lambda k: 10000,
        PERMITS: lambda k: float(min(round(2 + k / 200 + rng.normal(0, 0.5)), 20)),  # recovering
    }
    assert [e for _, e in run(engine, series, 4 * 60 * 6) if e.state == "firing"] == []  # 6 hours


def test_a_ramp_that_turns_resolves_once():
    rng = np.random.default_rng(4)

    def turning(k: int) -> float:
        peak = 240 + 40 * 4  # flat 1 h, up for 40 min, then down
        v = 0.2 + 0.017 * min(max(k - 240, 0), peak - 240) / 4 - 0.02 * max(k - peak, 0) / 4
        return float(np.clip(v + rng.normal(0, 0.02), 0, 1))

    engine = ForecastEngine()
    events = run(engine, {SATURATION: turning}, 240 + 160 + 240)
    assert cycles(events) == (1, 1)
    (k_fire, fire), = [(k, e) for k, e in events if e.state == "firing"]
    (k_done, done), = [(k, e) for k, e in events if e.previous == "firing"]
    assert k_fire < 400 < k_done <= 400 + 40  # resolves within 10 minutes of the turn
    assert "no longer expected to reach 1 within 20m" in done.text
    alert = done.to_alert()
    assert alert.resolved_at == done.t_ms and alert.fired_at == fire.t_ms


def test_warnings_do_not_depend_on_how_the_stream_is_batched_and_are_deterministic():
    def stream():
        sat, _ = ramp_to(1.0, 0.3, 20, 0.03, seed=9, clip=(0, 1))
        depth, _ = ramp_to(10000, 1000, 30, 150, seed=10)
        rows = []
        for k in range(500):
            t = T0_MS + k * SCRAPE_MS + (k * 37) % 900  # jittered scrapes
            rows += [(SATURATION, t, sat(k)), (DEPTH, t, depth(k)), (MAX_DEPTH, t, 10000.0)]
        return rows

    def replay(samples, per_message):
        engine, out = ForecastEngine(), []
        for lo in range(0, len(samples), per_message):
            chunk = samples[lo:lo + per_message]
            table = sorted({labels for labels, _, _ in chunk})
            batch = SampleBatch.from_series(
                (labels, [(t, v) for lab, t, v in chunk if lab == labels]) for labels in table)
            out += [(e.labels, e.state, e.t_ms, e.eta_s, e.eta_low_s, e.eta_high_s, e.text)
                    for e in engine.ingest_batch(SampleBatch.decode(batch.encode()))]
        return out

    samples = stream()
    one_by_one = replay(samples, 1)
    assert len(one_by_one) >= 4
    assert sorted(replay(samples, 3 * 40), key=lambda e: (e[2], e[0])) == sorted(one_by_one, key=lambda e: (e[2], e[0]))
    assert replay(samples, 1000) == replay(samples, 1000)


def test_the_early_warning_is_an_alert_transition_with_its_own_identity():
    engine = ForecastEngine()
    a = (("__name__", "worker_dispatch_channel_saturation"), ("worker_id", "w1"))
    b = (("__name__", "worker_completion_channel_saturation"), ("worker_id", "w1"))
    events = [e for _, e in run(engine, {a: lambda k: 0.2 + 0.004 * k, b: lambda k: 0.2 + 0.004 * k}, 180)]
    firing = [e.to_alert() for e in events if e.state == "firing"]
    assert len(firing) == 2 and all(isinstance(x, AlertTransition) for x in firing)
    assert firing[0].fingerprint != firing[1].fingerprint
    record = firing[0].to_dict()
    assert record["labels"]["alertname"] == "SaturationForecast" and record["labels"]["severity"] == "warning"
    assert float(record["annotations"]["eta_seconds"]) == pytest.approx(float(record["value"]), abs=1)
    assert record["annotations"]["summary"].startswith("worker_")


def test_the_state_machine_hysteresis():
    bank = WarningBank(horizon_s=600, warn_after=3, resolve_after=2, hysteresis=2, eval_interval_s=15)
    rows = bank.add(1)
    etas = [500, 500, 500, 1100, 700, 1100, 1300, 1300, 1300]  # fires, wobbles between H and 2H, resolves
    states = []
    for k, eta in enumerate(etas):
        bank.step(rows, np.array([15.0 * k]), np.array([float(eta)]))
        states.append(int(bank.state[0]))
    assert states == [1, 1, 2, 2, 2, 2, 2, 0, 0]
    assert bank.due(rows, np.array([15.0 * 8 + 5])).tolist() == [False]  # same 15 s slot
    assert bank.due(rows, np.array([15.0 * 9])).tolist() == [True]
    assert FIRING == 2


@pytest.mark.parametrize(
    ("eta", "share", "fires_at"),
    [(600.0, 0.33, 12), (240.0, 0.33, 6), (90.0, 0.33, 6), (240.0, 0.5, 8), (240.0, 0.0, 12), (60.0, 0.33, 6)],
)
def test_a_near_bound_shortens_the_confirmation_to_a_share_of_the_time_left(eta, share, fires_at):
    # 12 evaluations normally; with the bound 4 minutes away and share 0.33, ceil(0.33 * 240 / 15) = 6
    bank = WarningBank(horizon_s=1200, warn_after=12, eval_interval_s=15, confirm_share=share, warn_after_min=6)
    rows = bank.add(1)
    states = []
    for k in range(14):
        bank.step(rows, np.array([15.0 * k]), np.array([eta]))
        states.append(int(bank.state[0]))
    assert states.index(FIRING) + 1 == fires_at


@pytest.mark.parametrize(
    "seconds, mode, text",
    [(7.4, "round", "7s"), (44, "round", "45s"), (240, "round", "4m"), (179, "floor", "2m"), (301, "ceil", "6m"),
     (3600, "round", "1h"), (5400, "round", "1h30m"), (86400 * 2 + 3600, "round", "2d1h"), (math.inf, "ceil", "∞")],
)
def test_humanized_durations(seconds, mode, text):
    assert humanize(seconds, mode) == text


def test_settings_refuse_nonsense_with_every_problem():
    with pytest.raises(ForecastSpecError) as caught:
        ForecastSettings(tau_s=0, level=1.5, warn_after=0, min_used=1.0)
    assert len(caught.value.problems) == 4
    assert ForecastSettings.from_dict({"min_used": "0.5", "restart_on_change": "false"}) == ForecastSettings(
        min_used=0.5, restart_on_change=False)
