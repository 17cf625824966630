"""Range functions of a range selector (``f(x[5m] offset 1m)``): rate, increase,
delta, irate, idelta, deriv, predict_linear, changes, resets and the
*_over_time family (absent_over_time is in :mod:`.absent`).

A range holds the samples in [t - offset - range, t - offset], staleness
markers excluded (of a subquery, ``f(expr[5m:1m])``, the inner expression's
results at the steps in that range, see :mod:`detector.promql.subquery`); a series with too few samples there (two for rate, deriv and
the like, one for the others) has no result. All drop the metric name but
last_over_time.

Every kernel takes a :class:`Window` (the samples of the series that have a
result, and the function's scalar argument) and returns one value per row.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from detector.labels import Labels
from detector.promql.functions.common import drop_name, unique
from detector.promql.go_compat import duration_seconds
from detector.promql.plan import EvalContext, EvaluationError, Node, SelectorMatches, SelectorNode
from detector.promql.subquery import SubqueryNode
from detector.promql.values import InstantVector, Scalar, Value
from detector.store import SeriesStore


@dataclass(frozen=True, slots=True)
class Window:
    """The samples of the series a range function has a result for, and what else it may need.

    Row i's samples fill the first ``counts[i]`` columns of ``stamps`` and
    ``values`` (NaN after them: mask with ``counts``, never with isnan).
    """

    stamps: np.ndarray
    values: np.ndarray
    counts: np.ndarray
    end: int  # range end: evaluation time minus offset
    range_ms: int
    t_ms: int  # evaluation time
    param: float  # the scalar argument (predict_linear's t, quantile_over_time's φ), else NaN

    def columns(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(j, sample j of each row, whether row j has one), oldest first."""
        for j in range(self.values.shape[1]):
            yield j, self.values[:, j], j < self.counts


RangeKernel = Callable[[Window], np.ndarray]
"""A range function's computation: one value per row of the window; rows have ``min_samples`` samples or more."""


@dataclass(frozen=True)
class RangeFunction:
    """A range function: its kernel, and how its call and result differ from the usual.

    >>> RangeFunction(rate, min_samples=2).keeps_name
    False
    """

    kernel: RangeKernel
    min_samples: int = 1  # fewer samples in the range: no result for the series
    keeps_name: bool = False  # only last_over_time keeps the metric name (2.42)
    matrix_arg: int = 0  # which argument is the range selector; another one is the scalar parameter


def _extrapolated(counter: bool, per_second: bool) -> RangeKernel:
    """``rate`` / ``increase`` / ``delta``: the first-to-last change, extrapolated to the range ends."""

    def kernel(w: Window) -> np.ndarray:
        stamps, values, counts, end, range_ms = w.stamps, w.values, w.counts, w.end, w.range_ms
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
            factor = factor / duration_seconds(range_ms)
        return result * factor

    return kernel


def _instant(per_second: bool) -> RangeKernel:
    """``irate`` / ``idelta``: the change between the last two samples."""

    def kernel(w: Window) -> np.ndarray:
        stamps, values, counts = w.stamps, w.values, w.counts
        pick = np.arange(len(counts))
        last, before = counts - 1, counts - 2
        last_v, before_v = values[pick, last], values[pick, before]
        if not per_second:
            return last_v - before_v
        result = np.where(last_v < before_v, last_v, last_v - before_v)  # a drop is a counter reset
        return result / ((stamps[pick, last] - stamps[pick, before]) / 1000)

    return kernel


rate = _extrapolated(counter=True, per_second=True)
increase = _extrapolated(counter=True, per_second=False)
delta = _extrapolated(counter=False, per_second=False)
irate = _instant(per_second=True)
idelta = _instant(per_second=False)


