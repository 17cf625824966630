"""The completeness watermark: an instant is evaluated once every live series has sent it.

Each test plays what unsynchronised remote-write shards do: the samples of
one scrape arrive in several requests, a little apart.
"""

from __future__ import annotations

import numpy as np

from detector.completeness import CompletenessTracker
from detector.promql import compile_expr
from detector.rules.alerting import AlertingRule
from detector.rules.engine import RuleEngine
from detector.rules.group import RuleGroup
from detector.store import STALE_NAN_BITS
from detector.wire.batch import SampleBatch

STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
A = (("__name__", "ready"), ("instance", "a"), ("job", "j"))
B = (("__name__", "ready"), ("instance", "b"), ("job", "j"))
MINUTE = 60_000


def engine(**options) -> RuleEngine:
    """`sum(ready) < 2` fires at once: true exactly when some instance's newest value is 0."""
    rule = AlertingRule("NotAllReady", compile_expr("sum(ready) < 2"), "sum(ready) < 2")
    return RuleEngine([RuleGroup("g", "inline", 15_000, (rule,))], **options)


def send(engine: RuleEngine, series, t: int, value: float, arrival: int):
    return engine.ingest(SampleBatch.from_series([(series, [(t, value)])]), arrival_ms=arrival)


def warm(engine: RuleEngine, until: int) -> list:
    """Both series every 15 s up to ``until``, delivered together."""
    out = []
    for t in range(0, until + 1, 15_000):
        out += engine.ingest(SampleBatch.from_series([(A, [(t, 1.0)]), (B, [(t, 1.0)])]), arrival_ms=t).transitions
    return out


def test_a_tick_waits_for_the_other_shard_of_the_same_scrape():
    """Instance b's 75 s sample is 0, but its shard delivers after a's shard moved on to 90 s."""
    complete2, newest2 = engine(max_lateness_ms=10 * MINUTE), engine()
    for e in (complete2, newest2):
        warm(e, 60_000)
        send(e, A, 75_000, 1.0, 75_100)
        send(e, A, 90_000, 1.0, 90_100)
    late = send(newest2, B, 75_000, 0.0, 90_200)
    assert late.transitions == [] and late.late == 1  # 75 s was evaluated without it: the alert is missed
    held = send(complete2, B, 75_000, 0.0, 90_200)
    assert held.late == 0
    assert [(t.eval_time, t.state) for t in held.transitions] == [(75_000, "firing")]


def test_a_series_ended_by_a_staleness_marker_holds_nothing_back():
    e = engine(max_lateness_ms=10 * MINUTE)
    warm(e, 60_000)
    send(e, B, 75_000, STALE, 75_000)  # instance b is gone
    for t in (75_000, 90_000, 105_000):
        send(e, A, t, 1.0, t)
    assert e.watermark >= 105_000


