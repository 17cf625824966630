"""rate, increase, delta, irate, idelta and histogram_quantile, exactly as Prometheus 2.42.

promtool is the oracle: the scenario tests run the same input series through
``promtool test rules`` and through Headroom and compare every answer bit for
bit. The fast tests hard-code answers; one oracle test checks that promtool
gives exactly those, so no number here is a guess.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.wire.batch import SampleBatch
from detector.promql import EvalContext, UnsupportedExpression, compile_expr
from detector.promql.plan import DEFAULT_LOOKBACK_MS
from detector.store import STALE_NAN_BITS, SeriesStore
from tests.promtool_oracle import (
    Result,
    Series,
    expand_values,
    headroom_results,
    load_store,
    mismatches,
    same_result,
    table_disagreements,
)

MINUTE = 60_000
RANGE_FUNCTIONS = ("rate", "increase", "delta", "irate", "idelta")




# --- Scenarios: promtool and Headroom must agree on every query. -----------------------------

COUNTERS: Series = [
    ('requests_total{job="steady"}', "0+60x20"),
    ('requests_total{job="resets"}', "10 20 30 5 15 25 2 4 100 0 3 3 3"),
    ('requests_total{job="late_start"}', "_x6 1000+7x10"),
    ('requests_total{job="from_one"}', "1+10x20"),
    ('requests_total{job="fractional"}', "0.1+0.1x20"),
    ('queue_depth{job="gauge"}', "3 1 4 1 5 9 2 6 5 3 5 -8 9 7 9 3 2 3 8 4"),
    ('queue_depth{job="odd"}', "1 NaN 3 Inf 5 -Inf 7 8 NaN NaN 11"),
]
STALENESS: Series = [
    ('up_total{job="restart"}', "0+10x5 stale 100+10x5"),
    ('up_total{job="flapping"}', "1 stale 2 stale 3 4 stale stale 5 6"),
    ('up_total{job="gone"}', "0+10x4 stale"),
    ('up_total{job="gaps"}', "0 _x3 40 50 _ 70 _x4 120"),
]
HISTOGRAMS: Series = [
    ('wait_ms_bucket{job="a", le="10"}', "0+50x10"),
    ('wait_ms_bucket{job="a", le="100"}', "0+90x10"),
    ('wait_ms_bucket{job="a", le="1000"}', "0+99x4 0+99x5"),
    ('wait_ms_bucket{job="a", le="+Inf"}', "0+100x10"),
    # "1" and "1.0" are one bucket; a NaN count; a count below its predecessor.
    ('wait_ms_bucket{job="b", le="1"}', "10 10 10"),
    ('wait_ms_bucket{job="b", le="1.0"}', "5 5 5"),
    ('wait_ms_bucket{job="b", le="2"}', "8 NaN 12"),
    ('wait_ms_bucket{job="b", le="+Inf"}', "30 30 30"),
    ('wait_ms_bucket{job="negative", le="-1"}', "1 0 0"),
    ('wait_ms_bucket{job="negative", le="0"}', "2 0 2"),
    ('wait_ms_bucket{job="negative", le="+Inf"}', "4 0 NaN"),
    ('wait_ms_bucket{job="no_inf", le="1"}', "1 2 3"),
    ('wait_ms_bucket{job="no_inf", le="2"}', "3 4 5"),
    ('wait_ms_bucket{job="only_inf", le="+Inf"}', "3 4 5"),
    ('wait_ms_bucket{job="no_le"}', "3 4 5"),
    ('wait_ms_bucket{job="bad_le", le="fast"}', "3 4 5"),
    ('wait_ms_bucket{job="hex_le", le="0x1p3"}', "1 2 3"),
    ('wait_ms_bucket{job="hex_le", le="+Inf"}', "3 4 5"),
]
PHIS = ("0", "0.25", "0.5", "0.9", "0.99", "1", "-0.5", "1.5", "NaN", "0.5 + 0.4")


def _range_queries(metric: str, ranges: tuple[str, ...], times_ms: range, offset: str = "") -> list[tuple[str, int]]:
    return [
        (f"{fn}({metric}[{r}]{offset})", t) for fn in RANGE_FUNCTIONS for r in ranges for t in times_ms
    ]


SCENARIOS: dict[str, tuple[Series, list[tuple[str, int]], int]] = {
    "counters_and_gauges": (
        COUNTERS,
        _range_queries("requests_total", ("1m", "2m", "5m", "10m"), range(0, 21 * MINUTE, 90_000))
        + _range_queries("queue_depth", ("2m", "5m"), range(0, 21 * MINUTE, 2 * MINUTE)),
        MINUTE,
    ),
    "staleness_and_gaps": (
        STALENESS,
        _range_queries("up_total", ("1m", "3m", "5m"), range(0, 13 * MINUTE, 30_000)),
        MINUTE,
    ),
    # Ranges shorter than, equal to and just over the scrape interval; odd ones in ms.
    "short_ranges": (
        COUNTERS[:3],
        _range_queries("requests_total", ("15s", "29s", "30s", "31s", "45500ms", "61s"), range(0, 5 * MINUTE, 7_500)),
        30_000,
    ),
    "offsets": (
        COUNTERS[:3] + STALENESS[:1],
        _range_queries("requests_total", ("2m", "5m"), range(0, 21 * MINUTE, 150_000), " offset 3m")
        + _range_queries("up_total", ("4m",), range(0, 13 * MINUTE, MINUTE), " offset 90s")
        + [("rate(absent_total[5m])", 5 * MINUTE)],
        MINUTE,
    ),
    "histograms": (
        HISTOGRAMS,
        [(f"histogram_quantile({phi}, wait_ms_bucket)", t) for phi in PHIS for t in (0, MINUTE, 2 * MINUTE, 10 * MINUTE)]
        + [
            (f"histogram_quantile({phi}, rate(wait_ms_bucket[{r}]))", t)
            for phi in PHIS
            for r in ("2m", "5m")
            for t in (2 * MINUTE, 5 * MINUTE, 6 * MINUTE, 10 * MINUTE)
        ],
        MINUTE,
    ),
    "same_labels_after_dropping_the_name": (
        [('a_bucket{le="1"}', "1 2 3"), ('a_bucket{le="+Inf"}', "2 3 4"), ('b_bucket{le="+Inf"}', "2 3 4")],
        [
            ('rate({__name__=~"a_bucket|b_bucket", le="+Inf"}[5m])', 2 * MINUTE),
            ('histogram_quantile(0.5, {__name__=~"a_bucket|b_bucket"})', MINUTE),
            # Each alone is fine; and only series with a result can collide.
            ('rate({__name__=~"a_bucket|b_bucket", le="+Inf"}[5m])', 0),
            ("histogram_quantile(0.5, a_bucket)", MINUTE),
        ],
        MINUTE,
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_agrees_with_promtool(name: str, promtool: str) -> None:
    series, queries, interval_ms = SCENARIOS[name]
    assert mismatches(series, queries, interval_ms) == []


def _random_case(seed: int) -> tuple[Series, list[tuple[str, int]], int]:
    """Counters with resets, gauges, gaps and staleness markers; random ranges, offsets and times."""
    rng = np.random.default_rng(seed)
    interval_ms = int(rng.choice([5_000, 15_000, 60_000]))
    steps = 40
    series = []
    for i in range(30):
        counter = i % 3 != 0
        values = np.cumsum(rng.integers(0, 20, steps)) if counter else rng.integers(-50, 50, steps)
        tokens = []
        for value in values * (1 + rng.integers(0, 4) / 4):
            roll = rng.random()
            if counter and roll < 0.05:
                tokens.append(repr(float(rng.integers(0, 10))))  # a reset
            tokens.append("_" if roll > 0.92 else "stale" if roll > 0.88 else repr(float(value)))
        series.append((f'm{{kind="{"counter" if counter else "gauge"}", i="{i}"}}', " ".join(tokens)))
    end = steps * interval_ms
    queries = []
    for _ in range(60):
        fn = RANGE_FUNCTIONS[rng.integers(len(RANGE_FUNCTIONS))]
        range_ms = int(rng.integers(interval_ms // 2, 12 * interval_ms))
        offset_ms = int(rng.choice([0, 0, int(rng.integers(1, 5 * interval_ms))]))
        offset = f" offset {offset_ms}ms" if offset_ms else ""
        queries.append((f"{fn}(m[{range_ms}ms]{offset})", int(rng.integers(0, end + 5 * interval_ms))))
    return series, queries, interval_ms


@pytest.mark.parametrize("seed", range(4))
def test_random_series_agree_with_promtool(seed: int, promtool: str) -> None:
    assert mismatches(*_random_case(seed)) == []


def _random_histograms(seed: int) -> tuple[Series, list[tuple[str, int]], int]:
    """Histograms with random bounds (repeated, negative, missing +Inf) and counts (dipping, NaN)."""
    rng = np.random.default_rng(seed)
    bounds = ["-1", "0", "0.5", "1", "1.0", "2.5", "10", "100", "+Inf"]
    series = []
    for h in range(40):
        chosen = [b for b in bounds if rng.random() < 0.6] or ["+Inf"]
        base = np.sort(rng.integers(0, 50, len(chosen))).astype(float)
        for le, count in zip(chosen, base):
            steps = np.cumsum(rng.integers(0, 5, 12)) + count
            if rng.random() < 0.1:
                steps[rng.integers(12) :] = 0  # a reset
            tokens = ["NaN" if rng.random() < 0.03 else repr(float(v)) for v in steps]
            series.append((f'lat_bucket{{h="{h}", le="{le}"}}', " ".join(tokens)))
    phis = ["0", "0.1", "0.5", "0.75", "0.9", "0.99", "1"]
    queries = [(f"histogram_quantile({phi}, lat_bucket)", int(t) * MINUTE) for phi in phis for t in (0, 5, 11)]
    queries += [
        (f"histogram_quantile({phi}, rate(lat_bucket[{r}]))", int(t) * MINUTE)
        for phi in phis
        for r in ("3m", "5m")
        for t in (2, 6, 11)
    ]
    return series, queries, MINUTE


@pytest.mark.parametrize("seed", range(3))
def test_random_histograms_agree_with_promtool(seed: int, promtool: str) -> None:
    assert mismatches(*_random_histograms(seed)) == []


# --- Fast cases: answers promtool gave, hard-coded. -----------------------------------------

SEMAPHORE = "worker_handler_semaphore_wait_ms_bucket"
SEMAPHORE_BUCKETS: Series = [
    (f'{SEMAPHORE}{{le="10"}}', "50"),
    (f'{SEMAPHORE}{{le="100"}}', "90"),
    (f'{SEMAPHORE}{{le="1000"}}', "99"),
    (f'{SEMAPHORE}{{le="+Inf"}}', "100"),
]
LATENCY_BUCKETS: Series = [
    ('http_request_duration_seconds_bucket{le="0.1"}', "0+30x10"),
    ('http_request_duration_seconds_bucket{le="0.5"}', "0+50x10"),
    ('http_request_duration_seconds_bucket{le="+Inf"}', "0+60x10"),
]
# (what it shows, input series at 1m intervals, expression, eval time ms, answer)
FAST_CASES: list[tuple[str, Series, str, int, Result]] = [
    ("steady counter", [("c", "0+60x10")], "rate(c[5m])", 10 * MINUTE, {(): 1.0}),
    ("extrapolated to both range ends", [("c", "0+60x10")], "increase(c[5m])", 330_000, {(): 300.0}),
    ("two resets corrected", [("c", "10 20 30 5 15 25")], "increase(c[5m])", 5 * MINUTE, {(): 45.0}),
    ("rate of that", [("c", "10 20 30 5 15 25")], "rate(c[5m])", 5 * MINUTE, {(): 0.15000000000000002}),
    ("delta ignores resets", [("c", "10 20 30 5 15 25")], "delta(c[5m])", 5 * MINUTE, {(): 15.0}),
    ("irate after a reset is the new value", [("c", "10 20 30 5 15 25")], "irate(c[5m])", 3 * MINUTE, {(): 5 / 60}),
    ("idelta after a reset", [("c", "10 20 30 5 15 25")], "idelta(c[5m])", 3 * MINUTE, {(): -25.0}),
    ("start extrapolated to zero", [("c", "1+10x3")], "increase(c[10m])", 3 * MINUTE, {(): 31.000000000000004}),
    ("start extrapolated half an interval", [("c", "100+10x3")], "increase(c[10m])", 3 * MINUTE, {(): 35.0}),
    ("stale marker is not a sample", [("c", "0+10x4 stale 100+10x4")], "increase(c[5m])", 7 * MINUTE, {(): 90.0}),
    ("one sample: no result", [("c", "0+10x4 stale 100+10x4")], "rate(c[1m])", 5 * MINUTE, {}),
    ("irate after the series ended", [("c", "0+10x4 stale")], "irate(c[5m])", 5 * MINUTE, {(): 10 / 60}),
    ("range closed at both ends", [("c", "0+10x4")], "rate(c[1m])", 3 * MINUTE, {(): 10 / 60}),
    ("range a little short", [("c", "0+10x4")], "rate(c[59s])", 3 * MINUTE, {}),
    ("offset", [("c", "0+10x10")], "rate(c[5m] offset 3m)", 10 * MINUTE, {(): 0.16666666666666669}),
    ("offset and short range", [("c", "0+10x10")], "increase(c[2m] offset 1m)", 5 * MINUTE, {(): 20.0}),
    ("missing samples", [("c", "0 _x3 40 50")], "rate(c[5m])", 5 * MINUTE, {(): 0.16666666666666669}),
    ("name dropped, labels kept", [('c{job="a"}', "0+60x5")], "rate(c[5m])", 5 * MINUTE, {(("job", "a"),): 1.0}),
    ("quantile at a bucket bound", SEMAPHORE_BUCKETS, f"histogram_quantile(0.9, {SEMAPHORE})", 0, {(): 100.0}),
    ("quantile interpolated", SEMAPHORE_BUCKETS, f"histogram_quantile(0.7, {SEMAPHORE})", 0, {(): 55.0}),
    ("in the +Inf bucket", SEMAPHORE_BUCKETS, f"histogram_quantile(0.995, {SEMAPHORE})", 0, {(): 1000.0}),
    ("φ < 0", SEMAPHORE_BUCKETS, f"histogram_quantile(-1, {SEMAPHORE})", 0, {(): -math.inf}),
    ("φ > 1", SEMAPHORE_BUCKETS, f"histogram_quantile(2, {SEMAPHORE})", 0, {(): math.inf}),
    ("φ NaN", SEMAPHORE_BUCKETS, f"histogram_quantile(NaN, {SEMAPHORE})", 0, {(): math.nan}),
    ("no +Inf bucket", SEMAPHORE_BUCKETS[:3], f"histogram_quantile(0.5, {SEMAPHORE})", 0, {(): math.nan}),
    ("no +Inf bucket, φ < 0", SEMAPHORE_BUCKETS[:3], f"histogram_quantile(-1, {SEMAPHORE})", 0, {(): -math.inf}),
    (
        "count below its predecessor raised",
        [('b{le="1"}', "10"), ('b{le="2"}', "8"), ('b{le="+Inf"}', "12")],
        "histogram_quantile(0.75, b)",
        0,
        {(): 0.9},
    ),
    (
        "negative bucket bounds",
        [('n{le="-5"}', "4"), ('n{le="0"}', "6"), ('n{le="+Inf"}', "8")],
        "histogram_quantile(0.6, n)",
        0,
        {(): -3.0000000000000004},
    ),
    ("equal bounds merged", [('d{le="1"}', "2"), ('d{le="1.0"}', "2"), ('d{le="+Inf"}', "8")], "histogram_quantile(0.25, d)", 0, {(): 0.5}),
    (
        "equal bounds merged before dips are raised",
        [('d{le="1"}', "2"), ('d{le="1.0"}', "3"), ('d{le="2"}', "4"), ('d{le="+Inf"}', "6")],
        "histogram_quantile(0.75, d)",
        0,
        {(): 0.9},
    ),
    (
        "a NaN first count: no dip is raised",
        [('d{le="0.5"}', "NaN"), ('d{le="1"}', "4"), ('d{le="2"}', "10"), ('d{le="3"}', "6"), ('d{le="+Inf"}', "8")],
        "histogram_quantile(0.75, d)",
        0,
        {(): 1.3333333333333333},
    ),
    ("no observations", [('z{le="1"}', "0"), ('z{le="+Inf"}', "0")], "histogram_quantile(0.5, z)", 0, {(): math.nan}),
    ("over rates", LATENCY_BUCKETS, "histogram_quantile(0.9, rate(http_request_duration_seconds_bucket[5m]))", 10 * MINUTE, {(): 0.5}),
    (
        "two histograms that differ only in name",
        [('x_bucket{le="+Inf"}', "1"), ('y_bucket{le="+Inf"}', "1")],
        'histogram_quantile(0.5, {__name__=~"x_bucket|y_bucket"})',
        0,
        "vector cannot contain metrics with the same labelset",
    ),
]
_FAST_IDS = [case[0] for case in FAST_CASES]


@pytest.mark.parametrize(("what", "series", "expr", "t_ms", "answer"), FAST_CASES, ids=_FAST_IDS)
def test_fast_case(what: str, series: Series, expr: str, t_ms: int, answer: Result) -> None:
    (got,) = headroom_results(series, [(expr, t_ms)], MINUTE)
    assert same_result(got, answer), got


def test_fast_case_answers_are_promtools(promtool: str) -> None:
    wrong = table_disagreements(FAST_CASES, same_result, MINUTE)
    assert wrong == []


# The checked-in promtool rule tests (tests/promtool/) run through promtool and
# `headroom test-rules` in tests/unit/test_rule_tests.py.


# --- Compilation. ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("x[5m]", "range vector selector"),
    ],
)
def test_unsupported_is_refused_at_compile_time(expr: str, message: str) -> None:
    with pytest.raises(UnsupportedExpression, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_expr(expr)


@pytest.mark.parametrize(
    ("expr", "reach_ms"),
    [
        ("rate(x[5m])", 300_000),
        ("rate((x[5m]))", 300_000),
        ("irate(x[90s] offset 1m)", 150_000),
        ("histogram_quantile(0.9, rate(x_bucket[10m] offset 5m))", 900_000),
        ("histogram_quantile(0.9, x_bucket offset 2m)", 120_000),
        ("rate(x[5m]) / delta(y[15m])", 900_000),
    ],
)
def test_reach_is_range_plus_offset(expr: str, reach_ms: int) -> None:
    assert compile_expr(expr).reach_ms() == reach_ms


# --- The store's range windows. --------------------------------------------------------------

STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]


@settings(max_examples=200, deadline=None)
@given(
    batches=st.lists(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 400), st.sampled_from([1.0, 2.0, -3.5, STALE])),
            min_size=1,
            max_size=30,
        ),
        min_size=1,
        max_size=8,
    ),
    retention=st.integers(10, 200),
    start_back=st.integers(0, 200),
    range_ms=st.integers(0, 200),
)
def test_window_is_the_samples_in_the_closed_range(
    batches: list[list[tuple[int, int, float]]], retention: int, start_back: int, range_ms: int
) -> None:
    """Whatever the ring's wrapping and growth, a window within retention holds exactly its samples."""
    store = SeriesStore(retention_ms=retention, initial_capacity=2, initial_rows=2)
    kept: dict[int, list[tuple[int, float]]] = {}
    for batch in batches:
        store.append(SampleBatch.from_series([((("s", str(s)),), [(t, v)]) for s, t, v in batch]))
        for s, t, v in batch:  # appended in the order sent, as Prometheus does
            if not kept.get(s) or t > kept[s][-1][0]:
                kept.setdefault(s, []).append((t, v))
    newest = max(t for batch in batches for _, t, _ in batch)
    # Only samples no older than newest - retention are guaranteed to be kept.
    t_ms = newest - min(start_back, retention)
    range_ms = min(range_ms, t_ms - (newest - retention))
    rows = np.arange(len(store))
    stamps, values, counts = store.window(rows, t_ms, range_ms)
    for row, labels in enumerate(store.labels):
        want = [
            (t, v)
            for t, v in kept[int(labels[0][1])]
            if t_ms - range_ms <= t <= t_ms and not np.isnan(v)
        ]
        n = counts[row]
        assert list(zip(stamps[row, :n].tolist(), values[row, :n].tolist())) == want
        assert (stamps[row, n:] == np.iinfo(np.int64).min).all()


