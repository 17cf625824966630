"""The series store: Prometheus 2.x lookback, staleness, append rules, and ring growth.

The reference for every expectation is Prometheus 2.x: an instant selector at t
finds the newest sample in [t - lookback, t] (both ends closed), a staleness
marker as that newest sample ends the series at once, and per series a sample
not newer than the newest one appended is dropped (duplicate or out-of-order).
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.wire.batch import SampleBatch
from detector.labels import canonical_bytes
from detector.store import STALE_NAN_BITS, SeriesStore, is_stale

LOOKBACK = 300_000
STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
X = (("__name__", "x"), ("job", "a"))
Y = (("__name__", "y"), ("job", "a"))


def batch(*series: tuple) -> SampleBatch:
    return SampleBatch.from_series(list(series))


def lookup(store: SeriesStore, labels, t_ms: int, lookback_ms: int = LOOKBACK) -> float | None:
    """The value an instant selector returns for one series at t, or None."""
    found, values = store.instant(np.array([store.series_id(canonical_bytes(labels))]), t_ms, lookback_ms)
    return float(values[0]) if found[0] else None


def window(store: SeriesStore, labels, t_ms: int, range_ms: int) -> list[tuple[int, float]]:
    stamps, values, counts = store.window(np.array([store.series_id(canonical_bytes(labels))]), t_ms, range_ms)
    return list(zip(stamps[0, : counts[0]].tolist(), values[0, : counts[0]].tolist()))


# --- instant lookups -----------------------------------------------------------------


def test_instant_finds_the_newest_sample_at_or_before_t():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(1000, 1.0), (2000, 2.0), (3000, 3.0)])))
    assert [lookup(store, X, t) for t in (999, 1000, 1999, 2000, 2500, 3000, 60_000)] == [None, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]


def test_lookback_is_closed_at_both_ends():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(10_000, 7.0)])))
    assert lookup(store, X, 10_000) == 7.0  # a sample exactly at t
    assert lookup(store, X, 10_000 + LOOKBACK) == 7.0  # a sample exactly 5m old
    assert lookup(store, X, 10_000 + LOOKBACK + 1) is None


def test_lookback_is_per_query():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(0, 1.0)])))
    assert lookup(store, X, 60_000, lookback_ms=60_000) == 1.0
    assert lookup(store, X, 60_001, lookback_ms=60_000) is None


def test_series_are_looked_up_independently_in_one_call():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(0, 1.0)]), (Y, [(200_000, 2.0)])))
    rows = np.array([store.series_id(canonical_bytes(X)), store.series_id(canonical_bytes(Y))])
    found, values = store.instant(rows, 301_000, LOOKBACK)
    assert found.tolist() == [False, True] and values[1] == 2.0


def test_instant_of_no_rows_is_empty():
    found, values = SeriesStore(retention_ms=LOOKBACK).instant(np.zeros(0, dtype=np.int64), 0, LOOKBACK)
    assert len(found) == len(values) == 0


def test_stale_marker_ends_the_series_at_once():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(0, 1.0), (15_000, STALE)])))
    assert lookup(store, X, 14_999) == 1.0
    assert lookup(store, X, 15_000) is None  # not 1.0 from 15 s before
    assert lookup(store, X, 200_000) is None


def test_series_comes_back_after_a_stale_marker():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(0, 1.0), (15_000, STALE)])))
    store.append(batch((X, [(45_000, 4.0)])))
    assert [lookup(store, X, t) for t in (30_000, 45_000)] == [None, 4.0]


def test_ordinary_nan_is_a_value_not_a_stale_marker():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(0, float("nan"))])))
    value = lookup(store, X, 1000)
    assert value is not None and np.isnan(value)


def test_is_stale_compares_bits_not_values():
    values = np.array([STALE, float("nan"), 1.0, float("inf")])
    assert is_stale(values).tolist() == [True, False, False, False]


# --- append rules ---------------------------------------------------------------------


def test_append_counts_accepted_samples_new_series_and_the_newest_timestamp():
    stats = SeriesStore(retention_ms=LOOKBACK).append(batch((X, [(1000, 1.0), (2000, 2.0)]), (Y, [(1500, 3.0)])))
    assert (stats.accepted, stats.duplicates, stats.out_of_order, stats.new_series, stats.max_timestamp) == (
        3, 0, 0, 2, 2000)


def test_empty_batch_changes_nothing():
    store = SeriesStore(retention_ms=LOOKBACK)
    stats = store.append(SampleBatch.from_series([]))
    assert (stats.accepted, len(store)) == (0, 0)


def test_duplicate_timestamp_is_counted_and_the_first_value_kept():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(1000, 1.0)])))
    stats = store.append(batch((X, [(1000, 9.0)])))
    assert (stats.accepted, stats.duplicates, stats.out_of_order) == (0, 1, 0)
    assert lookup(store, X, 1000) == 1.0


def test_duplicate_timestamp_inside_one_batch_keeps_the_first_sample():
    store = SeriesStore(retention_ms=LOOKBACK)
    stats = store.append(batch((X, [(1000, 1.0), (1000, 9.0)])))
    assert (stats.accepted, stats.duplicates) == (1, 1)
    assert lookup(store, X, 1000) == 1.0


def test_out_of_order_sample_is_counted_and_dropped():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(2000, 2.0)])))
    stats = store.append(batch((X, [(1000, 1.0)])))
    assert (stats.accepted, stats.duplicates, stats.out_of_order) == (0, 0, 1)
    assert lookup(store, X, 1500) is None
    assert window(store, X, 2000, 10_000) == [(2000, 2.0)]


def test_out_of_order_within_one_batch_is_dropped_as_prometheus_appends_in_order():
    """DIVERGENCE: Prometheus appends a request's samples in the order sent; in one
    series a sample older than one appended before it is rejected (the head appender's
    commit drops it and counts it out-of-order). Headroom sorts each batch by time first,
    so [(2000, 2.0), (1000, 1.0)] stores both and counts nothing. Prometheus senders
    never send that order, so only a malformed client hits it."""
    store = SeriesStore(retention_ms=LOOKBACK)
    stats = store.append(batch((X, [(2000, 2.0), (1000, 1.0)])))
    assert (stats.accepted, stats.out_of_order) == (1, 1)
    assert lookup(store, X, 1500) is None


def test_appending_the_same_batch_twice_changes_nothing():
    first = batch((X, [(t, float(t)) for t in range(0, 60_000, 5000)]), (Y, [(1000, STALE), (2000, 5.0)]))
    store = SeriesStore(retention_ms=LOOKBACK, initial_capacity=4)
    store.append(first)
    before = [(lookup(store, s, t), window(store, s, t, 30_000)) for s in (X, Y) for t in range(0, 70_000, 2500)]
    again = store.append(first)
    # Each series' newest sample comes back as a duplicate, the older ones as out-of-order.
    assert (again.accepted, again.duplicates, again.out_of_order, again.new_series) == (0, 2, len(first) - 2, 0)
    after = [(lookup(store, s, t), window(store, s, t, 30_000)) for s in (X, Y) for t in range(0, 70_000, 2500)]
    assert after == before


def test_a_retry_overlapping_newer_data_changes_nothing():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(1000, 1.0), (2000, 2.0)])))
    store.append(batch((X, [(3000, 3.0)])))
    stats = store.append(batch((X, [(1000, 1.0), (2000, 2.0)])))
    assert (stats.accepted, stats.duplicates, stats.out_of_order) == (0, 0, 2)
    assert window(store, X, 3000, 10_000) == [(1000, 1.0), (2000, 2.0), (3000, 3.0)]


# --- ring growth ------------------------------------------------------------------------


def test_many_samples_of_one_series_in_one_batch_are_all_kept_inside_retention():
    store = SeriesStore(retention_ms=LOOKBACK, initial_capacity=16)
    samples = [(t, float(t)) for t in range(0, 300_001, 1000)]  # 301 samples, all inside the window
    stats = store.append(batch((X, samples), (Y, [(0, 1.0)])))
    assert stats.accepted == 302
    assert window(store, X, 300_000, LOOKBACK) == samples
    assert all(lookup(store, X, t) == float(t) for t, _ in samples)
    assert window(store, Y, 300_000, LOOKBACK) == [(0, 1.0)]


def test_many_samples_across_batches_are_all_kept_inside_retention():
    store = SeriesStore(retention_ms=LOOKBACK, initial_capacity=16)
    samples = [(t, float(t)) for t in range(0, 600_001, 1000)]
    for sample in samples:
        store.append(batch((X, [sample]), (Y, [sample])))
    inside = [s for s in samples if s[0] >= 300_000]
    assert window(store, X, 600_000, LOOKBACK) == inside
    assert window(store, Y, 600_000, LOOKBACK) == inside
    assert all(lookup(store, X, t) == float(t) for t, _ in inside)


def test_ring_does_not_grow_when_retention_needs_no_more_room():
    store = SeriesStore(retention_ms=10_000, initial_capacity=16)
    for t in range(0, 1_000_000, 1000):  # 11 samples ever inside the retention window
        store.append(batch((X, [(t, float(t))])))
    assert store.capacity == 16
    assert window(store, X, 999_000, 10_000) == [(t, float(t)) for t in range(989_000, 999_001, 1000)]


def test_growth_in_one_series_keeps_the_wrapped_rings_of_others_in_order():
    store = SeriesStore(retention_ms=20_000, initial_capacity=4)
    for t in range(0, 40_000, 5000):  # Y's ring of 4 wraps twice
        store.append(batch((Y, [(t, float(t))])))
    store.append(batch((X, [(t, 1.0) for t in range(40_000, 60_000, 1000)])))  # forces growth
    store.append(batch((Y, [(40_000, 40_000.0)])))
    assert store.capacity > 4
    assert window(store, Y, 40_000, 20_000) == [(t, float(t)) for t in range(20_000, 40_001, 5000)]


def test_rows_grow_past_initial_rows():
    store = SeriesStore(retention_ms=LOOKBACK, initial_rows=4)
    series = [((("__name__", "m"), ("n", f"{i:03d}")), [(1000, float(i))]) for i in range(50)]
    stats = store.append(SampleBatch.from_series(series))
    assert (stats.new_series, len(store)) == (50, 50)
    assert [lookup(store, labels, 1000) for labels, _ in series] == [float(i) for i in range(50)]
    assert store.labels == [labels for labels, _ in series]


# --- recorded rows --------------------------------------------------------------------------


def test_append_rows_stores_one_sample_per_row_at_t():
    store = SeriesStore(retention_ms=LOOKBACK)
    rows = np.array([store.series_id(canonical_bytes(X)), store.series_id(canonical_bytes(Y))])
    stats = store.append_rows(rows, 15_000, np.array([1.5, 2.5]))
    assert stats.accepted == 2
    assert (lookup(store, X, 15_000), lookup(store, Y, 20_000)) == (1.5, 2.5)


def test_append_rows_twice_at_one_time_is_a_duplicate():
    store = SeriesStore(retention_ms=LOOKBACK)
    rows = np.array([store.series_id(canonical_bytes(X))])
    store.append_rows(rows, 15_000, np.array([1.0]))
    assert store.append_rows(rows, 15_000, np.array([2.0])).duplicates == 1
    assert lookup(store, X, 15_000) == 1.0


def test_append_rows_stale_marker_ends_a_recorded_series():
    store = SeriesStore(retention_ms=LOOKBACK)
    rows = np.array([store.series_id(canonical_bytes(X))])
    store.append_rows(rows, 15_000, np.array([1.0]))
    store.append_rows(rows, 30_000, np.array([STALE]))
    assert (lookup(store, X, 29_999), lookup(store, X, 30_000)) == (1.0, None)


def test_append_rows_of_no_rows_does_nothing():
    assert SeriesStore(retention_ms=LOOKBACK).append_rows(np.zeros(0, dtype=np.int64), 0, np.zeros(0)).accepted == 0


# --- property: the store against a naive model of Prometheus's head ---------------------

RETENTION = 60
KINDS = {"value": None, "nan": float("nan"), "stale": STALE, "inf": float("inf")}


class NaiveHead:
    """Every accepted sample of every series in a list, appended one by one."""

    def __init__(self) -> None:
        self.samples: dict[int, list[tuple[int, float]]] = {}

    def append(self, series: int, t: int, v: float) -> str:
        kept = self.samples.setdefault(series, [])
        if kept and t < kept[-1][0]:
            return "out_of_order"
        if kept and t == kept[-1][0]:
            return "duplicate"
        kept.append((t, v))
        return "accepted"

    def instant(self, series: int, t: int, lookback: int) -> float | None:
        inside = [(ts, v) for ts, v in self.samples.get(series, []) if t - lookback <= ts <= t]
        if not inside or struct.pack("<d", inside[-1][1]) == struct.pack("<d", STALE):
            return None
        return inside[-1][1]

    def window(self, series: int, t: int, range_ms: int) -> list[tuple[int, float]]:
        return [
            (ts, v)
            for ts, v in self.samples.get(series, [])
            if t - range_ms <= ts <= t and struct.pack("<d", v) != struct.pack("<d", STALE)
        ]


def bits_of(v: float | None) -> bytes | None:
    return None if v is None else struct.pack("<d", v)


sample = st.tuples(st.integers(0, 400), st.sampled_from(sorted(KINDS)), st.integers(-5, 5))
one_batch = st.dictionaries(st.integers(0, 4), st.lists(sample, min_size=1, max_size=12), min_size=1, max_size=5)


@settings(max_examples=50, deadline=None)
@given(
    batches=st.lists(one_batch, min_size=1, max_size=10),
    queries=st.lists(
        st.tuples(st.integers(0, 100), st.sampled_from(["at", "lookback", "past", "before"]), st.sampled_from([0, 1, 7, 30, RETENTION])),
        min_size=1,
        max_size=10,
    ),
)
def test_instant_and_window_agree_with_a_naive_head(batches, queries):
    """Queries sit on the edges that matter: at a sample, exactly one lookback after it,
    one millisecond later still, and just before it."""
    store = SeriesStore(retention_ms=RETENTION, initial_capacity=2, initial_rows=2)
    head = NaiveHead()
    labels = [(("__name__", "s"), ("n", str(i))) for i in range(5)]
    for spec in batches:
        # Per series in time order, as a remote-write sender sends them.
        content = {
            s: sorted(((t, KINDS[k] if KINDS[k] is not None else float(v)) for t, k, v in samples), key=lambda p: p[0])
            for s, samples in spec.items()
        }
        expected = {"accepted": 0, "duplicate": 0, "out_of_order": 0}
        for s, samples in content.items():
            for t, v in samples:
                expected[head.append(s, t, v)] += 1
        stats = store.append(SampleBatch.from_series([(labels[s], samples) for s, samples in content.items()]))
        assert (stats.accepted, stats.duplicates, stats.out_of_order) == (
            expected["accepted"], expected["duplicate"], expected["out_of_order"])
    for s, kept in head.samples.items():
        row = np.array([store.series_id(canonical_bytes(labels[s]))])
        newest = kept[-1][0]
        for pick, edge, span in queries:
            t = kept[pick % len(kept)][0] + {"at": 0, "lookback": span, "past": span + 1, "before": -1}[edge]
            if t - span < newest - RETENTION:
                continue  # older than the retention window: the store may have let it go
            found, values = store.instant(row, t, span)
            ours = float(values[0]) if found[0] else None
            assert bits_of(ours) == bits_of(head.instant(s, t, span)), (s, t, span)
            stamps, vals, counts = store.window(row, t, span)
            got = list(zip(stamps[0, : counts[0]].tolist(), vals[0, : counts[0]].tolist()))
            want = head.window(s, t, span)
            assert [(ts, bits_of(v)) for ts, v in got] == [(ts, bits_of(v)) for ts, v in want], (s, t, span)


def test_series_of_one_target_share_their_label_pairs():
    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(1000, 1.0)]), (Y, [(1000, 2.0)])))
    x, y = store.labels
    assert x == X and y == Y
    assert x[1] is y[1]  # ("job", "a") held once
    assert x[0] is not y[0]


def test_shared_pairs_of_retired_series_are_dropped_as_series_come_and_go():
    store = SeriesStore(retention_ms=LOOKBACK)
    for generation in range(6):
        labels = [(("__name__", "x"), ("pod", f"p-{generation}-{i}")) for i in range(1500)]
        store.append(batch(*[(lab, [(1000 * (generation + 1), 1.0)]) for lab in labels]))
        store.retire(store.live_rows())
    store.append(batch((X, [(10_000, 1.0)])))
    # Without the rebuild, 9,000 pod values would stay in the table after their series left.
    assert len(store._interner) < 3 * 1500


def test_restored_label_sets_share_their_pairs_again():
    from detector.snapshot import apply, capture, decode, encode

    store = SeriesStore(retention_ms=LOOKBACK)
    store.append(batch((X, [(1000, 1.0)]), (Y, [(1000, 2.0)])))
    back = SeriesStore(retention_ms=LOOKBACK)
    apply(back, decode(encode(capture(store), {}), {}))
    assert back.labels == [X, Y]
    assert back.labels[0][1] is back.labels[1][1]
