"""PromQL aggregation operators, as Prometheus 2.42 evaluates them.

``sum``, ``avg``, ``min``, ``max``, ``count``, ``group``, ``stddev``,
``stdvar``, ``topk``, ``bottomk``, ``quantile`` and ``count_values``, with
``by (...)``, ``without (...)`` or neither. Checked against ``promtool test
rules``:

* ``by`` keeps only the listed labels (``__name__`` too, if listed);
  ``without`` drops the listed labels and the metric name; neither is one
  group with no labels. ``topk`` and ``bottomk`` return the chosen input
  samples with all their labels; ``count_values`` counts samples per value,
  the value (Go's shortest ``'f'`` formatting) set as a label on each sample
  before grouping (``by`` adds that label to its list, ``without`` does not).
* ``min`` / ``max`` ignore NaN unless a group is all NaN; ``topk`` /
  ``bottomk`` take NaN last, only to fill up k; ``quantile`` sorts NaN first
  and interpolates between the two closest ranks (φ < 0 gives -Inf, φ > 1
  +Inf, NaN gives NaN); ``sum`` and ``avg`` propagate NaN and ±Inf as Go's
  float arithmetic does (``avg`` keeps an infinite mean through finite
  values).
* ``topk`` / ``bottomk`` truncate k to an integer (k < 1: no result) and fail
  with "Scalar value ... overflows int64" outside int64, NaN included;
  ``count_values`` fails on an invalid label name, even with no input.

Order. Prometheus aggregates a vector's samples one by one, in the order the
selector returned them: series creation order in a server, random in
promtool (it creates its input series in Go map order). Headroom aggregates in
the order of its input vector (store rows, that is arrival order) and repeats
each rounding step for that order: ``sum`` adds from the first sample on;
``avg`` updates an incremental mean, each term divided by the count so that
large values do not overflow; ``stddev`` and ``stdvar`` update Welford's
running mean and sum of squared deviations. Float addition is not
associative, so where the order matters in the last bits promtool's own
answer varies from run to run; the tests check that it is Headroom's answer
for some order of the input series. Among equal values, ``topk`` and
``bottomk`` keep the earlier samples (Prometheus's heap depends on order too).
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from detector.labels import METRIC_NAME, Labels
from detector.promql.plan import EvalContext, EvaluationError, Node
from detector.promql.values import InstantVector, Scalar, Value
from detector.store import SeriesStore
from detector.output.templates import go_quote

AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values"}
)
"""The aggregation operators of Prometheus 2.42 (``limitk`` and ``limit_ratio`` came later)."""

# Prometheus's bounds for k: the largest float64 below 2^63, and -2^63.
_MAX_K = 9223372036854774784.0
_MIN_K = -9223372036854775808.0
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
"""A label name as Prometheus 2.x allows it."""
# A memo of input label set -> group labels is reset when it grows past this
# many entries beyond the current input (series churn would grow it forever).
_MEMO_SLACK = 100_000


@dataclass(eq=False)
class _Groups:
    """The groups of one input vector: each sample's group, each group's labels."""

    labels: list[Labels]  # the input labels these were computed for
    group_of: np.ndarray  # per sample, its group
    result: list[Labels]  # per group, its labels
    _sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def by_group(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(samples ordered by group, input order kept within a group; group sizes; group starts)."""
        if self._sorted is None:
            order = np.argsort(self.group_of, kind="stable")
            sizes = np.bincount(self.group_of, minlength=len(self.result))
            self._sorted = (order, sizes, np.cumsum(sizes) - sizes)
        return self._sorted


@dataclass(eq=False)
class _Memo:
    """Group labels by input labels, numbered the same way across evaluations."""

    ids: dict[Labels, int] = field(default_factory=dict)
    signatures: list[Labels] = field(default_factory=list)
    numbers: dict[Labels, int] = field(default_factory=dict)

    def add(self, labels: Labels, signature: Labels) -> int:
        number = self.numbers.setdefault(signature, len(self.signatures))
        if number == len(self.signatures):
            self.signatures.append(signature)
        self.ids[labels] = number
        return number


