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
    assert tracker.watermark(newest_ms=30_000, now_ms=44_000) == 30_000 + 15_000 - 1_500


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


def reference(batches) -> list:
    """The same samples evaluated on complete data: each instant's samples together, in order."""
    e = engine(max_lateness_ms=10 * MINUTE)
    by_instant: dict[int, list] = {}
    for series, t, value, _ in batches:
        by_instant.setdefault(t, []).append((series, [(t, value)]))
    out = []
    for t in sorted(by_instant):
        out += e.ingest(SampleBatch.from_series(by_instant[t])).transitions
    out += e.advance_to(max(by_instant)).transitions
    return [(t.eval_time, t.state) for t in out]


def play(batches, **options) -> tuple[list, int]:
    """Each (series, t, value, arrival) as its own request, in arrival order: transitions and late samples."""
    e = engine(max_lateness_ms=10 * MINUTE, **options)
    out, late = [], 0
    for series, t, value, arrival in sorted(batches, key=lambda b: b[3]):
        got = send(e, series, t, value, arrival)
        out += got.transitions
        late += got.late
    out += e.advance_to(max(b[1] for b in batches)).transitions
    return [(t.eval_time, t.state) for t in out], late


def test_at_start_up_the_first_scrapes_wait_for_the_other_shard():
    """A fresh partition: b's shard delivers each scrape 4 s after a's. b reads 0 at the first
    scrape (no series has a gap yet) and at the third (b has only one gap)."""
    batches = []
    for t in range(0, 120_001, 15_000):
        batches.append((A, t, 1.0, t + 100))
        batches.append((B, t, 0.0 if t in (0, 30_000) else 1.0, t + 4_000))
    got, late = play(batches)
    assert late == 0
    assert got == reference(batches) == [(0, "firing"), (15_000, "inactive"), (30_000, "firing"), (45_000, "inactive")]


def test_without_the_start_up_wait_the_first_scrape_is_evaluated_on_one_shard():
    """What the start-up rule is for: in replay order (no arrival clock) there is no wait, and
    a's first request alone moves the watermark past 0."""
    e = engine(max_lateness_ms=10 * MINUTE)
    e.ingest(SampleBatch.from_series([(A, [(0, 1.0)])]))
    assert e.watermark == 0
    live = engine(max_lateness_ms=10 * MINUTE)
    send(live, A, 0, 1.0, 100)
    assert live.watermark < 0


