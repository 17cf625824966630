"""PromQL functions: the range functions over ``x[5m]`` and ``histogram_quantile``.

Semantics are Prometheus 2.42's (``promql/functions.go``, ``quantile.go``),
checked against ``promtool test rules``: a range holds the samples in
[t - offset - range, t - offset], staleness markers excluded; fewer than two
samples give no result; results drop the metric name. Arithmetic is done in
the same order as Prometheus does it, so results match it bit for bit.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from detector.labels import METRIC_NAME, Labels
from detector.promql.plan import EvalContext, EvaluationError, Node, SelectorNode
from detector.promql.values import InstantVector, Scalar, Value
from detector.store import SeriesStore

RangeKernel = Callable[[np.ndarray, np.ndarray, np.ndarray, int, int], np.ndarray]
"""(stamps, values, counts, range end ms, range ms) -> one value per row; every row has two samples or more."""


def _range_seconds(range_ms: int) -> float:
    # Go's Duration.Seconds(): whole seconds plus the nanosecond rest, each as a float.
    return float(range_ms // 1000) + float(range_ms % 1000 * 1_000_000) / 1e9


def _extrapolated(counter: bool, per_second: bool) -> RangeKernel:
    """``rate`` / ``increase`` / ``delta``: the first-to-last change, extrapolated to the range ends."""

    def kernel(stamps: np.ndarray, values: np.ndarray, counts: np.ndarray, end: int, range_ms: int) -> np.ndarray:
        pick = np.arange(len(counts))
        last = counts - 1
        first_t, last_t = stamps[:, 0], stamps[pick, last]
        first_v, last_v = values[:, 0], values[pick, last]
        result = last_v - first_v
        if counter:
            # A drop is a counter reset: add back the value before it, one
            # reset at a time in time order, as Prometheus sums them.
            drops = (values[:, 1:] < values[:, :-1]) & (np.arange(1, values.shape[1]) < counts[:, None])
            for j in np.flatnonzero(drops.any(axis=0)):
                result = np.where(drops[:, j], result + values[:, j], result)
        to_start = (first_t - (end - range_ms)) / 1000
        to_end = (end - last_t) / 1000
        sampled = (last_t - first_t) / 1000
        average = sampled / (counts - 1)
        if counter:
            # A counter cannot have been below zero: do not extrapolate the
            # start past the point where the slope reaches zero.
            to_zero = sampled * (first_v / result)
            to_start = np.where((result > 0) & (first_v >= 0) & (to_zero < to_start), to_zero, to_start)
        threshold = average * 1.1
        # Extrapolate to a range end only if a sample was due there; else by half an interval.
        span = sampled + np.where(to_start < threshold, to_start, average / 2)
        span = span + np.where(to_end < threshold, to_end, average / 2)
        factor = span / sampled
        if per_second:
            factor = factor / _range_seconds(range_ms)
        return result * factor

    return kernel


def _instant(per_second: bool) -> RangeKernel:
    """``irate`` / ``idelta``: the change between the last two samples."""

    def kernel(stamps: np.ndarray, values: np.ndarray, counts: np.ndarray, end: int, range_ms: int) -> np.ndarray:
        pick = np.arange(len(counts))
        last, before = counts - 1, counts - 2
        last_v, before_v = values[pick, last], values[pick, before]
        if not per_second:
            return last_v - before_v
        result = np.where(last_v < before_v, last_v, last_v - before_v)  # a drop is a counter reset
        return result / ((stamps[pick, last] - stamps[pick, before]) / 1000)

    return kernel


RANGE_FUNCTIONS: dict[str, RangeKernel] = {
    "rate": _extrapolated(counter=True, per_second=True),
    "increase": _extrapolated(counter=True, per_second=False),
    "delta": _extrapolated(counter=False, per_second=False),
    "irate": _instant(per_second=True),
    "idelta": _instant(per_second=False),
}


@dataclass(eq=False)
class RangeFunctionNode(Node):
    """A range function of a range selector, such as ``rate(http_requests_total[5m] offset 1m)``.

    >>> from detector.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> store = SeriesStore(retention_ms=600_000)
    >>> requests = (("__name__", "requests_total"), ("job", "api"))
    >>> _ = store.append(SampleBatch.from_series([(requests, [(t, t / 500) for t in range(0, 300_001, 15_000)])]))
    >>> node = compile_expr("rate(requests_total[5m])")
    >>> list(node.evaluate(EvalContext(store, t_ms=300_000)).samples())
    [((('job', 'api'),), 2.0)]
    >>> node.reach_ms()
    300000
    """

    name: str
    selector: SelectorNode
    range_ms: int
    kind = "vector"
    # Per store: each selected row's labels without the metric name, and
    # whether two of those rows collide (only then must results be checked).
    _unnamed: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def __post_init__(self) -> None:
        self._kernel = RANGE_FUNCTIONS[self.name]

    def reach_ms(self) -> int:
        return self.range_ms + self.selector.offset_ms

    def evaluate(self, ctx: EvalContext) -> Value:
        rows = self.selector.rows(ctx.store)
        end = ctx.t_ms - self.selector.offset_ms
        stamps, values, counts = ctx.store.window(rows, end, self.range_ms)
        keep = np.flatnonzero(counts >= 2)  # fewer than two samples: no result
        if len(keep) == 0:
            return InstantVector.empty()
        with np.errstate(all="ignore"):  # inf and NaN arise as in Go's float arithmetic
            result = self._kernel(stamps[keep], values[keep], counts[keep], end, self.range_ms)
        unnamed, collide = self._labels(ctx.store, rows)
        out = InstantVector([unnamed[i] for i in keep], result)
        if collide and len(set(out.labels)) != len(out):
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        return out

    def _labels(self, store: SeriesStore, rows: np.ndarray) -> tuple[list[Labels], bool]:
        # Selected rows only ever grow at the end, so the cache is extended, never rebuilt.
        unnamed, collide = self._unnamed.get(store, ([], False))
        if len(unnamed) < len(rows):
            unnamed = unnamed + [_drop_name(store.labels[r]) for r in rows[len(unnamed) :]]
            collide = len(set(unnamed)) != len(unnamed)
            self._unnamed[store] = (unnamed, collide)
        return unnamed, collide


# Go's strconv.ParseFloat syntax: decimal or hex (0x..p..) with optional "_"
# digit separators, signed inf / infinity, unsigned nan, in any case. Python's
# float() accepts other things (whitespace, "+nan") and not hex, and Go refuses
# an overflow where Python gives inf, so the syntax is checked here first.
_DIGITS = r"[0-9](?:_?[0-9])*"
_HEX_DIGITS = r"[0-9a-f](?:_?[0-9a-f])*"
_GO_FLOAT = re.compile(
    rf"[+-]?(?:(?P<dec>(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:e[+-]?{_DIGITS})?)"
    rf"|(?P<hex>0x_?(?:{_HEX_DIGITS}(?:\.(?:{_HEX_DIGITS})?)?|\.{_HEX_DIGITS})p[+-]?{_DIGITS})"
    r"|inf|infinity)|nan",
    re.IGNORECASE,
)


def _go_float(text: str) -> float | None:
    """The value Go's ``strconv.ParseFloat(text, 64)`` returns, or None where it fails."""
    match = _GO_FLOAT.fullmatch(text)
    if match is None:
        return None
    if match["dec"] is None and match["hex"] is None:
        return float(text)
    digits = text.replace("_", "")
    try:
        value = float.fromhex(digits) if match["hex"] else float(digits)
    except OverflowError:
        return None
    return None if np.isinf(value) else value