@dataclass(eq=False)
class AggregateNode(Node):
    """An aggregation such as ``sum by (reason) (rate(api_requests_rejected_total[5m]))``.

    >>> from detector.wire.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> store = SeriesStore(retention_ms=600_000)
    >>> _ = store.append(SampleBatch.from_series([
    ...     ((("__name__", "rejected"), ("reason", "full"), ("route", "/a")), [(0, 3.0)]),
    ...     ((("__name__", "rejected"), ("reason", "full"), ("route", "/b")), [(0, 4.0)]),
    ...     ((("__name__", "rejected"), ("reason", "slow"), ("route", "/a")), [(0, 1.0)]),
    ... ]))
    >>> at_0 = EvalContext(store, t_ms=0)
    >>> sorted(compile_expr("sum by (reason) (rejected)").evaluate(at_0).samples())
    [((('reason', 'full'),), 7.0), ((('reason', 'slow'),), 1.0)]
    >>> sorted(compile_expr("max without (reason) (rejected)").evaluate(at_0).samples())
    [((('route', '/a'),), 3.0), ((('route', '/b'),), 4.0)]
    >>> list(compile_expr("topk(1, rejected)").evaluate(at_0).samples())
    [((('__name__', 'rejected'), ('reason', 'full'), ('route', '/b')), 4.0)]
    """

    op: str
    expr: Node
    grouping: tuple[str, ...] = ()
    without: bool = False
    param: Node | None = None  # k of topk / bottomk, φ of quantile: a scalar expression
    label: str = ""  # count_values' label name
    kind = "vector"
    # Per store: the groups of the last input vector, and a memo of group labels by input labels.
    _groups: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)
    _memo: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def __post_init__(self) -> None:
        assert self.op in AGGREGATIONS, self.op
        self._names = frozenset(self.grouping)

    def reach_ms(self) -> int:
        return max(self.expr.reach_ms(), self.param.reach_ms() if self.param is not None else 0)

    def combines_series(self, keep: frozenset[str]) -> bool:
        """Whether a group can hold series that differ in a label of ``keep``."""
        if self.without:
            return bool(keep & self._names)
        return not keep <= self._names

    def evaluate(self, ctx: EvalContext) -> Value:
        # As Prometheus: the parameter first, then the vector, then the parameter's checks.
        param = None
        if self.param is not None:
            value = self.param.evaluate(ctx)
            assert isinstance(value, Scalar)  # the parser type-checks the parameter
            param = value.value
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        return self.aggregate(ctx.store, vector, param)

    def aggregate(self, store: SeriesStore, vector: InstantVector, param: float | None = None) -> InstantVector:
        """The aggregation of an input already evaluated (``param``: the parameter's value, if it has one);
        aggregations of one input (the partials of ``avg`` or ``stddev``) evaluate it once."""
        if self.op == "count_values":
            return self._count_values(vector)
        k = 0
        if self.op in ("topk", "bottomk"):
            assert param is not None
            if not (_MIN_K <= param <= _MAX_K):  # NaN too
                raise EvaluationError(f"Scalar value {_go_float_v(param)} overflows int64")
            k = int(param)
            if k < 1:
                return InstantVector.empty()
        if not len(vector):
            return InstantVector.empty()
        groups = self._grouped(store, vector.labels)
        values = vector.values
        if self.op in ("topk", "bottomk"):
            return _select(vector, groups, k, top=self.op == "topk")
        with np.errstate(all="ignore"):  # inf and NaN arise as in Go's float arithmetic
            result = _REDUCERS[self.op](values, groups, param)
        return InstantVector(list(groups.result), result)

    # --- Grouping. ------------------------------------------------------------------------

    def _signature(self, labels: Labels) -> Labels:
        if self.without:
            return tuple(p for p in labels if p[0] != METRIC_NAME and p[0] not in self._names)
        return tuple(p for p in labels if p[0] in self._names)

    def _grouped(self, store: SeriesStore, labels: list[Labels]) -> _Groups:
        """The groups of ``labels``, reused while the input holds the same series in the same order."""
        cached: _Groups | None = self._groups.get(store)
        # List equality compares identical label tuples by identity: fast for the same series.
        if cached is not None and cached.labels == labels:
            return cached
        labels = list(labels)  # a copy: the input's list could change after this evaluation
        if not self.without and not self.grouping:
            groups = _Groups(labels, np.zeros(len(labels), dtype=np.intp), [()])
        else:
            memo: _Memo | None = self._memo.get(store)
            if memo is None or len(memo.ids) > len(labels) + _MEMO_SLACK:
                memo = self._memo[store] = _Memo()
            ids = [memo.ids.get(l, -1) for l in labels]
            if -1 in ids:
                for i, l in enumerate(labels):
                    if ids[i] == -1:
                        ids[i] = memo.add(l, self._signature(l))
            present, group_of = np.unique(np.asarray(ids, dtype=np.intp), return_inverse=True)
            groups = _Groups(labels, group_of.reshape(-1), [memo.signatures[s] for s in present.tolist()])
        self._groups[store] = groups
        return groups

    # --- count_values. --------------------------------------------------------------------

    def _count_values(self, vector: InstantVector) -> InstantVector:
        if not LABEL_NAME.fullmatch(self.label):
            raise EvaluationError(f"invalid label name {go_quote(self.label)}")
        if not len(vector):
            return InstantVector.empty()
        bits, inverse = np.unique(vector.values.view(np.uint64), return_inverse=True)
        texts = [_go_format_f(v) for v in bits.view(np.float64).tolist()]
        keep = self._names | {self.label}
        counts: dict[Labels, int] = {}
        for labels, t in zip(vector.labels, inverse.reshape(-1).tolist()):
            metric = dict(labels)
            metric[self.label] = texts[t]
            if self.without:
                sig = tuple(sorted(p for p in metric.items() if p[0] != METRIC_NAME and p[0] not in self._names))
            else:
                sig = tuple(sorted(p for p in metric.items() if p[0] in keep))
            counts[sig] = counts.get(sig, 0) + 1
        return InstantVector(list(counts), np.asarray(list(counts.values()), dtype=np.float64))


