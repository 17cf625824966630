"""Plan nodes: compiled PromQL, evaluated at one instant against a series store.

Semantics follow Prometheus 2.x (the oracle here is Debian's 2.42): the
5-minute lookback is closed at both ends, a staleness marker ends a series at
once, comparisons filter and keep the vector side's value, arithmetic and
``bool`` comparisons drop the metric name (``atan2`` keeps it, as in 2.x),
and ``^`` and ``atan2`` are computed bit for bit as Go's math package does.
"""

from __future__ import annotations

import re
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from detector.errors import HeadroomError
from detector.labels import METRIC_NAME, Labels
from detector.promql.values import InstantVector, Scalar, Value
from detector.store import SeriesStore
from detector.output.templates import format_labels

DEFAULT_LOOKBACK_MS = 300_000


class EvaluationError(HeadroomError):
    """An expression failed at evaluation time (Prometheus fails the rule the same way)."""


@dataclass(slots=True)
class EvalContext:
    store: SeriesStore
    t_ms: int
    lookback_ms: int = DEFAULT_LOOKBACK_MS
    # The rule's evaluation time, when t_ms is a subquery's step: what @ start() and @ end() mean.
    query_ms: int | None = None

    @property
    def evaluation_ms(self) -> int:
        return self.t_ms if self.query_ms is None else self.query_ms


class Node(ABC):
    """One compiled expression; ``kind`` is ``"vector"`` or ``"scalar"``."""

    kind: str

    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> Value: ...

    def reach_ms(self) -> int:
        """How far before the evaluation time this expression reads samples (beyond lookback)."""
        return 0

    def lead_ms(self) -> int:
        """How far after the evaluation time this expression reads samples (a negative offset)."""
        return max((child.lead_ms() for child in self.children()), default=0)

    def children(self) -> tuple[Node, ...]:
        """The sub-expressions this node evaluates."""
        found: list[Node] = []
        for value in vars(self).values():
            if isinstance(value, Node):
                found.append(value)
            elif isinstance(value, (tuple, list)):
                found += [v for v in value if isinstance(v, Node)]
        return tuple(found)

    def combines_series(self, keep: frozenset[str]) -> bool:
        """Whether this node puts series together that differ in a label of ``keep``.

        The worker co-locates series that share their ``keep`` labels (their
        scrape target); a node that combines series across them must be
        evaluated where all series are (see :mod:`detector.rules.placement`).
        """
        return False


@dataclass(eq=False)
class NumberNode(Node):
    value: float
    kind = "scalar"

    def evaluate(self, ctx: EvalContext) -> Value:
        return Scalar(self.value)


@dataclass(frozen=True)
class Matcher:
    """A label matcher; regexes are anchored, as in Prometheus."""

    name: str
    op: str  # "=", "!=", "=~", "!~"
    value: str
    pattern: re.Pattern[str] | None = None

    @classmethod
    def create(cls, name: str, op: str, value: str) -> Matcher:
        pattern = re.compile(value, re.DOTALL) if op in ("=~", "!~") else None
        return cls(name, op, value, pattern)

    def matches(self, label_value: str) -> bool:
        if self.op == "=":
            return label_value == self.value
        if self.op == "!=":
            return label_value != self.value
        hit = self.pattern.fullmatch(label_value) is not None  # type: ignore[union-attr]
        return hit if self.op == "=~" else not hit


@dataclass(frozen=True)
class At:
    """The ``@`` modifier: a fixed time (``@ 1700000000``), or the rule's evaluation time (``@ start()``, ``@ end()``).

    A rule is an instant query, so start() and end() are both its evaluation
    time, also inside a subquery (as Prometheus 2.42 preprocesses them). A
    fixed time is read as long as it is not after the evaluation time (a stream
    has not seen it yet) and what it reads is still in the store; otherwise the
    evaluation fails, naming the rule.
    """

    fixed_ms: int | None = None  # None: the evaluation time

    def time(self, ctx: EvalContext, reach_ms: int) -> int:
        if self.fixed_ms is None:
            return ctx.evaluation_ms
        now = ctx.evaluation_ms
        if self.fixed_ms > now:
            raise EvaluationError(f"@ {self.fixed_ms / 1000:g} is after the evaluation time: the stream has not seen it yet")
        if self.fixed_ms - reach_ms - ctx.lookback_ms < now - ctx.store.retention_ms:
            raise EvaluationError(
                f"@ {self.fixed_ms / 1000:g} reads samples older than the stream keeps ({ctx.store.retention_ms // 1000}s)"
            )
        return self.fixed_ms


