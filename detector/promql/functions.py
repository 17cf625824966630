"""PromQL functions, as Prometheus 2.42 evaluates them.

* Range functions of a range selector (``f(x[5m] offset 1m)``): rate,
  increase, delta, irate, idelta, deriv, predict_linear, changes, resets and
  the *_over_time family (:class:`RangeFunctionNode`), absent_over_time
  (:class:`AbsentNode`). A range holds the samples in [t - offset - range,
  t - offset], staleness markers excluded; a series with too few samples
  there (two for rate, deriv and the like, one for the others) has no result.
  All drop the metric name but last_over_time.
* Functions of each sample's value: abs, ceil, floor, round, sqrt, exp, ln,
  log2, log10, sgn, clamp, clamp_min, clamp_max, deg, rad
  (:class:`VectorFunctionNode`); timestamp (:class:`TimestampNode`); the
  date functions (:class:`DateNode`). All drop the metric name.
* scalar, vector, time, pi, absent, label_replace, label_join and
  histogram_quantile. (sort and sort_desc compile to their argument.)

Checked against ``promtool test rules``. Arithmetic is done in the same order
as Prometheus does it (compensated sums where it uses them), so results match
it bit for bit, except exp, ln, log2 and log10, which are libm's and may
differ from Go's in the last bit. A result with two samples of the same labels
fails, as in Prometheus. label_replace takes Go regular expressions: they are
translated to Python's (:func:`go_regexp`), and refused at compile time
where they are invalid or have no Python equivalent.
"""

from __future__ import annotations

import math
import re
import unicodedata
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from detector.labels import METRIC_NAME, Labels
from detector.promql.plan import EvalContext, EvaluationError, Matcher, Node, SelectorNode
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


# --- The other range functions: x_over_time, deriv, predict_linear, changes, resets. ------------


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


@dataclass(frozen=True)
class RangeFunction:
    kernel: Callable[[Window], np.ndarray]
    min_samples: int = 1  # fewer samples in the range: no result for the series
    keeps_name: bool = False  # only last_over_time keeps the metric name (2.42)
    matrix_arg: int = 0  # which argument is the range selector; another one is the scalar parameter