# --- Reducers: one value per group. --------------------------------------------------------

Reducer = Callable[[np.ndarray, _Groups, "float | None"], np.ndarray]


def _sum(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
    n_groups = len(groups.result)
    # bincount adds in input order, from 0.0: what Prometheus gets adding from the first
    # sample, but for a group of only -0 samples (Prometheus: -0).
    total = np.bincount(groups.group_of, weights=values, minlength=n_groups)
    negative_zero = (values == 0) & np.signbit(values)
    if negative_zero.any():
        all_negative_zero = np.bincount(groups.group_of, weights=negative_zero, minlength=n_groups) == np.bincount(
            groups.group_of, minlength=n_groups
        )
        total[all_negative_zero] = -0.0
    return total


def _count(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
    return np.bincount(groups.group_of, minlength=len(groups.result)).astype(np.float64)


def _group(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
    return np.ones(len(groups.result))


def _extreme(largest: bool) -> Reducer:
    def reduce(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
        order, sizes, starts = groups.by_group()
        ordered = values[order]
        # fmax / fmin skip NaN: a group's result is NaN only if all of it is NaN.
        result = (np.fmax if largest else np.fmin).reduceat(ordered, starts)
        # Prometheus replaces its value only by a strictly larger (smaller) one: of -0 and 0,
        # the first one seen stays.
        zero = result == 0
        if zero.any():
            positions = np.flatnonzero(ordered == 0)
            hit, first = np.unique(np.searchsorted(starts, positions, side="right") - 1, return_index=True)
            mask = zero[hit]
            result[hit[mask]] = ordered[positions[first[mask]]]
        return result

    return reduce


def _avg_python(values: list[float]) -> float:
    mean, n = values[0], 1
    for v in values[1:]:
        n += 1
        # An infinite mean stays through finite values and through infinities of its
        # sign (the update would turn it into NaN).
        if math.isinf(mean) and (math.isfinite(v) or (math.isinf(v) and (mean > 0) == (v > 0))):
            continue
        mean += v / n - mean / n  # each term divided by the count: no overflow
    return mean


def _avg_step(state: list[np.ndarray], v: np.ndarray, n: float) -> list[np.ndarray]:
    (mean,) = state
    stays = np.isinf(mean) & (np.isfinite(v) | (np.isinf(v) & ((mean > 0) == (v > 0))))
    return [np.where(stays, mean, mean + (v / n - mean / n))]


def _avg(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
    return _fold(values, groups, _avg_python, lambda first: [first], _avg_step, lambda state, sizes: state[0])


def _stdvar_python(values: list[float]) -> float:
    # Welford: a running mean and sum of squared deviations.
    mean, squares, n = values[0], 0.0, 1
    for v in values[1:]:
        n += 1
        delta = v - mean
        mean += delta / n
        squares += delta * (v - mean)
    return squares / n


def _stdvar_step(state: list[np.ndarray], v: np.ndarray, n: float) -> list[np.ndarray]:
    mean, squares = state
    delta = v - mean
    mean = mean + delta / n
    return [mean, squares + delta * (v - mean)]


def _stdvar(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
    return _fold(
        values,
        groups,
        _stdvar_python,
        lambda first: [first, np.zeros(len(first))],
        _stdvar_step,
        lambda state, sizes: state[1] / sizes,
    )


def _stddev(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
    return np.sqrt(_stdvar(values, groups, param))


Step = Callable[[list[np.ndarray], np.ndarray, float], list[np.ndarray]]


def _fold(
    values: np.ndarray,
    groups: _Groups,
    python: Callable[[list[float]], float],
    start: Callable[[np.ndarray], list[np.ndarray]],
    step: Step,
    finish: Callable[[list[np.ndarray], np.ndarray], np.ndarray],
) -> np.ndarray:
    """A sequential update run over each group's samples in input order, as Prometheus runs it.

    Either position by position over all groups at once (one numpy step per
    position in a group) or group by group in Python floats (the same IEEE
    arithmetic), whichever is cheaper: 10,000 groups of one sample are one
    numpy step, one group of 10,000 samples is 10,000 Python steps.
    """
    order, sizes, starts = groups.by_group()
    ordered = values[order]
    longest = int(sizes.max())
    if longest * 25 > len(values):
        flat = ordered.tolist()
        return np.array([python(flat[s : s + n]) for s, n in zip(starts.tolist(), sizes.tolist())], dtype=np.float64)
    # Rows are groups, longest first, so that the groups still going at a position are a prefix.
    by_size = np.argsort(-sizes, kind="stable")
    row = np.empty_like(by_size)
    row[by_size] = np.arange(len(by_size))
    matrix = np.zeros((len(sizes), longest))
    matrix[np.repeat(row, sizes), np.arange(len(values)) - np.repeat(starts, sizes)] = ordered
    going = np.searchsorted(-sizes[by_size], -np.arange(longest), side="left")  # how many have size > j
    state = [s.copy() for s in start(matrix[:, 0])]
    for j in range(1, longest):
        a = int(going[j])
        for s, new in zip(state, step([s[:a] for s in state], matrix[:a, j], float(j + 1))):
            s[:a] = new
    return finish([s[row] for s in state], sizes.astype(np.float64))


def _quantile(values: np.ndarray, groups: _Groups, param: float | None) -> np.ndarray:
    assert param is not None
    n_groups = len(groups.result)
    if math.isnan(param):
        return np.full(n_groups, np.nan)
    if param < 0 or param > 1:
        return np.full(n_groups, -np.inf if param < 0 else np.inf)
    # Each group ascending, NaN first.
    ordered = values[np.lexsort((values, ~np.isnan(values), groups.group_of))]
    sizes = np.bincount(groups.group_of, minlength=n_groups)
    starts = np.cumsum(sizes) - sizes
    n = sizes.astype(np.float64)
    rank = param * (n - 1)
    lower = np.maximum(0.0, np.floor(rank))
    upper = np.minimum(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    return ordered[starts + lower.astype(np.intp)] * (1 - weight) + ordered[starts + upper.astype(np.intp)] * weight


def _select(vector: InstantVector, groups: _Groups, k: int, top: bool) -> InstantVector:
    """topk / bottomk: per group the k largest (smallest) samples, NaN last, earlier first among equals."""
    values = vector.values
    key = -values if top else values
    order = np.lexsort((np.arange(len(values)), key, np.isnan(values), groups.group_of))
    group_sorted = groups.group_of[order]
    sizes = np.bincount(group_sorted, minlength=len(groups.result))
    position = np.arange(len(order)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    chosen = order[position < k]
    return InstantVector([vector.labels[i] for i in chosen.tolist()], values[chosen])


_REDUCERS: dict[str, Reducer] = {
    "sum": _sum,
    "avg": _avg,
    "min": _extreme(largest=False),
    "max": _extreme(largest=True),
    "count": _count,
    "group": _group,
    "stddev": _stddev,
    "stdvar": _stdvar,
    "quantile": _quantile,
}


# --- Go's float formatting. -----------------------------------------------------------------


def _go_float_v(value: float) -> str:
    """A float outside int64 as Go's ``%v`` prints it (always in e-notation there)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)  # shortest digits, e+NN exponent: as Go for |value| >= 1e16


def _go_format_f(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'f', -1, 64)``: shortest exact digits, never an exponent.

    >>> [_go_format_f(v) for v in (1.0, 0.1, -0.0, 1e21, 1e-7, 123456789012.0, float("-inf"), float("nan"))]
    ['1', '0.1', '-0', '1000000000000000000000', '0.0000001', '123456789012', '-Inf', 'NaN']
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(value)).normalize(), "f")


__all__ = ["AGGREGATIONS", "LABEL_NAME", "AggregateNode"]