def test_rate_on_a_wrapped_ring_is_rate_on_all_samples() -> None:
    """Streaming 2 hours through a store sized as the engine sizes it changes no rate."""
    expr = "rate(c[5m] offset 1m)"
    node = compile_expr(expr)
    streamed = SeriesStore(retention_ms=DEFAULT_LOOKBACK_MS + node.reach_ms(), initial_capacity=2)
    values = expand_values("0+7x200 3+11x279")
    series: Series = [("c", " ".join(repr(v) for v in values))]
    complete = load_store(series, 15_000)
    for i, value in enumerate(values):
        streamed.append(SampleBatch.from_series([((("__name__", "c"),), [(i * 15_000, value)])]))
        t = i * 15_000
        ours = node.evaluate(EvalContext(streamed, t))
        assert same_result(dict(ours.samples()), dict(node.evaluate(EvalContext(complete, t)).samples())), t
    assert streamed.capacity < len(values)


def test_histogram_quantile_reuses_a_bucket_layout_only_for_the_same_series_of_the_same_store():
    # One compiled node serves every partition of a worker: its cached layout per store must
    # follow a store's series as they come and go, and never leak into another store.
    node = compile_expr("histogram_quantile(0.5, wait_bucket)")

    def buckets(job: str, counts: dict[str, float], t: int) -> list:
        return [((("__name__", "wait_bucket"), ("job", job), ("le", le)), [(t, n)]) for le, n in counts.items()]

    a, b = SeriesStore(retention_ms=600_000), SeriesStore(retention_ms=600_000)
    a.append(SampleBatch.from_series(buckets("x", {"1": 10.0, "2": 20.0, "+Inf": 20.0}, 0)))
    b.append(SampleBatch.from_series(buckets("y", {"10": 5.0, "+Inf": 10.0}, 0)))

    def evaluate(store: SeriesStore, t: int) -> list:
        return sorted(node.evaluate(EvalContext(store, t_ms=t)).samples())

    assert evaluate(a, 0) == [((("job", "x"),), 1.0)]
    assert evaluate(b, 0) == [((("job", "y"),), 10.0)]  # the other store's own layout
    assert evaluate(a, 0) == [((("job", "x"),), 1.0)]
    a.append(SampleBatch.from_series(buckets("z", {"4": 0.0, "8": 4.0, "+Inf": 4.0}, 1000)))
    assert evaluate(a, 1000) == [((("job", "x"),), 1.0), ((("job", "z"),), 6.0)]  # a new histogram appears
    a.append(SampleBatch.from_series(buckets("x", {"1": 0.0, "2": 20.0, "+Inf": 20.0}, 2000)))
    assert evaluate(a, 2000)[0] == ((("job", "x"),), 1.5)  # same layout, new counts