def _kahan_add(inc: np.ndarray, total: np.ndarray, comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of Neumaier's compensated sum, as Prometheus 2.42 adds samples up."""
    new = total + inc
    lost = np.where(np.abs(total) >= np.abs(inc), (total - new) + inc, (inc - new) + total)
    return new, comp + lost


def _sum_over_time(w: Window) -> np.ndarray:
    total, comp = np.zeros(len(w.counts)), np.zeros(len(w.counts))
    for _, x, has in w.columns():
        t, c = _kahan_add(x, total, comp)
        total, comp = np.where(has, t, total), np.where(has, c, comp)
    return np.where(np.isinf(total), total, total + comp)


def _avg_over_time(w: Window) -> np.ndarray:
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


def _stdvar_over_time(w: Window) -> np.ndarray:
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


def _stddev_over_time(w: Window) -> np.ndarray:
    return np.sqrt(_stdvar_over_time(w))


def _extreme_over_time(largest: bool) -> Callable[[Window], np.ndarray]:
    def kernel(w: Window) -> np.ndarray:
        # A NaN is replaced by the next sample, whatever it is; later NaNs are skipped.
        best = w.values[:, 0]
        for _, x, has in w.columns():
            better = (x > best) if largest else (x < best)
            best = np.where(has & (better | np.isnan(best)), x, best)
        return best

    return kernel


def _count_over_time(w: Window) -> np.ndarray:
    return w.counts.astype(np.float64)


def _last_over_time(w: Window) -> np.ndarray:
    return w.values[np.arange(len(w.counts)), w.counts - 1]


def _present_over_time(w: Window) -> np.ndarray:
    return np.ones(len(w.counts))


def _pairs(w: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample after the first, the one before it, and whether the pair is in the range."""
    now, before = w.values[:, 1:], w.values[:, :-1]
    return now, before, np.arange(1, w.values.shape[1]) < w.counts[:, None]


def _changes(w: Window) -> np.ndarray:
    now, before, inside = _pairs(w)
    changed = (now != before) & ~(np.isnan(now) & np.isnan(before))
    return np.count_nonzero(changed & inside, axis=1).astype(np.float64)


def _resets(w: Window) -> np.ndarray:
    now, before, inside = _pairs(w)
    return np.count_nonzero((now < before) & inside, axis=1).astype(np.float64)


def _quantile_over_time(w: Window) -> np.ndarray:
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


def _deriv(w: Window) -> np.ndarray:
    return _regression(w, w.stamps[:, 0])[0]


def _predict_linear(w: Window) -> np.ndarray:
    # The regression's origin is the evaluation time, offset or not.
    slope, intercept = _regression(w, np.full(len(w.counts), w.t_ms, dtype=np.int64))
    return slope * w.param + intercept


def _from_old(kernel: RangeKernel) -> Callable[[Window], np.ndarray]:
    return lambda w: kernel(w.stamps, w.values, w.counts, w.end, w.range_ms)


RANGE_SPECS: dict[str, RangeFunction] = {
    **{name: RangeFunction(_from_old(kernel), min_samples=2) for name, kernel in RANGE_FUNCTIONS.items()},
    "deriv": RangeFunction(_deriv, min_samples=2),
    "predict_linear": RangeFunction(_predict_linear, min_samples=2),
    "changes": RangeFunction(_changes),
    "resets": RangeFunction(_resets),
    "avg_over_time": RangeFunction(_avg_over_time),
    "min_over_time": RangeFunction(_extreme_over_time(largest=False)),
    "max_over_time": RangeFunction(_extreme_over_time(largest=True)),
    "sum_over_time": RangeFunction(_sum_over_time),
    "count_over_time": RangeFunction(_count_over_time),
    "quantile_over_time": RangeFunction(_quantile_over_time, matrix_arg=1),
    "stddev_over_time": RangeFunction(_stddev_over_time),
    "stdvar_over_time": RangeFunction(_stdvar_over_time),
    "last_over_time": RangeFunction(_last_over_time, keeps_name=True),
    "present_over_time": RangeFunction(_present_over_time),
}
"""Every range function but ``absent_over_time`` (see :class:`AbsentNode`)."""


@dataclass(eq=False)
class RangeFunctionNode(Node):
    """A range function of a range selector, such as ``rate(http_requests_total[5m] offset 1m)``.

    ``param`` is the scalar argument of ``predict_linear`` and ``quantile_over_time``.

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
    selector: SelectorNode
    range_ms: int
    param: Node | None = None
    kind = "vector"
    # Per store: each selected row's labels without the metric name, and
    # whether two of those rows collide (only then must results be checked).
    _unnamed: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def __post_init__(self) -> None:
        self._spec = RANGE_SPECS[self.name]

    def reach_ms(self) -> int:
        own = self.range_ms + self.selector.offset_ms
        return max(own, self.param.reach_ms()) if self.param is not None else own

    def evaluate(self, ctx: EvalContext) -> Value:
        rows = self.selector.rows(ctx.store)
        end = ctx.t_ms - self.selector.offset_ms
        # Per size class of the store's rings: one dense series does not widen every series' window.
        parts = list(ctx.store.windows(rows, end, self.range_ms))
        param = None
        kept, results = [], []
        for index, stamps, values, counts in parts:
            keep = np.flatnonzero(counts >= self._spec.min_samples)  # too few samples: no result
            if len(keep) == 0:
                continue
            if param is None:
                param = np.nan
                if self.param is not None:
                    scalar = self.param.evaluate(ctx)
                    assert isinstance(scalar, Scalar)  # the parser type-checks it
                    param = scalar.value
            window = Window(stamps[keep], values[keep], counts[keep], end, self.range_ms, ctx.t_ms, param)
            with np.errstate(all="ignore"):  # inf and NaN arise as in Go's float arithmetic
                results.append(self._spec.kernel(window))
            kept.append(keep if index is None else index[keep])
        if not kept:
            return InstantVector.empty()
        if len(kept) == 1:
            keep, result = kept[0], results[0]
        else:  # back in the selector's row order
            keep = np.concatenate(kept)
            order = np.argsort(keep, kind="stable")
            keep, result = keep[order], np.concatenate(results)[order]
        if self._spec.keeps_name:
            return InstantVector([ctx.store.labels[rows[i]] for i in keep], result)
        unnamed, collide = self._labels(ctx.store, rows)
        out = InstantVector([unnamed[i] for i in keep], result)
        if collide and len(set(out.labels)) != len(out):
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        return out

    def _labels(self, store: SeriesStore, rows: np.ndarray) -> tuple[list[Labels], bool]:
        # The selector's matches only grow at the end while no series is retired:
        # the cache is extended then. Series are told apart by their assignment
        # numbers, not rows (a retired series' row is reused); after a retirement
        # the labels are rebuilt.
        births = self.selector.matches(store)[1]
        seen, unnamed, collide = self._unnamed.get(store, (None, [], False))
        if births is seen:
            return unnamed, collide
        if seen is None or len(births) < len(seen) or not np.array_equal(births[: len(seen)], seen):
            unnamed = []
        unnamed = unnamed + [_drop_name(store.labels[r]) for r in rows[len(unnamed) :]]
        collide = len(set(unnamed)) != len(unnamed)
        self._unnamed[store] = (births, unnamed, collide)
        return unnamed, collide


def absent_labels(matchers: Sequence[Matcher]) -> Labels:
    """The labels ``absent(x{...})`` gives: those of its equality matchers, the name excepted.

    A label with any other matcher, or with two equality matchers, is left
    out; so is one whose value would be empty.

    >>> ms = [Matcher.create(*m) for m in [("__name__", "=", "up"), ("job", "=", "api"), ("env", "=~", "p.*"),
    ...       ("dc", "=", "a"), ("dc", "=", "b"), ("team", "=", "")]]
    >>> absent_labels(ms)
    (('job', 'api'),)
    """
    found: dict[str, str] = {}
    dropped: set[str] = set()
    for m in matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op == "=" and m.name not in found:
            found[m.name] = m.value
        else:
            dropped.add(m.name)
    return tuple(sorted((k, v) for k, v in found.items() if k not in dropped and v != ""))


@dataclass(eq=False)
class AbsentNode(Node):
    """``absent(v)``: one sample of value 1 when ``v`` is empty; ``absent_over_time(x[r])`` likewise
    when no series ``x`` selects has a sample in the range.

    ``labels`` come from the selector's equality matchers (:func:`absent_labels`),
    if the argument is a selector.
    """

    expr: Node | None
    labels: Labels
    selector: SelectorNode | None = None  # absent_over_time's
    range_ms: int = 0
    kind = "vector"

    def combines_series(self, keep: frozenset[str]) -> bool:
        return True  # "no such series anywhere" is a question about every partition

    def reach_ms(self) -> int:
        if self.expr is not None:
            return self.expr.reach_ms()
        assert self.selector is not None
        return self.range_ms + self.selector.offset_ms

    def evaluate(self, ctx: EvalContext) -> Value:
        if self.expr is not None:
            present = len(self.expr.evaluate(ctx)) > 0  # type: ignore[arg-type]
        else:
            assert self.selector is not None
            rows = self.selector.rows(ctx.store)
            parts = ctx.store.windows(rows, ctx.t_ms - self.selector.offset_ms, self.range_ms)
            present = any(bool(np.any(counts > 0)) for _, _, _, counts in parts)
        return InstantVector.empty() if present else InstantVector([self.labels], np.ones(1))


# exp, ln, log2 and log10 are numpy's (libm). Prometheus uses Go's math
# package, which rounds differently in the last bit for a few percent of
# inputs; a rule's threshold never sees that, and the differential tests
# allow it.


def go_max(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Go's ``math.Max``: +Inf wins over NaN, NaN over numbers, +0 over -0."""
    out = np.where(x > y, x, y)
    out = np.where((x == 0) & (y == 0), np.where(np.signbit(x), y, x), out)
    out = np.where(np.isnan(x) | np.isnan(y), np.nan, out)
    return np.where((x == np.inf) | (y == np.inf), np.inf, out)


def go_min(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Go's ``math.Min``: -Inf wins over NaN, NaN over numbers, -0 over +0."""
    out = np.where(x < y, x, y)
    out = np.where((x == 0) & (y == 0), np.where(np.signbit(x), x, y), out)
    out = np.where(np.isnan(x) | np.isnan(y), np.nan, out)
    return np.where((x == -np.inf) | (y == -np.inf), -np.inf, out)


# --- Instant-vector functions. -------------------------------------------------------------------

VectorKernel = Callable[[np.ndarray, tuple[float, ...]], "np.ndarray | None"]
"""(values, scalar arguments) -> new values, or None for no result at all."""


def _sgn(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    return np.where(values < 0, -1.0, np.where(values > 0, 1.0, values))  # ±0 and NaN stay


def _round(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    inverse = np.float64(1.0) / np.float64(params[0] if params else 1.0)  # Go: 1/0 is +Inf
    return np.floor(values * inverse + 0.5) / inverse  # halves round up


def _clamp(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray | None:
    low, high = params
    if high < low:
        return None
    return go_max(np.full_like(values, low), go_min(np.full_like(values, high), values))


def _elementwise(fn: Callable[[np.ndarray], np.ndarray]) -> VectorKernel:
    return lambda values, params: fn(values)


VECTOR_FUNCTIONS: dict[str, VectorKernel] = {
    "abs": _elementwise(np.abs),
    "ceil": _elementwise(np.ceil),
    "floor": _elementwise(np.floor),
    "sqrt": _elementwise(np.sqrt),
    "exp": _elementwise(np.exp),
    "ln": _elementwise(np.log),
    "log2": _elementwise(np.log2),
    "log10": _elementwise(np.log10),
    "sgn": _sgn,
    "round": _round,
    "clamp": _clamp,
    "clamp_min": lambda values, params: go_max(values, np.full_like(values, params[0])),
    "clamp_max": lambda values, params: go_min(values, np.full_like(values, params[0])),
    "deg": _elementwise(lambda v: v * 180 / math.pi),
    "rad": _elementwise(lambda v: v * math.pi / 180),
}
"""Functions of each sample's value; all drop the metric name."""


@dataclass(eq=False)
class VectorFunctionNode(Node):
    """``abs(v)``, ``round(v, 5)``, ``clamp(v, 0, 1)``...: a new value per sample, the name dropped.

    >>> from detector.wire.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> store = SeriesStore(retention_ms=600_000)
    >>> _ = store.append(SampleBatch.from_series([((("__name__", "temp"), ("room", "a")), [(0, -2.5)])]))
    >>> list(compile_expr("round(temp)").evaluate(EvalContext(store, t_ms=0)).samples())
    [((('room', 'a'),), -2.0)]
    """

    name: str
    expr: Node
    params: tuple[Node, ...] = ()
    kind = "vector"

    def __post_init__(self) -> None:
        self._kernel = VECTOR_FUNCTIONS[self.name]

    def reach_ms(self) -> int:
        return max([self.expr.reach_ms(), *(p.reach_ms() for p in self.params)])

    def evaluate(self, ctx: EvalContext) -> Value:
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        params = tuple(_scalar(p, ctx) for p in self.params)
        with np.errstate(all="ignore"):
            values = self._kernel(vector.values, params)
        if values is None:
            return InstantVector.empty()
        return _unique([_drop_name(l) for l in vector.labels], values)


def _scalar(node: Node, ctx: EvalContext) -> float:
    value = node.evaluate(ctx)
    assert isinstance(value, Scalar)  # the parser type-checks scalar arguments
    return value.value


def _unique(labels: list[Labels], values: np.ndarray) -> InstantVector:
    """A function's result; Prometheus refuses one where two samples have the same labels."""
    if len(set(labels)) != len(labels):
        raise EvaluationError("vector cannot contain metrics with the same labelset")
    return InstantVector(labels, np.asarray(values, dtype=np.float64))


@dataclass(eq=False)
class ScalarNode(Node):
    """``scalar(v)``: the value of a one-sample vector, NaN for any other."""

    expr: Node
    kind = "scalar"

    def combines_series(self, keep: frozenset[str]) -> bool:
        return True  # one value out of a whole vector

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        return Scalar(float(vector.values[0]) if len(vector) == 1 else math.nan)


@dataclass(eq=False)
class TimeNode(Node):
    """``time()``: the evaluation time in seconds."""

    kind = "scalar"

    def evaluate(self, ctx: EvalContext) -> Value:
        return Scalar(ctx.t_ms / 1000)


@dataclass(eq=False)
class PiNode(Node):
    """``pi()``."""

    kind = "scalar"

    def evaluate(self, ctx: EvalContext) -> Value:
        return Scalar(math.pi)


@dataclass(eq=False)
class VectorNode(Node):
    """``vector(s)``: one sample without labels."""

    expr: Node
    kind = "vector"

    def combines_series(self, keep: frozenset[str]) -> bool:
        return True  # a sample of no series: every partition would make the same one

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        return InstantVector([()], np.array([_scalar(self.expr, ctx)]))


@dataclass(eq=False)
class TimestampNode(Node):
    """``timestamp(v)``: each sample's timestamp in seconds, the name dropped.

    Of a selector (``timestamp(x offset 1m)``) that is when the selected sample
    was taken; of any other expression, the evaluation time.
    """

    expr: Node
    of_selector: bool = False  # the argument is a selector itself (parentheses aside)
    kind = "vector"

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        if self.of_selector:
            assert isinstance(self.expr, SelectorNode)
            rows = self.expr.rows(ctx.store)
            found, stamps, _ = ctx.store.latest(rows, ctx.t_ms - self.expr.offset_ms, ctx.lookback_ms)
            labels = [_drop_name(ctx.store.labels[r]) for r in rows[found]]
            return _unique(labels, stamps[found] / 1000)
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        return _unique([_drop_name(l) for l in vector.labels], np.full(len(vector), ctx.t_ms / 1000))


# --- Dates: minute(), hour(), ... of Unix seconds, in UTC, as Go's time package computes them. ---

_SECONDS_PER_DAY = 86_400
# Go counts time from 1 January of year -292277022399 (the "absolute" epoch):
# Unix seconds are shifted to it in wrapping 64-bit arithmetic.
_ABSOLUTE_ZERO_YEAR = -292_277_022_399
_UNIX_TO_ABSOLUTE = np.uint64(9_223_372_028_715_321_600)
_DAYS_BEFORE_MONTH = np.array([0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365])
_INT64_MIN = np.iinfo(np.int64).min


def _go_int64(values: np.ndarray) -> np.ndarray:
    """Go's int64(v) on amd64: truncated, and the minimum int64 for NaN, ±Inf and out of range."""
    inside = (values >= -(2.0**63)) & (values < 2.0**63)
    out = np.full(values.shape, _INT64_MIN, dtype=np.int64)
    out[inside] = np.trunc(values[inside]).astype(np.int64)
    return out


def _is_leap(year: np.ndarray) -> np.ndarray:
    return (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))


def _calendar(seconds: np.ndarray) -> dict[str, np.ndarray]:
    """Year, month, day, weekday, hour and minute (UTC) of Unix seconds (int64)."""
    absolute = seconds.astype(np.uint64) + _UNIX_TO_ABSOLUTE  # wraps modulo 2^64, as in Go
    days = (absolute // np.uint64(_SECONDS_PER_DAY)).astype(np.int64)
    of_day = (absolute % np.uint64(_SECONDS_PER_DAY)).astype(np.int64)
    weekday = ((absolute + np.uint64(_SECONDS_PER_DAY)) % np.uint64(7 * _SECONDS_PER_DAY)).astype(np.int64)
    # Proleptic Gregorian years, counted in 400-, 100-, 4- and 1-year cycles
    # from the epoch (a year like 1 AD: the first of a 400-year cycle).
    cycles400, days = np.divmod(days, 146_097)
    cycles100 = days // 36_524
    cycles100 -= cycles100 >> 2
    days -= cycles100 * 36_524
    cycles4, days = np.divmod(days, 1_461)
    years = days // 365
    years -= years >> 2
    day_of_year = days - years * 365
    year = cycles400 * 400 + cycles100 * 100 + cycles4 * 4 + years + _ABSOLUTE_ZERO_YEAR
    leap = _is_leap(year)
    after_leap_day = leap & (day_of_year > 59)
    leap_day = leap & (day_of_year == 59)
    day = day_of_year - after_leap_day
    month = np.searchsorted(_DAYS_BEFORE_MONTH, day, side="right")  # 1..12
    day_of_month = day - _DAYS_BEFORE_MONTH[month - 1] + 1
    month = np.where(leap_day, 2, month)
    day_of_month = np.where(leap_day, 29, day_of_month)
    month_days = np.diff(_DAYS_BEFORE_MONTH)[month - 1] + ((month == 2) & leap)
    return {
        "year": year,
        "month": month,
        "day_of_month": day_of_month,
        "days_in_month": month_days,
        "day_of_week": weekday // _SECONDS_PER_DAY,
        "day_of_year": day_of_year + 1,
        "hour": of_day // 3600,
        "minute": of_day % 3600 // 60,
    }


DATE_FUNCTIONS = frozenset(
    {"minute", "hour", "day_of_week", "day_of_month", "day_of_year", "days_in_month", "month", "year"}
)


@dataclass(eq=False)
class DateNode(Node):
    """``hour()`` (of the evaluation time) or ``hour(v)`` (of each value as Unix seconds, the name dropped).

    >>> from detector.promql import compile_expr
    >>> store = SeriesStore(retention_ms=600_000)
    >>> list(compile_expr("day_of_week()").evaluate(EvalContext(store, t_ms=1_700_000_000_000)).samples())
    [((), 2.0)]
    """

    name: str
    expr: Node | None = None
    kind = "vector"

    def reach_ms(self) -> int:
        return self.expr.reach_ms() if self.expr is not None else 0

    def evaluate(self, ctx: EvalContext) -> Value:
        if self.expr is None:
            now = np.array([abs(ctx.t_ms) // 1000 * (1 if ctx.t_ms >= 0 else -1)], dtype=np.int64)
            return InstantVector([()], _calendar(now)[self.name].astype(np.float64))
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        values = _calendar(_go_int64(vector.values))[self.name].astype(np.float64)
        return _unique([_drop_name(l) for l in vector.labels], values)


# --- label_replace and label_join. ----------------------------------------------------------------

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(eq=False)
class RelabelNode(Node):
    """``label_replace`` and ``label_join``: each sample's labels rewritten, its value kept.

    ``relabel`` maps a label set to its new one; results are cached per label set.

    >>> from detector.wire.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> store = SeriesStore(retention_ms=600_000)
    >>> _ = store.append(SampleBatch.from_series([((("__name__", "up"), ("instance", "db-1:9100")), [(0, 1.0)])]))
    >>> node = compile_expr('label_replace(up, "host", "$1", "instance", "(.*):.*")')
    >>> list(node.evaluate(EvalContext(store, t_ms=0)).samples())
    [((('__name__', 'up'), ('host', 'db-1'), ('instance', 'db-1:9100')), 1.0)]
    """

    expr: Node
    relabel: Callable[[Labels], Labels]
    kind = "vector"

    def __post_init__(self) -> None:
        self._cached = lru_cache(maxsize=1 << 16)(self.relabel)

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        return _unique([self._cached(l) for l in vector.labels], vector.values)


def _with_label(labels: Labels, name: str, value: str) -> Labels:
    """``labels`` with ``name`` set to ``value``, or removed if ``value`` is empty."""
    kept = [p for p in labels if p[0] != name]
    if value:
        kept.append((name, value))
    return tuple(sorted(kept))


def label_replacer(dst: str, replacement: str, src: str, regex: str) -> Callable[[Labels], Labels]:
    """The relabelling ``label_replace(v, dst, replacement, src, regex)`` does; ValueError if it would fail.

    >>> relabel = label_replacer("host", "$1", "instance", "(.*):.*")
    >>> relabel((("instance", "db-1:9100"),))
    (('host', 'db-1'), ('instance', 'db-1:9100'))
    >>> relabel((("instance", "db-1"),))  # no match: unchanged
    (('instance', 'db-1'),)
    """
    if not LABEL_NAME.fullmatch(dst):
        raise ValueError(f"invalid destination label name in label_replace(): {dst}")
    try:
        pattern = go_regexp(regex)
    except ValueError as exc:
        raise ValueError(f"invalid regular expression in label_replace(): {regex}: {exc}") from None

    def relabel(labels: Labels) -> Labels:
        match = pattern.fullmatch(dict(labels).get(src, ""))
        if match is None:
            return labels
        return _with_label(labels, dst, go_expand(replacement, match))

    return relabel


def label_joiner(dst: str, separator: str, sources: Sequence[str]) -> Callable[[Labels], Labels]:
    """The relabelling ``label_join(v, dst, separator, src...)`` does; ValueError if it would fail.

    >>> label_joiner("addr", ":", ["host", "port"])((("host", "db"), ("port", "5432")))
    (('addr', 'db:5432'), ('host', 'db'), ('port', '5432'))
    """
    for name in sources:
        if not LABEL_NAME.fullmatch(name):
            raise ValueError(f"invalid source label name in label_join(): {name}")
    if not LABEL_NAME.fullmatch(dst):
        raise ValueError(f"invalid destination label name in label_join(): {dst}")

    def relabel(labels: Labels) -> Labels:
        values = dict(labels)
        return _with_label(labels, dst, separator.join(values.get(name, "") for name in sources))

    return relabel


def _is_name_char(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category[0] == "L" or category == "Nd" or ch == "_"


def go_expand(template: str, match: re.Match[str]) -> str:
    """``template`` with ``$1``, ``${1}``, ``$name`` and ``${name}`` replaced, as Go's Regexp.Expand does.

    ``$$`` is a dollar sign; a name is the longest run of letters, digits and
    ``_`` (so ``$1x`` is group "1x"); an unknown or unmatched group is empty; a
    ``$`` that starts no valid reference is kept as it is.

    >>> m = re.fullmatch(r"(?P<host>[a-z]+)-(\\d+)", "db-12")
    >>> go_expand("$host/$2 ${1}x $1x $$ $ ${2", m)
    'db/12 dbx  $ $ ${2'
    """
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        dollar = template.find("$", i)
        if dollar < 0:
            out.append(template[i:])
            break
        out.append(template[i:dollar])
        i = dollar + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        brace = i < n and template[i] == "{"
        j = i + 1 if brace else i
        k = j
        while k < n and _is_name_char(template[k]):
            k += 1
        name = template[j:k]
        if not name or (brace and (k >= n or template[k] != "}")):
            out.append("$")  # malformed: the $ is text
            continue
        i = k + 1 if brace else k
        out.append(_group_text(match, name))
    return "".join(out)


def _group_text(match: re.Match[str], name: str) -> str:
    group: int | str | None
    if all("0" <= ch <= "9" for ch in name) and len(name) < 9 and not (name[0] == "0" and len(name) > 1):
        group = int(name)
        if group > match.re.groups:
            return ""
    else:
        group = name if name in match.re.groupindex else None
        if group is None:
            return ""
    return match.group(group) or ""


# --- Go regular expressions (RE2 syntax) as Python ones. ------------------------------------------

_PERL_CLASSES = {"d": "0-9", "s": "\\t\\n\\f\\r ", "w": "0-9A-Za-z_"}
_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7f",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_WORD = "[0-9A-Za-z_]"
_ASSERTIONS = {
    "A": "\\A",
    "z": "\\Z",
    "b": f"(?:(?<={_WORD})(?!{_WORD})|(?<!{_WORD})(?={_WORD}))",
    "B": f"(?:(?<={_WORD})(?={_WORD})|(?<!{_WORD})(?!{_WORD}))",
}
_CONTROL_ESCAPES = {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}
_REPEAT = re.compile(r"\{([0-9]+)(?:(,)([0-9]*))?\}")
_FLAGS = re.compile(r"\(\?([imsU]*)(?:(-)([imsU]*))?([:)])")
_GROUP_NAME = re.compile(r"\(\?P<([A-Za-z0-9_]+)>")


def _char(code: int) -> str:
    """A code point as a Python regex escape, valid in and out of classes."""
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _literal(ch: str) -> str:
    return ch if ch.isascii() and ch.isalnum() else _char(ord(ch))


class _GoRegexTranslator:
    """One pass over a Go regular expression, writing the Python one that matches the same strings.

    Differences handled: Go's ``\\d \\s \\w \\b`` are ASCII; ``$`` outside
    multi-line mode is the end of the text only; ``(?i)`` in mid-pattern lasts
    to the end of its group; ``x{,n}`` is literal; POSIX classes ``[[:alpha:]]``;
    ``\\Q...\\E``; ``\\x{...}`` and octal escapes. What Go refuses (look-around,
    back-references, repeats over 1000, nested repeats) is refused; so is what
    Python cannot express (``\\pL``, ``(?U)``).
    """

    def __init__(self, pattern: str) -> None:
        self.src = pattern
        self.i = 0
        self.out: list[str] = []
        # Per open group: whether multi-line mode is on, and the inline flag
        # scopes opened in it (closed at its end and around each "|").
        self.groups: list[tuple[bool, list[str]]] = [(False, [])]
        self.after_repeat = False  # a repeat just ended: another one would be nested

    def translate(self) -> str:
        while self.i < len(self.src):
            self._step()
        if len(self.groups) > 1:
            raise ValueError("missing closing )")
        self.out.append(")" * len(self.groups[-1][1]))
        return "".join(self.out)

    def _emit(self, text: str, repeat: bool = False) -> None:
        self.out.append(text)
        self.after_repeat = repeat

    def _step(self) -> None:
        src, i = self.src, self.i
        ch = src[i]
        if ch in "*+?" or (ch == "{" and _REPEAT.match(src, i)):
            self._repeat()
        elif ch == "\\":
            self._escape()
        elif ch == "[":
            self._class()
        elif ch == "(":
            self._open()
        elif ch == ")":
            if len(self.groups) == 1:
                raise ValueError("unexpected )")
            _, scopes = self.groups.pop()
            self._emit(")" * len(scopes) + ")")
            self.i += 1
        elif ch == "|":
            scopes = self.groups[-1][1]
            self._emit(")" * len(scopes) + "|" + "".join(f"(?{s}:" for s in scopes))
            self.i += 1
        elif ch == "$":
            self._emit("$" if self.groups[-1][0] else "\\Z")
            self.i += 1
        elif ch in ".^":
            self._emit(ch)
            self.i += 1
        else:
            self._emit(_literal(ch))
            self.i += 1

    def _repeat(self) -> None:
        if self.after_repeat:
            raise ValueError(f"invalid nested repetition operator at {self.src[self.i:]!r}")
        src = self.src
        bounds = _REPEAT.match(src, self.i)
        if bounds:
            low = int(bounds[1])
            high = low if not bounds[2] else (int(bounds[3]) if bounds[3] else -1)
            if low > 1000 or high > 1000 or (high >= 0 and low > high):
                raise ValueError(f"invalid repeat count {bounds[0]}")
            text, self.i = bounds[0], bounds.end()
        else:
            text, self.i = src[self.i], self.i + 1
        if self.i < len(src) and src[self.i] == "?":
            text += "?"
            self.i += 1
        self._emit(text, repeat=True)

    def _open(self) -> None:
        src, i = self.src, self.i
        multiline, _ = self.groups[-1]
        if not src.startswith("(?", i):
            self.groups.append((multiline, []))
            self._emit("(")
            self.i += 1
            return
        named = _GROUP_NAME.match(src, i)
        if named:
            if named[1][0].isdigit():
                raise ValueError(f"group name {named[1]!r} is not supported")
            self.groups.append((multiline, []))
            self._emit(named[0])
            self.i = named.end()
            return
        flags = _FLAGS.match(src, i)
        if not flags:
            raise ValueError(f"invalid or unsupported group or flags at {src[i:i + 6]!r}")
        on, minus, off, end = flags[1], flags[2], flags[3] or "", flags[4]
        if minus and not off:
            raise ValueError(f"missing flags after - in {flags[0]!r}")
        if "U" in on + off:
            raise ValueError("the U (ungreedy) flag is not supported")
        self.i = flags.end()
        if "m" in on:
            multiline = True
        if "m" in off:
            multiline = False
        spec = on + (f"-{off}" if off else "")
        if end == ":":
            self.groups.append((multiline, []))
            self._emit(f"(?{spec}:" if spec else "(?:")
        else:  # (?i) sets flags to the end of the group: an extra scope
            scopes = self.groups[-1][1]
            self.groups[-1] = (multiline, scopes)
            if spec:
                scopes.append(spec)
                self._emit(f"(?{spec}:")

    def _escape(self) -> None:
        src = self.src
        if self.i + 1 >= len(src):
            raise ValueError("trailing backslash at end of expression")
        c = src[self.i + 1]
        if c in _PERL_CLASSES or c.lower() in _PERL_CLASSES:
            self.i += 2
            self._emit(f"[{'^' if c.isupper() else ''}{_PERL_CLASSES[c.lower()]}]")
        elif c in _ASSERTIONS:
            self.i += 2
            self._emit(_ASSERTIONS[c])
        elif c == "Q":
            end = src.find("\\E", self.i + 2)
            text = src[self.i + 2 :] if end < 0 else src[self.i + 2 : end]
            self.i = len(src) if end < 0 else end + 2
            if text:
                self._emit("".join(_literal(ch) for ch in text))  # a repeat after it takes its last character
        else:
            self._emit(_char(self._escaped_char()))

    def _escaped_char(self) -> int:
        """The code point of an escape that stands for one character (in or out of a class)."""
        src = self.src
        c = src[self.i + 1]
        self.i += 2
        if c in _CONTROL_ESCAPES:
            return ord(_CONTROL_ESCAPES[c])
        if c == "x":
            hexa = re.compile(r"\{([0-9A-Fa-f]+)\}|([0-9A-Fa-f]{2})").match(src, self.i)
            if not hexa or int(hexa[1] or hexa[2], 16) > 0x10FFFF:
                raise ValueError("invalid escape sequence \\x")
            self.i = hexa.end()
            return int(hexa[1] or hexa[2], 16)
        if c in "01234567":
            digits = re.compile(r"[0-7]{0,2}").match(src, self.i)[0]  # type: ignore[index]
            if c != "0" and not digits:
                raise ValueError(f"invalid escape sequence \\{c} (back-references are not supported)")
            self.i += len(digits)
            return int(c + digits, 8)
        if c.isascii() and not c.isalnum():
            return ord(c)  # escaped punctuation is itself
        raise ValueError(f"invalid or unsupported escape sequence \\{c}")

    def _class(self) -> None:
        src = self.src
        self.i += 1
        parts = ["["]
        if self.i < len(src) and src[self.i] == "^":
            parts.append("^")
            self.i += 1
        first = True
        while True:
            if self.i >= len(src):
                raise ValueError("missing closing ]")
            if src[self.i] == "]" and not first:
                self.i += 1
                break
            first = False
            if src.startswith("[:", self.i):
                end = src.find(":]", self.i + 2)
                name = src[self.i + 2 : end] if end >= 0 else ""
                if name in _POSIX_CLASSES:
                    parts.append(_POSIX_CLASSES[name])
                    self.i = end + 2
                    continue
                if end >= 0:  # Go refuses an unknown [:name:]
                    raise ValueError(f"invalid or unsupported character class [:{name}:]")
            if src.startswith("\\", self.i) and self.i + 1 < len(src):
                c = src[self.i + 1]
                if c in _PERL_CLASSES:
                    parts.append(_PERL_CLASSES[c])
                    self.i += 2
                    continue
                if c.lower() in _PERL_CLASSES or c in "pP":
                    raise ValueError(f"\\{c} inside brackets is not supported")
            low = self._class_char()
            if src.startswith("-", self.i) and self.i + 1 < len(src) and src[self.i + 1] != "]":
                self.i += 1
                high = self._class_char()
                if high < low:
                    raise ValueError("invalid character class range")
                parts.append(f"{_char(low)}-{_char(high)}")
            else:
                parts.append(_char(low))
        parts.append("]")
        self._emit("".join(parts))

    def _class_char(self) -> int:
        if self.src[self.i] == "\\":
            if self.i + 1 >= len(self.src):
                raise ValueError("trailing backslash at end of expression")
            return self._escaped_char()
        self.i += 1
        return ord(self.src[self.i - 1])


@lru_cache(maxsize=1024)
def go_regexp(pattern: str) -> re.Pattern[str]:
    """A Go (RE2 syntax) regular expression compiled as Python's ``re``, matching the same strings.

    Raises ValueError for what Go refuses and for the few things Python cannot
    express. Group numbers and names are kept, so ``$1`` means the same.

    >>> go_regexp(r"(\\w+)\\s*$").pattern
    '([0-9A-Za-z_]+)[\\\\t\\\\n\\\\f\\\\r ]*\\\\Z'
    >>> bool(go_regexp("a{,2}").fullmatch("a{,2}")), bool(go_regexp("a(?i)b|c").fullmatch("C"))
    (True, True)
    >>> go_regexp("(?=x)")
    Traceback (most recent call last):
    ...
    ValueError: invalid or unsupported group or flags at '(?=x)'
    """
    translated = _GoRegexTranslator(pattern).translate()
    try:
        return re.compile(translated)
    except re.error as exc:
        raise ValueError(str(exc)) from None


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

    >>> from detector.wire.batch import SampleBatch
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


__all__ = [
    "DATE_FUNCTIONS",
    "RANGE_FUNCTIONS",
    "RANGE_SPECS",
    "VECTOR_FUNCTIONS",
    "AbsentNode",
    "DateNode",
    "HistogramQuantileNode",
    "PiNode",
    "RangeFunctionNode",
    "RelabelNode",
    "ScalarNode",
    "TimeNode",
    "TimestampNode",
    "VectorFunctionNode",
    "VectorNode",
    "absent_labels",
    "go_expand",
    "go_regexp",
    "label_joiner",
    "label_replacer",
]