def test_a_young_series_that_stops_at_start_up_holds_for_a_bounded_time():
    """Seen once at start-up, then never again: it holds with the typical gap until silent."""
    tracker = CompletenessTracker(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    tracker.observe(np.array([0, 1]), np.array([0, 0]), arrival_ms=0)
    for t in range(15_000, 120_001, 15_000):  # row 1 never comes back
        tracker.observe(np.array([0]), np.array([t]), arrival_ms=t)
        if t == 30_000:  # past the start-up wait; row 1 (seen once) holds at 0 + 15 s - 1.5 s
            assert tracker.watermark(newest_ms=t, now_ms=t) == 13_500
    assert tracker.watermark(newest_ms=120_000, now_ms=134_000) == 120_000 + 13_500  # row 1 is silent


def test_a_new_series_mid_stream_holds_nothing_after_start_up():
    """A probe: one sample, then 0 a moment later, then nothing. Past start-up it does not hold
    (a young series then is a new target or a push, not a shard that has not caught up)."""
    e = engine(max_lateness_ms=10 * MINUTE)
    warm(e, 120_000)
    probe = (("__name__", "ready"), ("instance", "probe"), ("job", "j"))
    send(e, probe, 121_000, 1.0, 121_000)
    send(e, probe, 121_200, 1.0, 121_200)
    e.ingest(SampleBatch.from_series([(A, [(135_000, 1.0)]), (B, [(135_000, 1.0)])]), arrival_ms=135_000)
    assert e.complete_until(149_000) == 135_000 + 13_500


def test_a_shard_seconds_behind_in_steady_state_makes_nothing_late():
    """b's shard delivers 1-5 s after a's, at random; b reads 0 now and then."""
    rng = np.random.default_rng(7)
    batches = []
    for t in range(0, 20 * MINUTE, 15_000):
        batches.append((A, t, 1.0, t + int(rng.integers(5, 200))))
        batches.append((B, t, float(rng.random() > 0.2), t + int(rng.integers(1_000, 5_000))))
    got, late = play(batches)
    assert late == 0
    assert got == reference(batches) and len(got) > 4


def test_a_series_whose_request_was_refused_at_an_outage_is_not_silent_when_it_ends():
    """Fifteen series at their own phases, one arrival a second; the receiver is down from 300 s
    to 900 s. Series 0 was sent at 280.1 s; its 295 s sample was refused. At the end of the outage
    another shard's backlog arrives first: series 0 must still hold 295 s back."""
    tracker = CompletenessTracker(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    phases = np.array([10_000] + [r * 1_000 for r in range(1, 15)])
    for k in range(20):
        for r in np.argsort(phases % 15_000):
            t = int(phases[r]) + k * 15_000
            arrival = t + (5_100 if (r, t) == (0, 295_000) else 100)  # its shard's timer fired at 300.1 s
            if arrival < 300_000:
                tracker.observe(np.array([r]), np.array([t]), arrival_ms=arrival)
    backlog = np.arange(305_000, 900_000, 15_000)  # series 5 (phase 5 s)
    tracker.observe(np.full(len(backlog), 5), backlog, arrival_ms=900_000)
    assert tracker.watermark(newest_ms=int(backlog[-1]), now_ms=900_000) == 280_000 + 13_500
    assert 0 in tracker.holding_back(295_000, now_ms=900_000)


def test_a_catch_up_after_an_outage_as_long_as_the_bound_waits_for_every_backlog():
    """Nothing arrives for two minutes with a two-minute bound; a's first request carries its
    whole backlog, up to now; b's arrives 3 s later and reads 0 just before the outage."""
    batches = []
    for t in range(0, 5 * MINUTE, 15_000):
        outage = 2 * MINUTE < t <= 4 * MINUTE
        batches.append((A, t, 1.0, 4 * MINUTE + 1_000 if outage else t + 100))
        batches.append((B, t, 0.0 if t == 2 * MINUTE + 15_000 else 1.0, 4 * MINUTE + 4_000 if outage else t + 2_000))
    e = engine(max_lateness_ms=2 * MINUTE, silence_ms=30_000)
    out, late = [], 0
    for series, t, value, arrival in sorted(batches, key=lambda b: (b[3], b[1])):
        got = send(e, series, t, value, arrival)
        out += got.transitions
        late += got.late
    assert late == 0
    assert [(t.eval_time, t.state) for t in out] == [(135_000, "firing"), (150_000, "inactive")]


def test_a_history_in_one_request_or_a_single_request_does_not_hold_the_start_for_good():
    """The start-up wait ends on the clock too: 10 s after a request carrying minutes of history,
    and 10 s plus one scrape interval plus 5 s after a lone sample with nothing after it."""
    history = CompletenessTracker(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    stamps = np.arange(0, 165_001, 15_000)
    history.observe(np.zeros(len(stamps), dtype=np.int64), stamps, arrival_ms=1_000_000)
    assert history.watermark(newest_ms=165_000, now_ms=1_005_000) < 0  # other shards may still send
    assert history.watermark(newest_ms=165_000, now_ms=1_010_000) == 165_000 + 13_500
    lone = CompletenessTracker(max_lateness_ms=10 * MINUTE, silence_ms=30_000)
    lone.observe(np.array([0]), np.array([0]), arrival_ms=1_000_000)
    assert lone.watermark(newest_ms=0, now_ms=1_029_000) < 0
    assert lone.watermark(newest_ms=0, now_ms=1_030_000) == 0 + 13_500  # seen once: the typical gap


def test_live_nothing_is_complete_before_it_happened():
    """Scraped at 5 s past each 15 s tick, the series predict their next samples 13.5 s ahead, so
    they alone would complete the 150 s tick at 140 s. Live the watermark stops at the arrival clock
    (or the newest sample, if the sender's clock is ahead): a new series' sample stamped 150 s and
    sent 50 ms before is in that tick's evaluation, not late."""
    e = engine(max_lateness_ms=10 * MINUTE)
    for t in range(5_000, 140_001, 15_000):
        e.ingest(SampleBatch.from_series([(A, [(t, 1.0)]), (B, [(t, 1.0)])]), arrival_ms=t + 100)
    assert e.watermark == 140_100
    assert e.complete_until(149_000) == 149_000
    probe = (("__name__", "ready"), ("instance", "probe"), ("job", "j"))
    out = send(e, probe, 150_000, 0.0, 149_950)
    assert out.late == 0 and e.watermark == 150_000  # its own stamp: newest sample, ahead of the clock
    assert out.transitions == []  # sum(ready) is 2 at 150 s with the probe's 0 (1 + 1 + 0)
    assert e.complete_until(160_000) == 140_000 + 13_500
    # Replay (no clock): the series' prediction alone evaluates 150 s at the 140 s samples.
    replay = engine(max_lateness_ms=10 * MINUTE)
    for t in range(5_000, 140_001, 15_000):
        replay.ingest(SampleBatch.from_series([(A, [(t, 1.0)]), (B, [(t, 1.0)])]))
    assert replay.watermark == 140_000 + 13_500
