"""The default anomaly detector: constant series, warm-up, range, score-before-learn,
counters, seasonality, incidents, per-time calibration, heavy tails, batch = per sample,
determinism, state size, score-csv."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
from click.testing import CliRunner

from detector.anomaly import (
    DEFAULT_MODEL,
    MODELS,
    AnomalyDetector,
    AnomalyScorer,
    ColumnarState,
    Params,
    counter_rate,
    is_counter,
    make_model,
)
from detector.anomaly.models import CLASSIC_PARAMS
from detector.wire.batch import SampleBatch

STEP_S = 300.0  # five-minute samples
DAY = int(86_400 / STEP_S)


def score_series(values, step_s: float = STEP_S, model: str = DEFAULT_MODEL, params: Params | None = None) -> np.ndarray:
    """Scores of one gauge series, streamed through the scorer the pipeline uses
    (or, with ``params``, through a default-model state with those parameters)."""
    values = np.asarray(values, dtype=float)
    stamps = np.arange(len(values)) * step_s
    if params is not None:
        return ColumnarState(params, capacity=1).run(np.zeros(len(values), dtype=int), stamps, values)
    scorer = AnomalyScorer(model, counter=lambda key: False)
    row = scorer.rows_for([b"s"])[0]
    return scorer.score(np.full(len(values), row), stamps, values)


def noise(n: int, seed: int = 1, loc: float = 10.0, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, n)


def test_constant_series_scores_zero_until_it_changes():
    values = np.full(1500, 42.0)
    values[1200] = 43.0
    scores = score_series(values)
    assert np.all(scores[:1200] == 0.0)
    assert scores[1200] > 0.5
    assert np.all(np.isfinite(scores))


def test_warm_up_scores_zero_but_every_row_has_a_score():
    warmup = Params().warmup
    values = noise(400)
    values[20] = 1e6  # wild while warming: still 0.0
    scores = score_series(values)
    assert len(scores) == len(values)
    assert np.all(scores[:warmup] == 0.0)
    assert scores[warmup:].max() > 0.0


def test_scores_stay_in_unit_interval_whatever_the_input():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.standard_cauchy(1500) * 1e6, np.full(200, 0.0), [np.nan, np.inf, -np.inf, 1e300, -1e300]])
    scores = score_series(values)
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert scores[-5:-2].tolist() == [0.0, 0.0, 0.0]  # NaN and infinities: 0.0, nothing learned


def test_a_point_is_judged_before_it_is_learned():
    det = AnomalyDetector()
    values = noise(300)
    for i, v in enumerate(values):
        det.learn_one({"value": float(v), "timestamp": i * STEP_S})
    before = copy.deepcopy(det.state.scalars), copy.deepcopy(det.state.profiles)
    x = {"value": 30.0, "timestamp": 300 * STEP_S}
    first = det.score_one(x)
    assert np.array_equal(det.state.scalars, before[0]) and np.array_equal(det.state.profiles, before[1])
    assert det.score_one(x) == first  # scoring twice changes nothing
    det.learn_one(x)
    assert not np.array_equal(det.state.scalars, before[0])
    # the streaming scorer gives the sample the score of the model that had not seen it
    stream = score_series(np.r_[values, 30.0])
    assert stream[-1] == pytest.approx(first, rel=1e-12, abs=1e-15)


def test_counters_are_recognised_and_scored_on_their_rate():
    assert is_counter("http_requests_total") and is_counter("rpc_duration_seconds_bucket")
    assert is_counter("rpc_duration_seconds_count") and is_counter("rpc_duration_seconds_sum")
    assert not is_counter("pgmq_queue_depth") and not is_counter("channel_saturation")
    assert is_counter("odd_name", metric_type="COUNTER") and is_counter("odd_name", metric_type=1)
    assert not is_counter("jobs_total", metric_type="gauge")
    assert not is_counter("rpc_duration_seconds", metric_type="summary")  # quantile series
    rates = counter_rate([0, 10, 20, 30, 40, 50], [0.0, 10.0, 20.0, 4.0, np.nan, 24.0])
    assert math.isnan(rates[0]) and math.isnan(rates[4])
    assert rates[[1, 2, 3, 5]].tolist() == [1.0, 1.0, 0.4, 1.0]  # reset at 30s, NaN skipped

    # a counter growing at a steady rate is as dull as a constant gauge, resets included
    n = 1200
    raw = np.arange(n) * 15.0
    raw[800:] = (np.arange(800, n) - 799) * 15.0  # process restart: counting again from 0
    scorer = AnomalyScorer()
    batch = SampleBatch.from_series([((("__name__", "jobs_total"),), [(i * 15_000, v) for i, v in enumerate(raw)])])
    scores = scorer.score_batch(batch)
    assert scorer.is_counter_row(scorer.rows_for(batch.series_keys)).tolist() == [True]
    assert scores.max() == 0.0
    # the same numbers taken as a gauge are a ramp with a cliff: the cliff is news
    assert score_series(raw, 15.0)[800] > 0.5


def daily(days: int, seed: int = 3) -> np.ndarray:
    i = np.arange(days * DAY)
    return 50.0 + 30.0 * np.sin(2 * np.pi * i / DAY) + np.random.default_rng(seed).normal(0, 1.0, len(i))


def test_seasonality_daily_peaks_are_normal_a_spike_at_a_peak_phase_is_not():
    values = daily(7)
    trough = 6 * DAY + 3 * DAY // 4  # the daily low on the last day ...
    values[trough] += 45.0  # ... raised to a height that is ordinary at the peak phase
    scores = score_series(values)
    assert scores[trough] > 0.5
    peaks = [d * DAY + DAY // 4 + k for d in range(3, 7) for k in range(-6, 7)]
    assert max(scores[peaks]) < 0.2
    assert np.quantile(scores[3 * DAY :], 0.99) < 0.2


def test_an_incident_does_not_become_the_baseline():
    values = noise(4000, seed=5)
    values[2000:2600] = noise(600, seed=6, loc=40.0, scale=8.0)  # two days of a broken, noisy plateau
    scores = score_series(values)
    assert scores[2000] > 0.5  # the onset is news
    assert np.quantile(scores[2700:3900], 0.99) < 0.25  # the original behaviour is normal again after it


def test_a_burst_of_outliers_does_not_inflate_the_scales():
    from detector.anomaly.core import STEP

    values = noise(2400, seed=5)
    values[2000:2400:20] += 50.0  # twenty huge outliers
    steps = {}
    for weight in (Params().protect_weight, 1.0):
        state = ColumnarState(Params(protect_weight=weight), capacity=1)
        state.run(np.zeros(2000, int), np.arange(2000) * STEP_S, values[:2000])
        before = state.scalars[0, STEP]
        state.run(np.zeros(400, int), np.arange(2000, 2400) * STEP_S, values[2000:])
        steps[weight] = state.scalars[0, STEP] / before
    assert steps[Params().protect_weight] < 1.5 < steps[1.0]


def test_tail_probabilities_are_per_unit_of_time_not_per_sample():
    from detector.anomaly.core import INTERVAL

    values = noise(1500, seed=9)
    values[1200] += 6.0
    stamps = np.arange(len(values)) * 60.0  # one-minute samples: five per reference interval
    rows = np.zeros(len(values), dtype=int)
    # without hold and protection the state does not depend on the surprise, so the
    # per-time score is exactly the per-sample one less log10(5) decades
    decoupled = dict(hold=0, protect=1e9)
    per_time = ColumnarState(Params(**decoupled), capacity=1).run(rows, stamps, values)
    per_sample = ColumnarState(Params(interval_ref=0.0, **decoupled), capacity=1).run(rows, stamps, values)
    both = (per_time > 0) & (per_time < 1) & (per_sample > 0) & (per_sample < 1)
    assert both.sum() > 100
    shift = np.log10(60.0 / Params().interval_ref) / Params().decades
    np.testing.assert_allclose(per_time[both] - per_sample[both], shift, atol=1e-12)
    # a 5-minute series is judged as before; a faster one needs more to alarm
    five_min = np.arange(len(values)) * 300.0
    np.testing.assert_array_equal(
        ColumnarState(Params(**decoupled), capacity=1).run(rows, five_min, values),
        ColumnarState(Params(interval_ref=0.0, **decoupled), capacity=1).run(rows, five_min, values),
    )
    # the sample interval is learned from the stream, and one long outage barely moves it
    gap = stamps.copy()
    gap[1000:] += 86_400.0
    state = ColumnarState(Params(), capacity=1)
    state.run(rows, gap, values)
    assert state.scalars[0, INTERVAL] == pytest.approx(60.0, rel=0.05)


def test_a_heavy_tailed_history_makes_routine_bursts_less_surprising_not_invisible():
    rng = np.random.default_rng(3)
    heavy = 10.0 + rng.standard_t(2.5, 6000)  # bursty: large excursions are routine here
    light = rng.normal(10.0, 1.0, 6000)
    threshold = 0.3
    pareto, exponential = score_series(heavy), score_series(heavy, params=Params(shape_max=0.0))
    assert np.sum(pareto[1000:] >= threshold) < np.sum(exponential[1000:] >= threshold)
    assert pareto[1000:].max() < exponential[1000:].max()
    # far beyond anything in its history is still an anomaly
    assert score_series(np.r_[heavy, 50.0])[-1] > 0.5
    # a light-tailed series is judged (almost) as with exponential tails
    np.testing.assert_allclose(score_series(light), score_series(light, params=Params(shape_max=0.0)), atol=0.02)


def test_a_frozen_sensor_alarms_within_an_hour_with_the_stuck_test_the_other_tests_see_it_late():
    rng = np.random.default_rng(21)
    values = 50.0 + np.cumsum(rng.normal(0, 0.3, 3000)) * 0.1 + rng.normal(0, 1.0, 3000)
    freeze = 2500
    values[freeze:freeze + 60] = values[freeze]  # the exporter keeps sending its last value for 5 hours
    stuck = score_series(values, params=dataclasses.replace(CLASSIC_PARAMS, stuck=True))
    without = score_series(values, params=CLASSIC_PARAMS)
    first = freeze + int(np.argmax(stuck[freeze:] >= 0.3))
    assert stuck[freeze:].max() >= 0.3 and first - freeze <= 12  # within an hour of 5-minute samples
    assert without[freeze:first + 1].max() < 0.3  # the spike, shift and volatility tests had not seen it yet
    np.testing.assert_array_equal(stuck[:freeze], without[:freeze])  # before the freeze it is silent
    assert score_series(values, model="machine").tolist() == stuck.tolist()
    # the default has the stuck test (and declustered tails): it alarms within the hour too
    default = score_series(values)
    assert default[freeze:].max() >= 0.3 and int(np.argmax(default[freeze:] >= 0.3)) <= 12


def test_a_series_that_repeats_routinely_learns_its_runs():
    rng = np.random.default_rng(22)
    ar = np.zeros(6000)
    for i in range(1, len(ar)):
        ar[i] = 0.95 * ar[i - 1] + rng.normal(0, 0.19)
    values = np.round((45.0 + ar) * 2) / 2  # a temperature in 0.5 degree steps: runs of repeats are routine
    assert np.mean(values[1:] == values[:-1]) > 0.5
    stuck = score_series(values, params=dataclasses.replace(CLASSIC_PARAMS, stuck=True))
    without = score_series(values, params=CLASSIC_PARAMS)
    assert np.sum(stuck[1000:] >= 0.3) <= np.sum(without[1000:] >= 0.3) + 2


def _quantized_sensor_then_frozen() -> tuple[np.ndarray, np.ndarray, int]:
    """A temperature in 0.5 degree steps (runs of repeats are routine), frozen for its last 120 samples
    (10 hours): the values, their stamps and where the freeze starts."""
    rng = np.random.default_rng(22)
    ar = np.zeros(5120)
    for i in range(1, len(ar)):
        ar[i] = 0.95 * ar[i - 1] + rng.normal(0, 0.19)
    values = np.round((45.0 + ar) * 2) / 2
    freeze = 5000
    values[freeze:] = values[freeze]
    return values, np.arange(len(values)) * STEP_S, freeze


def test_declustered_a_long_frozen_run_teaches_its_mean_excess_once_after_it_not_while_it_lasts():
    from detector.anomaly.core import DEV, EXCESS, EXCESS2, MEAN, N_CAL, N_FIXED, RATE, RUN, STUCK

    values, stamps, freeze = _quantized_sensor_then_frozen()
    c = N_FIXED + STUCK * N_CAL  # the stuck test's calibration fields
    one = np.zeros(1, dtype=np.intp)
    scores, fields, excesses = {}, {}, {}
    for r in (0, 1):
        params = dataclasses.replace(CLASSIC_PARAMS, stuck=True, decluster=r)
        state = ColumnarState(params, capacity=1)
        scores[r] = state.run(np.zeros(freeze, dtype=np.intp), stamps[:freeze], values[:freeze])
        before = state.scalars[0, c:c + N_CAL].copy()
        # the frozen run one sample at a time, noting each exceedance's excess over the tail's start
        excesses[r] = []
        for i in range(freeze, len(values)):
            start = state.scalars[0, c + MEAN] + params.tail_k * (state.scalars[0, c + DEV] + 1e-9)
            scores[r] = np.r_[scores[r], state.run(one, stamps[i:i + 1], values[i:i + 1])]
            if state.scalars[0, RUN] > start:
                excesses[r].append(state.scalars[0, RUN] - start)
        frozen = state.scalars[0, c:c + N_CAL].copy()
        state.run(one, stamps[-1:] + STEP_S, values[-1:] + 0.5)  # the run ends
        fields[r] = (before, frozen, state.scalars[0, c:c + N_CAL].copy())
    during = slice(freeze, None)
    # every sample of the run taught the plain tail, which widened as the run went on, so it never alarmed;
    # declustered, the run is judged against the excess moments learned before it and alarms within a few hours
    assert scores[0][during].max() < 0.3 <= scores[1][during].max()
    assert int(np.argmax(scores[1][during] >= 0.3)) <= 36
    assert fields[0][1][EXCESS] > 3 * fields[0][0][EXCESS]
    before, frozen, after = fields[1]
    assert frozen[EXCESS] == before[EXCESS] and frozen[EXCESS2] == before[EXCESS2]
    # once it has ended it teaches the mean of its excesses and of their squares, with one sample's weight
    # (decluster_weight 0), not its peak
    run = np.array(excesses[1])
    assert len(run) > 100 and run.max() > 1.5 * run.mean()
    a = Params().tail_alpha  # the per-sample weight of a series this old
    assert after[EXCESS] == pytest.approx(before[EXCESS] + a * (run.mean() - before[EXCESS]), rel=1e-9)
    assert after[EXCESS2] == pytest.approx(before[EXCESS2] + a * (np.mean(run**2) - before[EXCESS2]), rel=1e-9)
    # the exceedance rate is not declustered: it counts every exceedance, as without declustering
    assert excesses[1] == excesses[0]
    assert [f[RATE] for f in fields[1]] == [f[RATE] for f in fields[0]]
    assert fields[1][2][RATE] > 3 * fields[1][0][RATE]


def test_length_weighted_clusters_teach_routine_runs_like_many_samples_and_a_long_run_at_most_the_cap():
    from detector.anomaly.core import EXCESS, N_CAL, N_FIXED, STUCK

    values, stamps, freeze = _quantized_sensor_then_frozen()
    tail = N_FIXED + STUCK * N_CAL + EXCESS
    one = np.zeros(1, dtype=np.intp)
    scores, excess = {}, {}
    for w in (0, 10, 1000):
        state = ColumnarState(dataclasses.replace(CLASSIC_PARAMS, stuck=True, decluster=1, decluster_weight=w), capacity=1)
        state.run(np.zeros(freeze, dtype=np.intp), stamps[:freeze], values[:freeze])
        before = state.scalars[0, tail]
        scores[w] = state.run(np.zeros(120, dtype=np.intp), stamps[freeze:], values[freeze:])
        frozen = state.scalars[0, tail]
        state.run(one, stamps[-1:] + STEP_S, values[-1:] + 0.5)  # the run ends
        excess[w] = (before, frozen, state.scalars[0, tail])
    # the routine runs, each taught with its length's weight, widen the run tail more than one sample each
    assert excess[10][0] > 1.5 * excess[0][0]
    # the frozen run still teaches nothing while it lasts, so it still alarms within a few hours
    assert excess[10][1] == excess[10][0] and int(np.argmax(scores[10] >= 0.3)) <= 36
    # once it ends it teaches its mean excess as ten samples would: more than as one, far less than as all 120
    assert excess[0][2] - excess[0][0] < excess[10][2] - excess[10][0] < 0.5 * (excess[1000][2] - excess[1000][0])


def test_the_stuck_test_leaves_a_series_that_never_repeats_as_it_was():
    # it can only fire on a repeat, so the union bound charges it nothing on other samples
    values = np.r_[noise(2000, seed=23), noise(200, seed=24, loc=16.0)]
    assert len(np.unique(values)) == len(values)
    np.testing.assert_array_equal(score_series(values, params=dataclasses.replace(CLASSIC_PARAMS, stuck=True)),
                                  score_series(values, params=CLASSIC_PARAMS))


def test_batch_of_many_series_equals_one_detector_per_series():
    rng = np.random.default_rng(11)
    n_series, per_series = 5, 400
    series = [rng.normal(rng.uniform(-50, 50), rng.uniform(0.1, 10), per_series) for _ in range(n_series)]
    series[2][:] = 3.0  # one constant
    series[3][250] = 1e4  # one spike
    # interleave the samples of all series in a random order that keeps each series' order
    owner = rng.permutation(np.repeat(np.arange(n_series), per_series))
    pos = np.zeros(n_series, dtype=int)
    rows, stamps, vals = [], [], []
    for s in owner:
        rows.append(s)
        stamps.append(pos[s] * 60.0)
        vals.append(series[s][pos[s]])
        pos[s] += 1
    state = ColumnarState(Params(), capacity=n_series)
    batch_scores = np.empty(len(rows))
    for a in range(0, len(rows), 257):  # several messages, several samples per series each
        sl = slice(a, a + 257)
        batch_scores[sl] = state.run(np.array(rows[sl]), np.array(stamps[sl]), np.array(vals[sl]))
    rows = np.array(rows)
    for s in range(n_series):
        det = AnomalyDetector()
        single = []
        for i, v in enumerate(series[s]):
            x = {"value": float(v), "timestamp": i * 60.0}
            single.append(det.score_one(x))
            det.learn_one(x)
        np.testing.assert_allclose(batch_scores[rows == s], single, rtol=1e-12, atol=1e-15)
    assert batch_scores[rows == 3].max() > 0.5


def test_same_input_same_scores():
    values = np.r_[daily(3), noise(300) + 60]
    assert score_series(values).tolist() == score_series(values).tolist()


def test_state_is_small():
    state = ColumnarState(Params(), capacity=1000)
    measured = (state.scalars.nbytes + state.profiles.nbytes + state.visits.nbytes) / 1000
    assert measured == state.bytes_per_series <= 4096
    assert AnomalyScorer().bytes_per_series <= 4096


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_catalog_model_scores_a_short_series(name):
    values = np.r_[noise(150), 40.0, noise(20)]
    scores = score_series(values, model=name)
    assert len(scores) == len(values)
    assert np.all((scores >= 0.0) & (scores <= 1.0))


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="default"):
        make_model("nope")


def test_retired_series_start_again_from_nothing():
    scorer = AnomalyScorer(counter=lambda key: False)
    rows = scorer.rows_for([b"a", b"b"])
    scorer.score(np.repeat(rows, 200), np.tile(np.arange(200) * 60.0, 2), np.r_[noise(200), noise(200, 2)])
    scorer.retire([b"a"])
    again = scorer.rows_for([b"c"])
    assert again[0] == rows[0] and len(scorer) == 2
    assert scorer.model.scalars[again[0]].sum() == 0.0


def test_score_csv_writes_one_full_precision_row_per_input_row(tmp_path):
    from pipelines.score_csv_cli import score_csv

    src = tmp_path / "in.csv"
    values = np.r_[noise(400), 30.0, noise(50)]
    src.write_text("timestamp,value\n" + "".join(
        f"2024-01-01 {i // 60 % 24:02d}:{i % 60:02d}:00,{v!r}\n" for i, v in enumerate(values.tolist())))
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(score_csv, [str(src), str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "timestamp,value,anomaly_score" and len(lines) == len(values) + 1
    scores = [s for s in (line.rsplit(",", 1)[1] for line in lines[1:])]
    assert all(float(s).__repr__() == s for s in scores)  # repr precision, never rounded
    assert float(scores[400]) > 0.5
    assert [float(s) for s in scores] == score_series(values, 60.0).tolist()


def test_score_csv_says_what_is_wrong_with_a_bad_row(tmp_path):
    from pipelines.score_csv_cli import score_csv

    src = tmp_path / "in.csv"
    src.write_text("timestamp,value\n2024-01-01 00:00:00,1.0\n2024-01-01 00:01:00,abc\n")
    result = CliRunner().invoke(score_csv, [str(src), str(tmp_path / "out.csv")])
    assert result.exit_code != 0 and "in.csv:3" in result.output and "'abc'" in result.output


def test_a_new_series_listed_twice_in_one_batch_gets_one_row():
    """A coalesced batch lists a series once per request it came in; a series first seen there must
    not be split over two rows (its history halved, a row leaked), so the scores equal those of the
    same samples in one batch per request."""
    rng = np.random.default_rng(3)
    key = (("__name__", "x"), ("job", "api"))
    parts = [SampleBatch.from_series([(key, [(15_000 * (4 * m + k), float(rng.normal(10, 1)) + (80.0 if m == 30 else 0.0))
                                             for k in range(4)])]) for m in range(40)]
    apart, together = AnomalyScorer(), AnomalyScorer()
    one_by_one = np.concatenate([apart.score_batch(part) for part in parts])
    merged = np.concatenate([together.score_batch(SampleBatch.concat(parts[i:i + 8])) for i in range(0, 40, 8)])
    assert len(together.rows) == 1 and together.rows_for(parts[0].series_keys).tolist() == [0]
    assert np.array_equal(merged, one_by_one) and one_by_one.max() > 0.5