@dataclass(eq=False)
class SelectorNode(Node):
    """An instant-vector selector such as ``pgmq_queue_depth{queue_name=~"o.*"} offset 1m``."""

    matchers: tuple[Matcher, ...]
    offset_ms: int = 0  # negative: reads after the evaluation time (see lead_ms)
    at: At | None = None  # the @ modifier
    kind = "vector"
    # Per store: a SelectorMatches (the rows known to match, as of the store's counts when last checked).
    _matched: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def reach_ms(self) -> int:
        return self.offset_ms

    def lead_ms(self) -> int:
        return max(0, -self.offset_ms)

    def read_time(self, ctx: EvalContext, range_ms: int = 0) -> int:
        """The time this selector reads at (the end of its range): the evaluation time, or its @ time, minus the offset."""
        return (ctx.t_ms if self.at is None else self.at.time(ctx, self.offset_ms + range_ms)) - self.offset_ms

    def rows(self, store: SeriesStore) -> np.ndarray:
        """Rows of ``store`` whose labels satisfy every matcher (new series checked once).

        A retired series' row leaves the result; a row reused by a new series
        is checked as any new series (the store's assignment numbers tell them apart).
        """
        return self.matched(store).rows

    def matched(self, store: SeriesStore) -> SelectorMatches:
        """The rows of ``store`` that match, brought up to date: the same object while they stay the same."""
        found = self._matched.get(store)
        if found is not None and found.seq == store.seq and found.retired == store.retired and found.epoch == store.epoch:
            return found
        if found is None or found.epoch != store.epoch:  # new, or a snapshot loaded: rows hold other series
            empty = np.zeros(0, dtype=np.int64)
            seq, rows, births = 0, empty, empty
        else:
            seq, rows, births = found.seq, found.rows, found.births
        if found is not None and found.epoch == store.epoch and found.retired != store.retired:
            same = store.still_same(rows, births)
            if not same.all():
                rows, births = rows[same], births[same]
        fresh = store.rows_added_since(seq)
        matchers = self.matchers
        name = next((m.value for m in matchers if m.name == METRIC_NAME and m.op == "="), None)
        if name is not None and len(fresh):
            # Narrowed by the metric name with numpy first: every selector checking every new
            # series was half a worker's CPU while 100k series were new (peers, 1000x10).
            fresh = _metric_names(store).rows_named(fresh, name)
            matchers = tuple(m for m in matchers if not (m.name == METRIC_NAME and m.op == "="))
        new = np.asarray([sid for sid in fresh.tolist() if _match_all(matchers, store.labels[sid])], dtype=np.int64)
        if len(new):
            rows = np.concatenate([rows, new])
            births = np.concatenate([births, store.births(new)])
        if found is not None and rows is found.rows:  # the same rows: keep the object (and its label sets)
            found.seq, found.retired, found.epoch = store.seq, store.retired, store.epoch
            return found
        found = self._matched[store] = SelectorMatches(store.seq, store.retired, store.epoch, rows, births)
        return found

    def _match(self, labels: Labels) -> bool:
        return _match_all(self.matchers, labels)

    def evaluate(self, ctx: EvalContext) -> Value:
        store = ctx.store
        found = self.matched(store)
        present, values = store.instant(found.rows, self.read_time(ctx), ctx.lookback_ms)
        labels = found.labels_in(store)
        if present.all():  # the usual case: every matched series has a sample (values is a fresh array)
            return InstantVector(list(labels), values)
        hits = np.flatnonzero(present)
        return InstantVector([labels[i] for i in hits.tolist()], values[hits])


