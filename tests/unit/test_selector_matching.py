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
