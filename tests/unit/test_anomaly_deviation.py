"""``headroom_anomaly_deviation``: each scored sample's signed relative deviation from the level the detector
expected it at, so a rule can ask for a direction and a minimum deviation, not only a score."""

from __future__ import annotations

import json

import numpy as np

from detector.anomaly import AnomalyScorer, CatalogScorer, ColumnarState, ModelCatalog, Params
from detector.labels import canonical_bytes, labels_from_canonical
from detector.partition import DEFAULT_SCORE_THRESHOLD, DEVIATION_METRIC, PartitionDetectors, score_series_key
from detector.rules import load_rule_files
from detector.store import STALE_NAN_BITS, is_stale
from detector.wire.batch import SampleBatch

STEP_MS = 60_000
UP = (("__name__", "latency_seconds"), ("job", "api"), ("path", "/up"))
DOWN = (("__name__", "latency_seconds"), ("job", "api"), ("path", "/down"))
FLAT = (("__name__", "latency_seconds"), ("job", "api"), ("path", "/flat"))
RULES = f"""
groups:
  - name: anomalies with a direction
    interval: 1m
    rules:
      - alert: LatencyAnomalouslyHigh
        expr: headroom_anomaly_score > {DEFAULT_SCORE_THRESHOLD} and headroom_anomaly_deviation > 0.2
"""


def level(n: int, shift_at: int, factor: float, seed: int) -> np.ndarray:
    """A noisy level of 10 that moves to ``10 * factor`` at sample ``shift_at``."""
    x = 10.0 + np.random.default_rng(seed).normal(0.0, 0.2, n)
    x[shift_at:] *= factor
    return x


def batches(series: dict, n: int):
    """One batch per minute holding one sample of each series."""
    for i in range(n):
        yield SampleBatch.from_series([(labels, [(i * STEP_MS, float(x[i]))]) for labels, x in series.items()])


def test_the_deviation_is_relative_to_the_expected_level_signed_and_written_for_every_sample():
    state = ColumnarState(Params(), capacity=1)
    x = level(400, 300, 1.5, seed=1)
    x[350] = np.nan
    deviation = np.full(len(x), -7.0)
    state.run(np.zeros(len(x), dtype=np.intp), np.arange(len(x)) * 60.0, x, deviation)
    assert deviation[0] == 0.0  # a series' first sample is its own expectation
    assert np.abs(deviation[100:300]).max() < 0.1  # around its level: 0.2 / 10 noise
    assert 0.4 < deviation[300] < 0.6  # 15 against an expected 10
    assert np.isnan(deviation[350]) and not (deviation == -7.0).any()
    down = np.full(400, -7.0)
    ColumnarState(Params(), capacity=1).run(np.zeros(400, dtype=np.intp), np.arange(400) * 60.0,
                                            level(400, 300, 0.5, seed=1), down)
    assert -0.6 < down[300] < -0.4


def test_an_expected_zero_gives_an_infinite_deviation_and_staying_at_zero_none():
    x = np.r_[np.zeros(200), 3.0, 0.0, -2.0]
    deviation = np.empty(len(x))
    ColumnarState(Params(), capacity=1).run(np.zeros(len(x), dtype=np.intp), np.arange(len(x)) * 60.0, x, deviation)
    assert (deviation[:200] == 0.0).all()
    assert deviation[200] == np.inf  # off an expected 0 exactly
    assert deviation[202] < -100  # the 3.0 taught the level a little: far below an expectation near 0


def test_routed_series_get_their_own_models_deviation_and_a_river_model_none():
    catalog = ModelCatalog.from_dict({"models": [{"selector": '{path="/down"}', "model": "river-gaussian"}]})
    series = {UP: level(300, 200, 1.5, seed=2), DOWN: level(300, 200, 0.5, seed=3)}
    batch = SampleBatch.from_series([(k, [(i * STEP_MS, float(v)) for i, v in enumerate(x)]) for k, x in series.items()])
    routed = np.empty(len(batch))
    scores = CatalogScorer(catalog).score_batch(batch, routed)
    alone = np.empty(300)
    up_batch = SampleBatch.from_series([(UP, [(i * STEP_MS, float(v)) for i, v in enumerate(series[UP])])])
    np.testing.assert_array_equal(scores[batch.series_index == 0], AnomalyScorer().score_batch(up_batch, alone))
    np.testing.assert_array_equal(routed[batch.series_index == 0], alone)
    assert np.isnan(routed[batch.series_index == 1]).all()


def test_a_rule_alerts_only_on_the_direction_it_asks_for(tmp_path):
    path = tmp_path / "direction.yml"
    path.write_text(RULES)
    det = PartitionDetectors(load_rule_files([path]), forecasts=False)
    n, shift = 400, 300
    series = {UP: level(n, shift, 1.5, seed=4), DOWN: level(n, shift, 0.5, seed=5), FLAT: level(n, n, 1.0, seed=6)}
    fired, high = set(), {}
    for batch in batches(series, n):
        out = det.ingest(batch)
        fired |= {dict(t.labels)["path"] for t in out.transitions if t.state == "firing"}
        for e in out.scores:
            high.setdefault(dict(e.labels)["path"], []).append(json.loads(json.dumps(e.to_dict(), allow_nan=False)))
    assert {"/up", "/down"} <= set(high)  # both moves are anomalous by their score alone
    assert fired == {"/up"}  # only the one above its expected level by 20% or more alerts
    # the scores topic's events carry the deviation too: at the move, +50% and -50%
    assert 0.4 < high["/up"][0]["deviation"] < 0.6 and -0.6 < high["/down"][0]["deviation"] < -0.4


def stored(det: PartitionDetectors) -> dict[bytes, int]:
    """The rule store's series keys and their rows."""
    return {det.store.key(int(r)): int(r) for r in det.store.live_rows()}


def test_a_score_event_off_an_expected_zero_has_no_deviation_in_strict_json():
    det = PartitionDetectors([], forecasts=False)
    x = np.r_[np.zeros(200), 5.0]
    events = []
    for batch in batches({UP: x}, len(x)):
        events += det.ingest(batch).scores
    assert events and events[-1].t_ms == 200 * STEP_MS and events[-1].deviation is None
    assert json.loads(json.dumps(events[-1].to_dict(), allow_nan=False))["deviation"] is None


def test_deviation_series_are_stored_only_when_a_rule_reads_them_and_end_with_their_series(tmp_path):
    path = tmp_path / "direction.yml"
    path.write_text(RULES)
    series = {UP: level(50, 50, 1.0, seed=7)}
    stale = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
    with_rule, without = PartitionDetectors(load_rule_files([path]), forecasts=False), PartitionDetectors([], forecasts=False)
    for batch in batches(series, 50):
        with_rule.ingest(batch)
        without.ingest(batch)
    key = score_series_key(UP, DEVIATION_METRIC)
    assert labels_from_canonical(key)[0] == ("__name__", DEVIATION_METRIC)
    assert key in stored(with_rule) and key not in stored(without)
    assert canonical_bytes(UP) in stored(without)
    # a staleness marker on the scored series is one on its deviation series too
    with_rule.ingest(SampleBatch.from_series([(UP, [(50 * STEP_MS, stale)])]))
    newest, is_marker = with_rule.store.newest(np.array([stored(with_rule)[key]]))
    assert newest[0] == 50 * STEP_MS and bool(is_marker[0])
    assert is_stale(np.array([stale])).all()