@lru_cache(maxsize=1 << 16)
def _bucket(labels: Labels) -> tuple[Labels, Labels, float] | None:
    """(group key, result labels, upper bound) of a bucket sample; None without a valid ``le``.

    The group key keeps the metric name, as Prometheus 2.42 does: buckets of
    two metrics with otherwise equal labels are separate histograms (whose
    results then collide).
    """
    le = dict(labels).get("le")
    bound = None if le is None else _go_float(le)
    if bound is None:
        return None
    key = tuple(p for p in labels if p[0] != "le")
    return key, _drop_name(key), bound


@dataclass(eq=False)
class HistogramQuantileNode(Node):
    """``histogram_quantile(φ, buckets)`` over classic cumulative ``le`` buckets.

    >>> from detector.batch import SampleBatch
    >>> from detector.promql import compile_expr
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
        groups: dict[Labels, int] = {}
        result_labels: list[Labels] = []
        group_of: list[int] = []
        bounds: list[float] = []
        take: list[int] = []
        for i, labels in enumerate(vector.labels):
            bucket = _bucket(labels)
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
            return InstantVector.empty()
        quantiles = _quantiles(
            phi.value,
            np.asarray(group_of),
            np.asarray(bounds, dtype=np.float64),
            vector.values[take],
            len(groups),
        )
        if len(set(result_labels)) != len(result_labels):
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        return InstantVector(result_labels, quantiles)


def _quantiles(phi: float, group_of: np.ndarray, bounds: np.ndarray, counts: np.ndarray, n_groups: int) -> np.ndarray:
    """φ-quantile of each group of cumulative buckets, by linear interpolation within a bucket."""
    if np.isnan(phi):
        return np.full(n_groups, np.nan)
    if phi < 0 or phi > 1:
        return np.full(n_groups, -np.inf if phi < 0 else np.inf)
    order = np.lexsort((bounds, group_of))
    group_of, bounds, counts = group_of[order], bounds[order], counts[order]
    # Buckets with the same bound (le="1" and le="1.0") are one bucket: add them up.
    starts = np.flatnonzero(np.r_[True, (group_of[1:] != group_of[:-1]) | (bounds[1:] != bounds[:-1])])
    group_of, bounds, counts = group_of[starts], bounds[starts], np.add.reduceat(counts, starts)
    upper = _by_group(group_of, bounds, n_groups, np.nan)
    cumulative = _by_group(group_of, counts, n_groups, -np.inf)
    # Scraped buckets are not read atomically, so a count may dip below the
    # one before it: raise it to the running maximum. A NaN count stays NaN
    # and leaves the maximum alone; Prometheus 2.42 starts the maximum at the
    # first count, so a NaN there leaves the whole histogram as it is.
    fixed = np.where(np.isnan(cumulative), np.nan, np.fmax.accumulate(cumulative, axis=1))
    cumulative = np.where(np.isnan(cumulative[:, :1]), cumulative, fixed)
    pick = np.arange(n_groups)
    top = np.bincount(group_of, minlength=n_groups) - 1
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


def _drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != METRIC_NAME)


__all__ = ["RANGE_FUNCTIONS", "HistogramQuantileNode", "RangeFunctionNode"]