@dataclass(eq=False, slots=True)
class SelectorMatches:
    """A selector's rows of one store (and their assignment numbers), as of the store's counts
    ``seq``, ``retired`` and ``epoch``; ``labels``, their label sets, once asked for.

    >>> from detector.promql import compile_expr
    >>> from detector.wire.batch import SampleBatch
    >>> store = SeriesStore(retention_ms=60_000)
    >>> _ = store.append(SampleBatch.from_series([((("__name__", "up"), ("job", "a")), [(0, 1.0)])]))
    >>> selector = compile_expr("up")
    >>> found = selector.matched(store)
    >>> found.rows.tolist(), found.labels_in(store)
    ([0], [(('__name__', 'up'), ('job', 'a'))])
    >>> selector.matched(store) is found  # nothing new in the store: the same matches, labels kept
    True
    """

    seq: int
    retired: int
    epoch: int
    rows: np.ndarray
    births: np.ndarray
    labels: list[Labels] | None = None

    def labels_in(self, store: SeriesStore) -> list[Labels]:
        """The label sets of :attr:`rows`, in row order (built once: a row's labels never change)."""
        if self.labels is None:
            held = store.labels
            self.labels = [held[r] for r in self.rows.tolist()]  # type: ignore[misc]
        return self.labels


def _match_all(matchers: tuple[Matcher, ...], labels: Labels) -> bool:
    if not matchers:
        return True
    values = dict(labels)
    return all(m.matches(values.get(m.name, "")) for m in matchers)


class _MetricNames:
    """The metric name of every row of one store, as small numbers, brought up to date by the
    store's assignment numbers (a reused row is a new assignment). Shared by the selectors of
    the store, so a new series' name is read once, not once per selector.

    >>> from detector.labels import canonical_bytes
    >>> store = SeriesStore(retention_ms=60_000)
    >>> rows = store.series_ids([canonical_bytes(((METRIC_NAME, n), ("job", "a"))) for n in ("up", "x", "up")])
    >>> _metric_names(store).rows_named(np.arange(2), "up").tolist()
    [0]
    """

    def __init__(self) -> None:
        self.seq = 0
        self.epoch = 0  # the store's epoch when last brought up to date (a snapshot loaded: every row again)
        self.numbers: dict[str, int] = {}
        self.of_row = np.full(0, -1, dtype=np.int32)

    def rows_named(self, rows: np.ndarray, name: str) -> np.ndarray:
        """Those of ``rows`` whose series is named ``name`` (as of the last :meth:`update`)."""
        number = self.numbers.get(name)
        return rows[self.of_row[rows] == number] if number is not None else rows[:0]

    def update(self, store: SeriesStore) -> None:
        if self.epoch != store.epoch:
            self.seq, self.epoch = 0, store.epoch
        if self.seq == store.seq:
            return
        fresh = store.rows_added_since(self.seq)
        if len(self.of_row) < len(store.labels):
            grown = np.full(max(len(store.labels), 2 * len(self.of_row)), -1, dtype=np.int32)
            grown[: len(self.of_row)] = self.of_row
            self.of_row = grown
        numbers, labels = self.numbers, store.labels
        self.of_row[fresh] = [numbers.setdefault(_name_of(labels[row]), len(numbers)) for row in fresh.tolist()]
        self.seq = store.seq


def _name_of(labels: Labels | None) -> str:
    for name, value in labels or ():  # None: a row freed since it was assigned
        if name == METRIC_NAME:
            return value
    return ""


_METRIC_NAMES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _metric_names(store: SeriesStore) -> _MetricNames:
    """The store's :class:`_MetricNames`, up to date."""
    names = _METRIC_NAMES.get(store)
    if names is None:
        names = _METRIC_NAMES[store] = _MetricNames()
    names.update(store)
    return names


@dataclass(eq=False)
class NegateNode(Node):
    """Unary minus: negates every value and drops the metric name."""

    expr: Node

    def __post_init__(self) -> None:
        self.kind = self.expr.kind

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        value = self.expr.evaluate(ctx)
        if isinstance(value, Scalar):
            return Scalar(-value.value)
        # -{__name__=~"a|b"} fails when a and b share their other labels.
        return _unique(InstantVector([_drop_name(l) for l in value.labels], -value.values))


# ``^`` and ``atan2`` use numpy (libm). Go's math.Pow and math.Atan2, which
# Prometheus uses, can differ from libm in the last few bits (Pow raises to
# integer powers by repeated squaring); a rule's threshold never sees that.