def test_a_silent_series_stops_holding_once_others_keep_arriving():
    e = engine(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    warm(e, 60_000)
    for t in range(75_000, 150_001, 15_000):  # b vanishes without a marker; a goes on
        send(e, A, t, 1.0, t)
    assert e.watermark >= 135_000
    # While b was still inside its silence allowance, it held the watermark.
    e2 = engine(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    warm(e2, 60_000)
    send(e2, A, 75_000, 1.0, 75_000)
    assert e2.watermark < 75_000


def test_after_a_sender_outage_the_catch_up_is_evaluated_on_complete_data():
    """Nothing arrives for 10 minutes; then each shard sends its backlog, a's first, whole."""
    e = engine(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    warm(e, 60_000)
    backlog = range(75_000, 75_000 + 10 * MINUTE, 15_000)
    resume = 75_000 + 10 * MINUTE
    out = e.ingest(SampleBatch.from_series([(A, [(t, 1.0) for t in backlog])]), arrival_ms=resume)
    assert out.transitions == [] and e.watermark < 75_000  # b's backlog is still on its way
    out = e.ingest(SampleBatch.from_series([(B, [(t, 0.0 if t == 300_000 else 1.0) for t in backlog])]),
                   arrival_ms=resume + 200)
    assert out.late == 0
    assert [(t.eval_time, t.state) for t in out.transitions] == [(300_000, "firing"), (315_000, "inactive")]


def test_the_watermark_never_trails_the_newest_sample_by_more_than_the_bound():
    e = engine(max_lateness_ms=MINUTE, silence_ms=10 * MINUTE)
    warm(e, 60_000)
    for t in range(75_000, 300_001, 15_000):  # b's shard keeps sending, but falls two minutes behind
        send(e, A, t, 1.0, t)
        if t - 2 * MINUTE > 60_000:
            send(e, B, t - 2 * MINUTE, 1.0, t)
    assert e.watermark == 300_000 - MINUTE


def test_a_new_series_does_not_stall_the_partition():
    e = engine(max_lateness_ms=10 * MINUTE)
    warm(e, 60_000)
    c = (("__name__", "ready"), ("instance", "c"), ("job", "j"))
    e.ingest(SampleBatch.from_series([(A, [(75_000, 1.0)]), (B, [(75_000, 1.0)]), (c, [(75_000, 1.0)])]),
             arrival_ms=75_000)
    assert e.watermark >= 75_000


def test_a_series_sent_at_irregular_times_does_not_hold_the_partition():
    """A series that sends twice and stops (a probe, an event-driven push) predicts nothing."""
    e = engine(max_lateness_ms=10 * MINUTE)
    warm(e, 60_000)
    probe = (("__name__", "ready"), ("instance", "probe"), ("job", "j"))
    send(e, probe, 61_000, 1.0, 61_000)
    send(e, probe, 61_200, 1.0, 61_200)  # gap 200 ms, then nothing
    e.ingest(SampleBatch.from_series([(A, [(75_000, 1.0)]), (B, [(75_000, 1.0)])]), arrival_ms=75_000)
    assert e.watermark >= 75_000


def test_a_silent_fast_series_stops_holding_after_a_few_of_its_gaps():
    """Silence is three of the series' own gaps plus the sender's batching, at most silence_ms."""
    tracker = CompletenessTracker(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    for t in range(0, 20_001, 1_000):  # both every second; series 0 stops after 10 s
        rows = np.array([0, 1]) if t <= 10_000 else np.array([1])
        tracker.observe(rows, np.full(len(rows), t), arrival_ms=t)
    assert tracker.holding_back(10**12, now_ms=20_000).tolist() == [1]  # 10 s silent > 3 x 1 s + 5 s


def test_retired_rows_forget_what_their_series_held():
    tracker = CompletenessTracker(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    rows = np.array([0, 1])
    tracker.observe(rows, np.array([0, 0]), arrival_ms=0)
    tracker.observe(rows, np.array([15_000, 15_000]), arrival_ms=15_000)
    tracker.forget(np.array([1]))
    tracker.observe(np.array([0]), np.array([30_000]), arrival_ms=30_000)
    assert tracker.watermark(newest_ms=30_000, now_ms=30_000) == 30_000 + 15_000 - 1_500


def test_several_samples_of_one_series_in_one_batch_give_its_spacing():
    tracker = CompletenessTracker(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    tracker.observe(np.array([3, 3, 3]), np.array([60_000, 0, 30_000]))
    assert tracker.watermark(newest_ms=60_000) == 60_000 + 30_000 - 3_000


def test_the_tracker_survives_a_snapshot():
    from detector.partition import SNAPSHOT_RECORDS
    from detector.snapshot import decode, encode

    e = engine(max_lateness_ms=10 * MINUTE)
    warm(e, 60_000)
    send(e, A, 75_000, 1.0, 75_000)
    restored = engine(max_lateness_ms=10 * MINUTE)
    restored.restore_state(decode(encode(e.snapshot_state(), SNAPSHOT_RECORDS), SNAPSHOT_RECORDS))
    assert restored.complete_until(75_000) == e.complete_until(75_000) < 75_000
    out = send(restored, B, 75_000, 0.0, 75_500)
    assert [(t.eval_time, t.state) for t in out.transitions] == [(75_000, "firing")]
