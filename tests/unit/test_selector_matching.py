"""Selectors find their series among new, retired and reused rows of a store.

Selectors with a metric-name matcher narrow the new rows by a name index the
store's selectors share; these tests hold that to a brute-force match of every
live series, over rounds of new series, retirements and reused rows, with
selectors asked at different moments (so each catches up from its own point).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from detector.labels import canonical_bytes
from detector.promql.plan import SelectorNode
from detector.promql import compile_expr
from detector.store import SeriesStore

SELECTORS = ['up', 'up{job="a"}', 'x{job!="a"}', '{__name__=~"u.*"}', '{__name__="up", __name__!="x", job=~"a|b"}',
             '{job="b"}', 'nothing_named_so']


def brute_force(store: SeriesStore, selector: SelectorNode) -> list[int]:
    return [row for row, labels in enumerate(store.labels) if labels is not None and selector._match(labels)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(st.sampled_from(["up", "x", "y"]), st.sampled_from(["a", "b", "c"]),
                                             st.integers(0, 30)), max_size=12),
                          st.lists(st.integers(0, 40), max_size=5),
                          st.lists(st.sampled_from(range(len(SELECTORS))), max_size=4)),
                min_size=1, max_size=6))
def test_selectors_match_what_a_brute_force_match_finds(rounds):
    store = SeriesStore(retention_ms=60_000)
    selectors = [compile_expr(text) for text in SELECTORS]
    for new, retire, asked in rounds:
        store.series_ids([canonical_bytes((("__name__", name), ("i", str(i)), ("job", job))) for name, job, i in new])
        live = [row for row in retire if row < len(store.labels) and store.labels[row] is not None]
        if live:
            store.retire(np.array(live))
        for k in asked:  # only some selectors look each round: the others catch up later
            assert sorted(selectors[k].rows(store).tolist()) == brute_force(store, selectors[k]), SELECTORS[k]
    for selector, text in zip(selectors, SELECTORS):
        assert sorted(selector.rows(store).tolist()) == brute_force(store, selector), text


def test_a_snapshot_loaded_into_the_store_is_read_afresh():
    """The selectors, name index and binary operators remember what they matched per store. A snapshot
    loaded into that same store can hold other series under the same counts (here one series each,
    assigned once): every cache must start again, not answer with the old series' labels."""
    from detector.promql.plan import EvalContext
    from detector.snapshot import apply, capture, decode, encode
    from detector.wire.batch import SampleBatch

    def store_of(pod: str, value: float) -> SeriesStore:
        store = SeriesStore(retention_ms=600_000)
        store.append(SampleBatch.from_series([((("__name__", "up"), ("pod", pod)), [(1000, value)])]))
        return store

    live, other = store_of("a", 1.0), store_of("b", 2.0)
    exprs = ["up", 'up{pod=~"."}', "up * 2", "up > bool 0", "up and up", "rate(up[5m]) or up", "up - ignoring(x) up"]
    nodes = [compile_expr(text) for text in exprs]
    before = [dict(node.evaluate(EvalContext(live, 2000)).samples()) for node in nodes]
    assert before[0] == {(("__name__", "up"), ("pod", "a")): 1.0}
    apply(live, decode(encode(capture(other))))
    for text, node in zip(exprs, nodes):
        fresh = compile_expr(text).evaluate(EvalContext(other, 2000))
        assert dict(node.evaluate(EvalContext(live, 2000)).samples()) == dict(fresh.samples()), text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y"]), st.integers(0, 9),
                          st.sampled_from([0.0, 1.0, 2.0, -1.0])), min_size=1, max_size=40))
def test_a_plan_reused_tick_after_tick_answers_as_a_fresh_one(samples):
    """Selectors, range functions and binary operators reuse what they matched while their inputs'
    label sets stay the same; series that come and go between ticks (a sample missing for longer than
    the lookback) change them. Each tick's answer must equal a newly compiled plan's."""
    from detector.promql.plan import EvalContext, EvaluationError
    from detector.wire.batch import SampleBatch

    store = SeriesStore(retention_ms=3_600_000)
    series: dict = {}
    for pod, job, minute, value in samples:
        series.setdefault((("__name__", "up"), ("job", job), ("pod", pod)), {})[minute * 60_000] = value
    store.append(SampleBatch.from_series([(labels, sorted(points.items())) for labels, points in series.items()]))
    exprs = ["up", "up * 2", "up > bool 0", "up > 0", "up and on(pod) up{job=\"x\"}", "up{job=\"y\"} or up",
             "up unless on(job) up{pod=\"a\"}", "up / on(pod) group_left up{job=\"x\"}", "sum by (job) (rate(up[2m]))",
             "delta(up[3m])", "up{job=\"x\"} - on(pod) up{job=\"y\"}", "count(up) by (pod) * on(pod) group_left up"]
    kept = [compile_expr(text) for text in exprs]

    def answer(node, t_ms):
        try:
            value = node.evaluate(EvalContext(store, t_ms, lookback_ms=60_000))
        except EvaluationError as exc:
            return str(exc)
        return sorted((labels, repr(v)) for labels, v in value.samples())  # NaN equals NaN here

    for minute in range(11):
        t_ms = minute * 60_000 + 30_000
        for text, node in zip(exprs, kept):
            assert answer(node, t_ms) == answer(compile_expr(text), t_ms), (text, minute)