def _fmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.fmod(a, b)  # Go's math.Mod: exact, and the sign follows the dividend


ARITHMETIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": _fmod,
    "^": np.power,
    "atan2": np.arctan2,
}
# Prometheus 2.x drops the metric name for these, but not for atan2.
DROPS_METRIC_NAME = frozenset({"+", "-", "*", "/", "%", "^"})
COMPARISON: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}
SET_OPERATORS = ("and", "or", "unless")


@dataclass(frozen=True)
class VectorMatching:
    """``on(...)`` / ``ignoring(...)`` and ``group_left`` / ``group_right``."""

    on: bool = False
    labels: tuple[str, ...] = ()
    card: str = "one-to-one"  # "many-to-one", "one-to-many", "many-to-many"
    include: tuple[str, ...] = ()

    def keeps(self, names: frozenset[str]) -> bool:
        """Whether only samples that agree on all of ``names`` can match."""
        return names <= set(self.labels) if self.on else not names & set(self.labels)

    def signature(self, labels: Labels) -> Labels:
        """The labels two samples must share to match (``ignoring`` also ignores the name)."""
        if self.on:
            return tuple(p for p in labels if p[0] in self.labels)
        return tuple(p for p in labels if p[0] != METRIC_NAME and p[0] not in self.labels)