def _kahan_add(inc: np.ndarray, total: np.ndarray, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of Neumaier's compensated sum, as Prometheus 2.42 adds samples up."""
    new = total + inc
    lost = np.where(np.abs(total) >= np.abs(inc), (total - new) + inc, (inc - new) + total)
    return new, comp + lost


def sum_over_time(w: Window) -> np.ndarray:
    total, comp = np.zeros(len(w.counts)), np.zeros(len(w.counts))
    for _, x, has in w.columns():
        t, c = _kahan_add(x, total, comp)
        total, comp = np.where(has, t, total), np.where(has, c, comp)
    return np.where(np.isinf(total), total, total + comp)


def avg_over_time(w: Window) -> np.ndarray:
    # An incremental mean, compensated; once infinite it stays so through
    # finite values and infinities of its sign (Inf - Inf would give NaN).
    mean, comp = np.zeros(len(w.counts)), np.zeros(len(w.counts))
    for j, x, has in w.columns():
        n = j + 1.0
        keep_inf = np.isinf(mean) & (np.isfinite(x) | (np.isinf(x) & ((mean > 0) == (x > 0))))
        m, c = _kahan_add(x / n - mean / n, mean, comp)
        step = has & ~keep_inf
        mean, comp = np.where(step, m, mean), np.where(step, c, comp)
    return np.where(np.isinf(mean), mean, mean + comp)


def stdvar_over_time(w: Window) -> np.ndarray:
    # Welford's running variance, both sums compensated.
    zeros = np.zeros(len(w.counts))
    mean, c_mean, aux, c_aux = zeros, zeros, zeros, zeros
    for j, x, has in w.columns():
        n = j + 1.0
        delta = x - (mean + c_mean)
        m, cm = _kahan_add(delta / n, mean, c_mean)
        a, ca = _kahan_add(delta * (x - (m + cm)), aux, c_aux)
        mean, c_mean = np.where(has, m, mean), np.where(has, cm, c_mean)
        aux, c_aux = np.where(has, a, aux), np.where(has, ca, c_aux)
    return (aux + c_aux) / w.counts


def stddev_over_time(w: Window) -> np.ndarray:
    return np.sqrt(stdvar_over_time(w))


def _extreme_over_time(largest: bool) -> RangeKernel:
    def kernel(w: Window) -> np.ndarray:
        # A NaN is replaced by the next sample, whatever it is; later NaNs are skipped.
        best = w.values[:, 0]
        for _, x, has in w.columns():
            better = (x > best) if largest else (x < best)
            best = np.where(has & (better | np.isnan(best)), x, best)
        return best

    return kernel


min_over_time = _extreme_over_time(largest=False)
max_over_time = _extreme_over_time(largest=True)


def count_over_time(w: Window) -> np.ndarray:
    return w.counts.astype(np.float64)


def last_over_time(w: Window) -> np.ndarray:
    return w.values[np.arange(len(w.counts)), w.counts - 1]


def present_over_time(w: Window) -> np.ndarray:
    return np.ones(len(w.counts))


def _pairs(w: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample after the first, the one before it, and whether the pair is in the range."""
    now, before = w.values[:, 1:], w.values[:, :-1]
    return now, before, np.arange(1, w.values.shape[1]) < w.counts[:, None]


def changes(w: Window) -> np.ndarray:
    now, before, inside = _pairs(w)
    changed = (now != before) & ~(np.isnan(now) & np.isnan(before))
    return np.count_nonzero(changed & inside, axis=1).astype(np.float64)


def resets(w: Window) -> np.ndarray:
    now, before, inside = _pairs(w)
    return np.count_nonzero((now < before) & inside, axis=1).astype(np.float64)


def quantile_over_time(w: Window) -> np.ndarray:
    phi = w.param
    if np.isnan(phi) or phi < 0 or phi > 1:
        return np.full(len(w.counts), np.nan if np.isnan(phi) else -np.inf if phi < 0 else np.inf)
    # Sorted as Prometheus sorts them: NaN before everything, then by value.
    filled = np.arange(w.values.shape[1]) < w.counts[:, None]
    rank_class = np.where(filled, np.where(np.isnan(w.values), 0, 1), 2)
    order = np.lexsort((np.where(np.isnan(w.values), 0.0, w.values), rank_class), axis=-1)
    ordered = np.take_along_axis(w.values, order, axis=1)
    n = w.counts.astype(np.float64)
    rank = phi * (n - 1)
    lower = np.maximum(0, np.floor(rank))
    upper = np.minimum(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    pick = np.arange(len(n))
    low_v, up_v = ordered[pick, lower.astype(np.int64)], ordered[pick, upper.astype(np.int64)]
    return low_v * (1 - weight) + up_v * weight


def _regression(w: Window, intercept_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope (per second) and value at ``intercept_ms``, the four sums compensated.

    A range of equal values has slope 0 (NaN if they are infinite), whatever
    rounding would say.
    """
    sums = np.zeros((4, len(w.counts)))  # Σx, Σy, Σxy, Σx²
    comps = np.zeros((4, len(w.counts)))
    first = w.values[:, 0]
    constant = np.ones(len(w.counts), dtype=bool)
    for j, y, has in w.columns():
        x = (np.where(has, w.stamps[:, j], intercept_ms) - intercept_ms).astype(np.float64) / 1e3
        constant &= ~has | (y == first)
        new_sums, new_comps = _kahan_add(np.stack([x, y, x * y, x * x]), sums, comps)
        sums, comps = np.where(has, new_sums, sums), np.where(has, new_comps, comps)
    sum_x, sum_y, sum_xy, sum_x2 = sums + comps
    n = w.counts.astype(np.float64)
    covariance = sum_xy - sum_x * sum_y / n
    variance = sum_x2 - sum_x * sum_x / n
    slope = covariance / variance
    intercept = sum_y / n - slope * sum_x / n
    infinite = np.isinf(first)
    slope = np.where(constant, np.where(infinite, np.nan, 0.0), slope)
    intercept = np.where(constant, np.where(infinite, np.nan, first), intercept)
    return slope, intercept


def deriv(w: Window) -> np.ndarray:
    return _regression(w, w.stamps[:, 0])[0]


def predict_linear(w: Window) -> np.ndarray:
    # The regression's origin is the evaluation time, offset or not.
    slope, intercept = _regression(w, np.full(len(w.counts), w.t_ms, dtype=np.int64))
    return slope * w.param + intercept


@dataclass(eq=False)
class RangeFunctionNode(Node):
    """A range function of a range selector, such as ``rate(http_requests_total[5m] offset 1m)``.

    ``function`` is what it computes; ``param`` is the scalar argument of ``predict_linear`` and ``quantile_over_time``.

    >>> from detector.wire.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> store = SeriesStore(retention_ms=600_000)
    >>> requests = (("__name__", "requests_total"), ("job", "api"))
    >>> _ = store.append(SampleBatch.from_series([(requests, [(t, t / 500) for t in range(0, 300_001, 15_000)])]))
    >>> node = compile_expr("rate(requests_total[5m])")
    >>> list(node.evaluate(EvalContext(store, t_ms=300_000)).samples())
    [((('job', 'api'),), 2.0)]
    >>> node.reach_ms()
    300000
    >>> list(compile_expr("predict_linear(requests_total[5m], 60)").evaluate(EvalContext(store, t_ms=300_000)).samples())
    [((('job', 'api'),), 720.0)]
    """

    name: str
    function: RangeFunction
    selector: SelectorNode | None  # the range selector's; None for a subquery
    range_ms: int
    param: Node | None = None
    subquery: SubqueryNode | None = None  # f(expr[5m:1m]) (detector.promql.subquery)
    kind = "vector"
    # Per store: each selected row's labels without the metric name, and
    # whether two of those rows collide (only then must results be checked).
    _unnamed: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def reach_ms(self) -> int:
        if self.subquery is not None:
            own = self.subquery.reach_ms()
        else:
            assert self.selector is not None
            own = self.range_ms + self.selector.offset_ms
        return max(own, self.param.reach_ms()) if self.param is not None else own

    def _kernel(self, ctx: EvalContext, stamps: np.ndarray, values: np.ndarray, counts: np.ndarray, end: int,
                keep: np.ndarray) -> np.ndarray:
        param = np.nan
        if self.param is not None:
            scalar = self.param.evaluate(ctx)
            assert isinstance(scalar, Scalar)  # the parser type-checks it
            param = scalar.value
        if len(keep) < len(counts):
            stamps, values, counts = stamps[keep], values[keep], counts[keep]
        window = Window(stamps, values, counts, end, self.range_ms, ctx.t_ms, param)
        with np.errstate(all="ignore"):  # inf and NaN arise as in Go's float arithmetic
            return self.function.kernel(window)

    def evaluate(self, ctx: EvalContext) -> Value:
        if self.subquery is not None:
            return self._evaluate_subquery(ctx, self.subquery)
        assert self.selector is not None
        matched = self.selector.matched(ctx.store)
        rows = matched.rows
        end = self.selector.read_time(ctx, self.range_ms)
        # Per size class of the store's rings: one dense series does not widen every series' window.
        kept, results = [], []
        for index, stamps, values, counts in ctx.store.windows(rows, end, self.range_ms):
            keep = np.flatnonzero(counts >= self.function.min_samples)  # too few samples: no result
            if len(keep) == 0:
                continue
            results.append(self._kernel(ctx, stamps, values, counts, end, keep))
            kept.append(keep if index is None else index[keep])
        if not kept:
            return InstantVector.empty()
        if len(kept) == 1:
            keep, result = kept[0], results[0]
        else:  # back in the selector's row order
            keep = np.concatenate(kept)
            order = np.argsort(keep, kind="stable")
            keep, result = keep[order], np.concatenate(results)[order]
        every = len(keep) == len(rows)  # the usual case once windows have filled: no labels to pick
        if self.function.keeps_name:
            labels = matched.labels_in(ctx.store)
            return InstantVector(list(labels) if every else [labels[i] for i in keep.tolist()], result)
        unnamed, collide = self._labels(ctx.store, matched)
        out = InstantVector(list(unnamed) if every else [unnamed[i] for i in keep.tolist()], result)
        if collide and len(set(out.labels)) != len(out):
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        return out

    def _evaluate_subquery(self, ctx: EvalContext, subquery: SubqueryNode) -> Value:
        labels, stamps, values, counts = subquery.matrix(ctx)
        keep = np.flatnonzero(counts >= self.function.min_samples)
        if len(keep) == 0:
            return InstantVector.empty()
        result = self._kernel(ctx, stamps, values, counts, subquery.end(ctx), keep)
        name = (lambda l: l) if self.function.keeps_name else drop_name
        return unique([name(labels[i]) for i in keep], result)

    def _labels(self, store: SeriesStore, matched: SelectorMatches) -> tuple[list[Labels], bool]:
        # The selector's matches only grow at the end while no series is retired:
        # the cache is extended then. Series are told apart by their assignment
        # numbers, not rows (a retired series' row is reused); after a retirement
        # or a snapshot loaded (another SelectorMatches of another epoch) the labels are rebuilt.
        seen, unnamed, collide = self._unnamed.get(store, (None, [], False))
        if matched is seen:  # the same object: the same rows
            return unnamed, collide
        births, rows = matched.births, matched.rows
        if (seen is None or seen.epoch != matched.epoch or len(births) < len(seen.births)
                or not np.array_equal(births[: len(seen.births)], seen.births)):
            unnamed = []
        unnamed = unnamed + [drop_name(store.labels[r]) for r in rows[len(unnamed) :].tolist()]
        collide = len(set(unnamed)) != len(unnamed)
        self._unnamed[store] = (matched, unnamed, collide)
        return unnamed, collide
