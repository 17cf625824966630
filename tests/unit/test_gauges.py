"""The worker's per-series gauges: exposition parsed back with prometheus-client's own parser."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from detector.wire.batch import SampleBatch
from detector.forecast.engine import Forecast
from detector.labels import canonical_bytes
from detector.partition import PartitionDetectors, PartitionOutput
from detector.rules.engine import EngineOutput
from pipelines.gauges import DetectorGauges

T0_MS = 1_700_000_000_000
DEPTH = (("__name__", "pgmq_queue_depth"), ("job", "orch"), ("queue_name", "orders"))
MAX_DEPTH = (("__name__", "pgmq_queue_max_depth"), ("job", "orch"), ("queue_name", "orders"))
SATURATION = (("__name__", "worker_dispatch_channel_saturation"), ("worker_id", "w1"))


def scrape(gauges: DetectorGauges) -> dict[str, list[tuple[dict, float]]]:
    text = gauges.exposition()
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def forecast(labels=SATURATION, eta=300.0, low=200.0, high=math.inf, state="firing", bound_name="", bound=1.0):
    return Forecast(labels, T0_MS, eta, low, high, bound, bound_name, "up", 0.9, state)


def output(**fields) -> PartitionOutput:
    return PartitionOutput(EngineOutput(), **fields)


def test_a_ramp_through_the_detectors_shows_its_score_eta_interval_and_warning_state():
    detectors, gauges = PartitionDetectors([]), DetectorGauges()
    for k in range(90):
        t = T0_MS + 15_000 * k
        batch = SampleBatch.from_series([(DEPTH, [(t, 6000.0 + 40 * k + (-1) ** k * 30)]), (MAX_DEPTH, [(t, 10000.0)])])
        gauges.update("samples", 3, detectors.ingest(batch))
    metrics = scrape(gauges)
    scores = {s[0]["metric"]: s for s in metrics["headroom_anomaly_score"]}
    assert set(scores) == {"pgmq_queue_depth", "pgmq_queue_max_depth"}
    labels, value = scores["pgmq_queue_depth"]
    assert labels == {"job": "orch", "queue_name": "orders", "metric": "pgmq_queue_depth"} and 0 <= value <= 1
    expected = {"job": "orch", "queue_name": "orders", "metric": "pgmq_queue_depth", "bound": "pgmq_queue_max_depth",
                "direction": "up"}
    (eta,) = metrics["headroom_saturation_eta_seconds"]
    (low,) = metrics["headroom_saturation_eta_lower_seconds"]
    (high,) = metrics["headroom_saturation_eta_upper_seconds"]
    assert eta[0] == low[0] == high[0] == expected
    assert 0 < low[1] <= eta[1] <= high[1] < 20 * 60
    assert metrics["headroom_early_warning_state"] == [(expected, 2.0)]


def test_not_heading_means_no_eta_and_an_inactive_one_is_dropped():
    gauges = DetectorGauges()
    gauges.update("samples", 0, output(forecasts=[forecast()]))
    assert len(scrape(gauges)["headroom_saturation_eta_upper_seconds"]) == 1
    assert scrape(gauges)["headroom_saturation_eta_upper_seconds"][0][1] == math.inf
    gauges.update("samples", 0, output(forecasts=[forecast(eta=math.nan, low=math.nan, high=math.nan, state="firing")]))
    metrics = scrape(gauges)
    assert metrics["headroom_saturation_eta_seconds"] == [] and metrics["headroom_early_warning_state"][0][1] == 2.0
    gauges.update("samples", 0, output(forecasts=[forecast(eta=math.nan, low=math.nan, high=math.nan, state="inactive")]))
    assert scrape(gauges)["headroom_early_warning_state"] == [] and len(gauges) == 0


def test_revoked_partitions_are_forgotten_and_others_kept():
    gauges = DetectorGauges()
    for partition in (0, 1):
        key = canonical_bytes((("__name__", "headroom_anomaly_score"), ("metric", "up"), ("p", str(partition))))
        series = SATURATION + (("zone", str(partition)),)
        gauges.update("samples", partition, output(latest_scores={key: 0.1}, forecasts=[forecast(series)]))
    assert len(gauges) == 4
    gauges.forget("samples", {0})
    metrics = scrape(gauges)
    assert [s[0]["p"] for s in metrics["headroom_anomaly_score"]] == ["1"]
    assert len(metrics["headroom_early_warning_state"]) == 1
    gauges.forget("samples", {1, 7})
    assert len(gauges) == 0 and scrape(gauges)["headroom_anomaly_score"] == []


def test_label_values_with_quotes_newlines_and_unicode_round_trip():
    odd = (("__name__", "pgmq_queue_depth"), ("queue_name", 'a "q"\\\nü'))
    key = canonical_bytes((("__name__", "headroom_anomaly_score"), ("metric", "x"), ("v", 'say "hi"\n\\ é')))
    gauges = DetectorGauges()
    gauges.update("samples", 0, output(latest_scores={key: 0.5}, forecasts=[forecast(odd, bound_name="pgmq_queue_max_depth")]))
    metrics = scrape(gauges)
    assert metrics["headroom_anomaly_score"] == [({"metric": "x", "v": 'say "hi"\n\\ é'}, 0.5)]
    assert metrics["headroom_saturation_eta_seconds"][0][0]["queue_name"] == 'a "q"\\\nü'


def test_ten_thousand_series_are_one_entry_each_and_the_newest_score_wins():
    keys = [canonical_bytes((("__name__", "headroom_anomaly_score"), ("i", str(i)), ("metric", "m"))) for i in range(10_000)]
    gauges = DetectorGauges()
    rng = np.random.default_rng(0)
    for _ in range(3):
        values = rng.uniform(0, 1, len(keys))
        gauges.update("samples", 0, output(latest_scores=dict(zip(keys, values.tolist()))))
    assert len(gauges) == 10_000
    samples = scrape(gauges)["headroom_anomaly_score"]
    assert len(samples) == 10_000
    assert sorted(v for _, v in samples) == sorted(values.tolist())


def test_a_retired_series_leaves_the_gauges():
    detectors, gauges = PartitionDetectors([], retire_every_ms=15_000), DetectorGauges()
    stale = float(np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0])
    for k in range(90):
        t = T0_MS + 15_000 * k
        batch = SampleBatch.from_series([(DEPTH, [(t, 6000.0 + 40 * k + (-1) ** k * 30)]), (MAX_DEPTH, [(t, 10000.0)])])
        gauges.update("samples", 3, detectors.ingest(batch))
    assert len(scrape(gauges)["headroom_saturation_eta_seconds"]) == 1
    t = T0_MS + 15_000 * 90
    gauges.update("samples", 3, detectors.ingest(SampleBatch.from_series([(DEPTH, [(t, stale)]), (MAX_DEPTH, [(t, 10000.0)])])))
    metrics = scrape(gauges)
    assert [s[0]["metric"] for s in metrics["headroom_anomaly_score"]] == ["pgmq_queue_max_depth"]
    assert metrics.get("headroom_saturation_eta_seconds", []) == []
    assert metrics.get("headroom_early_warning_state", []) == []


def test_only_the_families_asked_for_are_written():
    key = canonical_bytes((("__name__", "headroom_anomaly_score"), ("metric", "up")))
    gauges = DetectorGauges()
    gauges.update("samples", 0, output(latest_scores={key: 0.1}, forecasts=[forecast()]))
    text = gauges.exposition({"headroom_saturation_eta_seconds", "headroom_worker_samples"})
    assert [f.name for f in text_string_to_metric_families(text)] == ["headroom_saturation_eta_seconds"]
    assert gauges.exposition(set()) == ""


def test_a_scored_series_key_gives_its_score_series_labels_and_a_metric_label_of_its_own_is_replaced():
    gauges = DetectorGauges()
    own = canonical_bytes((("__name__", "x"), ("job", "api"), ("metric", "mine")))
    gauges.update("samples", 0, output(latest_scores={own: 0.5}, forecasts=[forecast((("__name__", "x"), ("job", "api"), ("metric", "mine")))]))
    metrics = scrape(gauges)
    assert metrics["headroom_anomaly_score"] == [({"job": "api", "metric": "x"}, 0.5)]
    assert metrics["headroom_early_warning_state"][0][0]["bound"] == "1"  # the same key, its own label text


def test_render_keeps_nothing_and_learn_keeps_only_the_series_still_held():
    gauges = DetectorGauges()
    kept, gone = (canonical_bytes((("__name__", "up"), ("job", name))) for name in ("kept", "gone"))
    gauges.update("samples", 0, output(latest_scores={kept: 0.1, gone: 0.2},
                                       forecasts=[forecast(), forecast(DEPTH, bound_name="pgmq_queue_max_depth")]))
    page, learned = gauges.render()
    assert gauges._score_text == {} and gauges._label_text == {}  # nothing written: safe on another thread
    assert set(learned.scores) == {kept, gone} and len(learned.forecasts) == 2
    # while the page was on its way: one series retired, one forecast's bound changed
    gauges.update("samples", 0, output(retired_keys=[gone], forecasts=[forecast(DEPTH, bound_name="pgmq_queue_capacity")]))
    gauges.learn(learned)
    assert set(gauges._score_text) == {kept}
    assert set(gauges._label_text) == {canonical_bytes(SATURATION)}
    assert 'job="gone"' in page and 'bound="pgmq_queue_max_depth"' in page
    later = gauges.exposition()
    assert 'job="gone"' not in later and 'bound="pgmq_queue_capacity"' in later  # the changed bound's text built anew


def test_rendering_on_another_thread_while_series_come_and_go_never_fails():
    import threading

    gauges = DetectorGauges()
    keys = [canonical_bytes((("__name__", "up"), ("job", str(i)))) for i in range(2000)]
    failures: list[BaseException] = []
    stop = threading.Event()

    def scrape_forever() -> None:
        while not stop.is_set():
            try:
                page, learned = gauges.render()
                text_string_to_metric_families(page)
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                failures.append(exc)
                return

    thread = threading.Thread(target=scrape_forever)
    thread.start()
    try:
        for round_ in range(200):
            batch = keys[(round_ * 37) % 1000:][:1000]
            gauges.update("samples", round_ % 3, output(latest_scores=dict.fromkeys(batch, 0.5),
                                                        retired_keys=keys[(round_ * 53) % 1500:][:300]))
            gauges.forget("samples", {(round_ + 1) % 3})
    finally:
        stop.set()
        thread.join()
    assert failures == []