@dataclass(eq=False)
class BinaryNode(Node):
    """A binary operator between scalars and instant vectors, with Prometheus 2.x matching.

    Vector-vector operations evaluate as Prometheus does, in the same order,
    so the same inputs fail with the same error: both sides empty-checked
    first; duplicate signatures on the "one" side fail even if unmatched;
    a second match for one signature (one-to-one), or a repeated result label
    set within one signature (group_left/right), fails only among the samples
    a comparison keeps.
    """

    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    matching: VectorMatching = field(default_factory=VectorMatching)
    # Per store: how the last inputs' label sets matched (_Pairs), or what the vector side's
    # labels became (_Relabelled). A partition's inputs are the same label sets tick after tick.
    _pairs: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def __post_init__(self) -> None:
        self.kind = "scalar" if self.lhs.kind == self.rhs.kind == "scalar" else "vector"

    def reach_ms(self) -> int:
        return max(self.lhs.reach_ms(), self.rhs.reach_ms())

    def combines_series(self, keep: frozenset[str]) -> bool:
        vectors = self.lhs.kind == self.rhs.kind == "vector"
        return vectors and not self.matching.keeps(keep)

    def evaluate(self, ctx: EvalContext) -> Value:
        left, right = self.lhs.evaluate(ctx), self.rhs.evaluate(ctx)
        if isinstance(left, Scalar) and isinstance(right, Scalar):
            return self._scalars(left.value, right.value)
        if isinstance(left, InstantVector) and isinstance(right, InstantVector):
            if self.op in SET_OPERATORS:
                return self._set_operation(left, right, ctx.store)
            return self._vectors(left, right, ctx.store)
        if isinstance(left, InstantVector):
            return self._vector_scalar(left, right.value, scalar_on_left=False, store=ctx.store)  # type: ignore[union-attr]
        return self._vector_scalar(right, left.value, scalar_on_left=True, store=ctx.store)  # type: ignore[arg-type]

    def _scalars(self, a: float, b: float) -> Scalar:
        x, y = np.array([a]), np.array([b])
        if self.op in COMPARISON:
            return Scalar(float(bool(COMPARISON[self.op](x, y)[0])))
        with np.errstate(all="ignore"):
            return Scalar(float(ARITHMETIC[self.op](x, y)[0]))

    def _vector_scalar(self, vec: InstantVector, scalar: float, scalar_on_left: bool, store: SeriesStore) -> InstantVector:
        other = np.full(len(vec), scalar)
        lhs, rhs = (other, vec.values) if scalar_on_left else (vec.values, other)
        with np.errstate(all="ignore"):
            if self.op in ARITHMETIC:
                values = ARITHMETIC[self.op](lhs, rhs)
                if self.op not in DROPS_METRIC_NAME:
                    return InstantVector(list(vec.labels), values)
                return InstantVector(self._unnamed(vec.labels, store), values)
            keep = COMPARISON[self.op](lhs, rhs)
        if self.return_bool:
            return InstantVector(self._unnamed(vec.labels, store), keep.astype(np.float64))
        return vec.select(keep)  # the vector's own value, whichever side it is on

    def _unnamed(self, labels: list[Labels], store: SeriesStore) -> list[Labels]:
        """``labels`` without the metric name (they must stay distinct), remembered per store
        while the same label sets come in the same order."""
        cached = self._pairs.get(store)
        if isinstance(cached, _Relabelled) and cached.labels == labels:  # identical tuples compare by identity: fast
            return list(cached.result)
        result = [_drop_name(l) for l in labels]
        if len(set(result)) != len(result):
            raise EvaluationError("vector cannot contain metrics with the same labelset")
        self._pairs[store] = _Relabelled(list(labels), result)
        return list(result)

    def _vectors(self, left: InstantVector, right: InstantVector, store: SeriesStore) -> InstantVector:
        m = self.matching
        if not len(left) or not len(right):
            return InstantVector.empty()
        # The "one" side: the side whose signatures must be unique.
        swapped = m.card == "one-to-many"
        many, one = (right, left) if swapped else (left, right)
        pairs = self._pairs.get(store)
        # The matching is a function of the two label lists alone: reused while both are the same.
        if not (isinstance(pairs, _Pairs) and pairs.many == many.labels and pairs.one == one.labels):
            pairs = self._pairs[store] = self._match(many.labels, one.labels, swapped)
        if not len(pairs.labels):
            return InstantVector.empty()
        mv, ov = many.values[pairs.many_idx], one.values[pairs.one_idx]
        lv, rv = (ov, mv) if swapped else (mv, ov)  # a comparison keeps the left operand's value
        with np.errstate(all="ignore"):
            if self.op in ARITHMETIC:
                values, keep = ARITHMETIC[self.op](lv, rv), np.ones(len(mv), dtype=bool)
            else:
                keep = COMPARISON[self.op](lv, rv)
                values = lv
                if self.return_bool:
                    values, keep = keep.astype(np.float64), np.ones(len(mv), dtype=bool)
        kept = np.flatnonzero(keep)
        values = np.asarray(values, dtype=np.float64)[kept]
        if pairs.sigs is None:  # no choice of kept pairs can fail a check below: none to run
            every = len(kept) == len(pairs.labels)
            return InstantVector(list(pairs.labels) if every else [pairs.labels[k] for k in kept.tolist()], values)
        labels_out: list[Labels] = []
        matched: dict[Labels, set[Labels]] = {}
        for k in kept.tolist():
            labels, sig = pairs.labels[k], pairs.sigs[k]
            group = matched.get(sig)
            if m.card == "one-to-one":
                if group is not None:
                    raise EvaluationError(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    )
                matched[sig] = set()
            else:
                if group is None:
                    group = matched[sig] = set()
                elif labels in group:
                    raise EvaluationError("multiple matches for labels: grouping labels must ensure unique matches")
                group.add(labels)
            labels_out.append(labels)
        return _unique(InstantVector(labels_out, values))

    def _match(self, many: list[Labels], one: list[Labels], swapped: bool) -> _Pairs:
        """Which sample of ``one`` each sample of ``many`` matches, and each pair's result labels.

        Raises, as Prometheus does, where two samples of the "one" side share a signature.
        """
        m = self.matching
        one_by_sig: dict[Labels, int] = {}
        for i, labels in enumerate(one):
            sig = m.signature(labels)
            first = one_by_sig.setdefault(sig, i)
            if first != i:
                side = "left" if swapped else "right"
                raise EvaluationError(
                    f"found duplicate series for the match group {format_labels(sig)} on the {side} hand-side of the "
                    f"operation: [{format_labels(labels)}, {format_labels(one[first])}];many-to-many matching "
                    "not allowed: matching labels must be unique on one side"
                )
        many_idx, one_idx, sigs = [], [], []
        for i, labels in enumerate(many):
            sig = m.signature(labels)
            j = one_by_sig.get(sig)
            if j is not None:
                many_idx.append(i)
                one_idx.append(j)
                sigs.append(sig)
        result = [self._result_labels(many[i], one[j]) for i, j in zip(many_idx, one_idx)]
        # The checks on kept pairs (one match per signature, or distinct labels within one; distinct
        # results) can fail for some choice of kept pairs only if they fail for all of them.
        if m.card == "one-to-one":
            safe = len(set(sigs)) == len(sigs)
        else:
            safe = len(set(zip(sigs, result))) == len(result)
        safe = safe and len(set(result)) == len(result)
        return _Pairs(list(many), list(one), np.asarray(many_idx, dtype=np.intp), np.asarray(one_idx, dtype=np.intp),
                      result, None if safe else sigs)

    def _result_labels(self, many: Labels, one: Labels) -> Labels:
        """Labels of a vector-vector result: the "many" side's, as Prometheus 2.x builds them."""
        m = self.matching
        out = dict(many)
        if self.op in DROPS_METRIC_NAME:
            out.pop(METRIC_NAME, None)
        if m.card == "one-to-one":
            if m.on:
                out = {k: v for k, v in out.items() if k in m.labels}
            else:
                for name in m.labels:
                    out.pop(name, None)
        one_values = dict(one)
        for name in m.include:  # group_left(x): x copied from the "one" side, or removed
            if name in one_values:
                out[name] = one_values[name]
            else:
                out.pop(name, None)
        if self.return_bool:  # after the include labels: `bool` drops even an included name
            out.pop(METRIC_NAME, None)
        return tuple(sorted(out.items()))

    def _set_operation(self, left: InstantVector, right: InstantVector, store: SeriesStore) -> InstantVector:
        cached = self._pairs.get(store)
        # Which samples a set operator keeps depends on the label lists alone: reused while both are the same.
        if isinstance(cached, _Picked) and cached.left == left.labels and cached.right == right.labels:
            pick = cached.pick
        else:
            sig = self.matching.signature
            if self.op == "or":
                left_sigs = {sig(l) for l in left.labels}
                pick = np.flatnonzero(np.array([sig(l) not in left_sigs for l in right.labels], dtype=bool))
            else:
                right_sigs = {sig(l) for l in right.labels}
                wanted = self.op == "and"
                pick = np.flatnonzero(np.array([(sig(l) in right_sigs) == wanted for l in left.labels], dtype=bool))
            self._pairs[store] = _Picked(list(left.labels), list(right.labels), pick)
        if self.op != "or":
            return InstantVector([left.labels[i] for i in pick.tolist()], left.values[pick])
        extra = InstantVector([right.labels[i] for i in pick.tolist()], right.values[pick])
        return InstantVector(left.labels + extra.labels, np.concatenate([left.values, extra.values]))


