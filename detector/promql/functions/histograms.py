"""``histogram_quantile(φ, buckets)`` over classic cumulative ``le`` buckets."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from operator import is_

import numpy as np

from detector.labels import Labels
from detector.promql.functions.common import drop_name
from detector.promql.go_compat import go_parse_float
from detector.promql.plan import EvalContext, EvaluationError, Node
from detector.promql.values import InstantVector, Scalar, Value


@lru_cache(maxsize=1 << 16)
def _bucket(labels: Labels) -> tuple[Labels, Labels, float] | None:
    """(group key, result labels, upper bound) of a bucket sample; None without a valid ``le``.

    The group key keeps the metric name, as Prometheus 2.42 does: buckets of
    two metrics with otherwise equal labels are separate histograms (whose
    results then collide).
    """
    le = dict(labels).get("le")
    bound = None if le is None else go_parse_float(le)
    if bound is None:
        return None
    return *_group(tuple(p for p in labels if p[0] != "le")), bound


@lru_cache(maxsize=1 << 16)
def _group(key: Labels) -> tuple[Labels, Labels]:
    """(group key, result labels) of a histogram: one copy for all its buckets, which the bucket
    cache above holds one entry each for (about a tenth of the memory of a copy per bucket)."""
    return key, drop_name(key)


@dataclass(eq=False)
class HistogramQuantileNode(Node):
    """``histogram_quantile(φ, buckets)`` over classic cumulative ``le`` buckets.

    >>> from detector.wire.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> from detector.store import SeriesStore
    >>> store = SeriesStore(retention_ms=600_000)
    >>> counts = {"0.1": 50.0, "0.5": 90.0, "+Inf": 100.0}
    >>> _ = store.append(SampleBatch.from_series(
    ...     [((("__name__", "wait_bucket"), ("le", le)), [(0, n)]) for le, n in counts.items()]))
    >>> node = compile_expr("histogram_quantile(0.7, wait_bucket)")
    >>> list(node.evaluate(EvalContext(store, t_ms=0)).samples())
    [((), 0.30000000000000004)]
    """

    phi: Node
    buckets: Node
    kind = "vector"

    def reach_ms(self) -> int:
        return max(self.phi.reach_ms(), self.buckets.reach_ms())

    def evaluate(self, ctx: EvalContext) -> Value:
        phi = self.phi.evaluate(ctx)
        assert isinstance(phi, Scalar)  # the parser type-checks φ
        vector = self.buckets.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        layout = self._layout(ctx, vector.labels)
        if layout is None:
            return InstantVector.empty()
        if layout.duplicate_results:
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        return InstantVector(layout.result_labels, layout.quantiles(phi.value, vector.values))

    def _layout(self, ctx: EvalContext, labels: list[Labels]) -> _BucketLayout | None:
        """The buckets' grouping, kept per store while the selector returns the same label sets.

        A partition's bucket series are the same objects from one evaluation to the next,
        so checking identity (in C) replaces taking every label set apart again, which
        cost more than the rest of the evaluation. The layout is a function of the label
        sets alone, so an identity match can never give a wrong one.
        """
        cache = self.__dict__.setdefault("_layouts", {})
        hit = cache.get(id(ctx.store))
        if hit is not None and len(hit[0]) == len(labels) and all(map(is_, hit[0], labels)):
            return hit[1]
        layout = _BucketLayout.build(labels)
        if len(cache) >= _LAYOUTS_KEPT:
            cache.pop(next(iter(cache)))
        cache[id(ctx.store)] = (list(labels), layout)
        return layout


_LAYOUTS_KEPT = 256
"""Stores (partitions) whose bucket layout one node keeps: more than a worker holds."""


@dataclass(eq=False)
class _BucketLayout:
    """Which samples are buckets of which histogram, sorted once: what ``histogram_quantile`` needs
    besides the counts."""

    take: np.ndarray  # the vector's samples that are buckets (a parseable le)
    result_labels: list[Labels]
    duplicate_results: bool
    order: np.ndarray  # take's samples sorted by (histogram, bound)
    starts: np.ndarray  # first of each run of equal (histogram, bound): le="1" and le="1.0" add up
    group_of: np.ndarray  # histogram of each distinct bucket, sorted
    upper: np.ndarray  # bounds, one row per histogram (NaN after its last)
    top: np.ndarray  # index of each histogram's last bucket

    @classmethod
    def build(cls, labels: list[Labels]) -> _BucketLayout | None:
        groups: dict[Labels, int] = {}
        result_labels: list[Labels] = []
        group_of: list[int] = []
        bounds: list[float] = []
        take: list[int] = []
        for i, one in enumerate(labels):
            bucket = _bucket(one)
            if bucket is None:
                continue  # Prometheus skips a sample without a parseable le
            key, unnamed, bound = bucket
            g = groups.setdefault(key, len(groups))
            if g == len(result_labels):
                result_labels.append(unnamed)
            group_of.append(g)
            bounds.append(bound)
            take.append(i)
        if not groups:
            return None
        groups_of, bounds_of = np.asarray(group_of), np.asarray(bounds, dtype=np.float64)
        order = np.lexsort((bounds_of, groups_of))
        groups_of, bounds_of = groups_of[order], bounds_of[order]
        starts = np.flatnonzero(np.r_[True, (groups_of[1:] != groups_of[:-1]) | (bounds_of[1:] != bounds_of[:-1])])
        groups_of, bounds_of = groups_of[starts], bounds_of[starts]
        n_groups = len(groups)
        return cls(np.asarray(take, dtype=np.int64), result_labels, len(set(result_labels)) != len(result_labels),
                   order, starts, groups_of, _by_group(groups_of, bounds_of, n_groups, np.nan),
                   np.bincount(groups_of, minlength=n_groups) - 1)

    def quantiles(self, phi: float, values: np.ndarray) -> np.ndarray:
        """φ-quantile of each histogram from the vector's values, by linear interpolation within a bucket."""
        n_groups = len(self.result_labels)
        if np.isnan(phi):
            return np.full(n_groups, np.nan)
        if phi < 0 or phi > 1:
            return np.full(n_groups, -np.inf if phi < 0 else np.inf)
        counts = np.add.reduceat(values[self.take][self.order], self.starts)
        upper, top = self.upper, self.top
        cumulative = _by_group(self.group_of, counts, n_groups, -np.inf)
        # Scraped buckets are not read atomically, so a count may dip below the
        # one before it: raise it to the running maximum. A NaN count stays NaN
        # and leaves the maximum alone; Prometheus 2.42 starts the maximum at the
        # first count, so a NaN there leaves the whole histogram as it is.
        fixed = np.where(np.isnan(cumulative), np.nan, np.fmax.accumulate(cumulative, axis=1))
        cumulative = np.where(np.isnan(cumulative[:, :1]), cumulative, fixed)
        pick = np.arange(n_groups)
        total = cumulative[pick, top]
        rank = phi * total
        # The first bucket (of all but the +Inf one) whose count reaches the rank,
        # found by the same bisection as Go's sort.Search, so NaN counts land alike.
        low, high = np.zeros(n_groups, dtype=np.int64), top.copy()
        while np.any(low < high):
            mid = (low + high) >> 1
            reached = cumulative[pick, mid] >= rank
            active = low < high
            low = np.where(active & ~reached, mid + 1, low)
            high = np.where(active & reached, mid, high)
        b = low
        prev = np.maximum(b - 1, 0)
        has_prev = b > 0
        start = np.where(has_prev, upper[pick, prev], 0.0)
        end = upper[pick, b]
        count = np.where(has_prev, cumulative[pick, b] - cumulative[pick, prev], cumulative[pick, b])
        rank = np.where(has_prev, rank - cumulative[pick, prev], rank)
        with np.errstate(all="ignore"):
            result = start + (end - start) * (rank / count)
        result = np.where(~has_prev & (end <= 0), end, result)
        result = np.where(b == top, upper[pick, np.maximum(top - 1, 0)], result)
        undefined = (upper[pick, top] != np.inf) | (top < 1) | (total == 0)
        return np.where(undefined, np.nan, result)


def _by_group(group_of: np.ndarray, values: np.ndarray, n_groups: int, fill: float) -> np.ndarray:
    """One row per group, its values from column 0 on (entries sorted by group), ``fill`` after them."""
    sizes = np.bincount(group_of, minlength=n_groups)
    column = np.arange(len(group_of)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    out = np.full((n_groups, int(sizes.max())), fill)
    out[group_of, column] = values
    return out