@dataclass(eq=False, slots=True)
class _Pairs:
    """How two vectors' samples matched: the label lists it was computed for, the matched pairs
    (``many_idx[k]`` with ``one_idx[k]``) and their result labels; ``sigs``, each pair's signature,
    only where some choice of kept pairs can fail a check (None: none can)."""

    many: list[Labels]
    one: list[Labels]
    many_idx: np.ndarray
    one_idx: np.ndarray
    labels: list[Labels]
    sigs: list[Labels] | None


@dataclass(eq=False, slots=True)
class _Relabelled:
    """A vector's label sets and what they became (distinct): the metric name dropped."""

    labels: list[Labels]
    result: list[Labels]


@dataclass(eq=False, slots=True)
class _Picked:
    """The samples a set operator keeps (of the left side; of the right for ``or``) for these label lists."""

    left: list[Labels]
    right: list[Labels]
    pick: np.ndarray


def _drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != METRIC_NAME)


def _unique(vec: InstantVector) -> InstantVector:
    if len(set(vec.labels)) != len(vec.labels):
        raise EvaluationError("vector cannot contain metrics with the same labelset")
    return vec


__all__ = [
    "ARITHMETIC",
    "At",
    "BinaryNode",
    "COMPARISON",
    "DROPS_METRIC_NAME",
    "EvalContext",
    "EvaluationError",
    "Matcher",
    "NegateNode",
    "Node",
    "NumberNode",
    "SET_OPERATORS",
    "SelectorMatches",
    "SelectorNode",
    "VectorMatching",
]
