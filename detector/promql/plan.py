"""Plan nodes: compiled PromQL, evaluated at one instant against a series store.

Semantics follow Prometheus 2.x (the oracle here is Debian's 2.42): the
5-minute lookback is closed at both ends, a staleness marker ends a series at
once, comparisons filter and keep the vector side's value, arithmetic and
``bool`` comparisons drop the metric name.
"""

from __future__ import annotations

import re
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from detector.errors import HeadroomError
from detector.labels import METRIC_NAME, Labels
from detector.promql.values import InstantVector, Scalar, Value
from detector.store import SeriesStore

DEFAULT_LOOKBACK_MS = 300_000


class EvaluationError(HeadroomError):
    """An expression failed at evaluation time (Prometheus fails the rule the same way)."""


@dataclass(slots=True)
class EvalContext:
    store: SeriesStore
    t_ms: int
    lookback_ms: int = DEFAULT_LOOKBACK_MS


class Node(ABC):
    """One compiled expression; ``kind`` is ``"vector"`` or ``"scalar"``."""

    kind: str

    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> Value: ...

    def reach_ms(self) -> int:
        """How far before the evaluation time this expression reads samples (beyond lookback)."""
        return 0


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


@dataclass(eq=False)
class SelectorNode(Node):
    """An instant-vector selector such as ``pgmq_queue_depth{queue_name=~"o.*"} offset 1m``."""

    matchers: tuple[Matcher, ...]
    offset_ms: int = 0
    kind = "vector"
    # Rows already known to match, per store, and how many series were checked.
    _matched: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary, repr=False)

    def reach_ms(self) -> int:
        return self.offset_ms

    def rows(self, store: SeriesStore) -> np.ndarray:
        """Rows of ``store`` whose labels satisfy every matcher (new series checked once)."""
        checked, rows = self._matched.get(store, (0, np.zeros(0, dtype=np.int64)))
        if checked < len(store):
            new = [sid for sid in range(checked, len(store)) if self._match(store.labels[sid])]
            if new:
                rows = np.concatenate([rows, np.asarray(new, dtype=np.int64)])
            self._matched[store] = (len(store), rows)
        return rows

    def _match(self, labels: Labels) -> bool:
        values = dict(labels)
        return all(m.matches(values.get(m.name, "")) for m in self.matchers)

    def evaluate(self, ctx: EvalContext) -> Value:
        rows = self.rows(ctx.store)
        found, values = ctx.store.instant(rows, ctx.t_ms - self.offset_ms, ctx.lookback_ms)
        hits = rows[found]
        return InstantVector([ctx.store.labels[r] for r in hits], values[found])


@dataclass(eq=False)
class NegateNode(Node):
    expr: Node

    def __post_init__(self) -> None:
        self.kind = self.expr.kind

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        value = self.expr.evaluate(ctx)
        if isinstance(value, Scalar):
            return Scalar(-value.value)
        return InstantVector([_drop_name(l) for l in value.labels], -value.values)


def _fmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.fmod(a, b)  # Go's math.Mod: the sign follows the dividend


ARITHMETIC: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": _fmod,
    "^": np.power,
    "atan2": np.arctan2,
}
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

    def signature(self, labels: Labels) -> Labels:
        if self.on:
            return tuple(p for p in labels if p[0] in self.labels)
        return tuple(p for p in labels if p[0] != METRIC_NAME and p[0] not in self.labels)


@dataclass(eq=False)
class BinaryNode(Node):
    op: str
    lhs: Node
    rhs: Node
    return_bool: bool = False
    matching: VectorMatching = field(default_factory=VectorMatching)

    def __post_init__(self) -> None:
        self.kind = "scalar" if self.lhs.kind == self.rhs.kind == "scalar" else "vector"

    def reach_ms(self) -> int:
        return max(self.lhs.reach_ms(), self.rhs.reach_ms())

    def evaluate(self, ctx: EvalContext) -> Value:
        left, right = self.lhs.evaluate(ctx), self.rhs.evaluate(ctx)
        if isinstance(left, Scalar) and isinstance(right, Scalar):
            return self._scalars(left.value, right.value)
        if isinstance(left, InstantVector) and isinstance(right, InstantVector):
            if self.op in SET_OPERATORS:
                return self._set_operation(left, right)
            return self._vectors(left, right)
        if isinstance(left, InstantVector):
            return self._vector_scalar(left, right.value, scalar_on_left=False)  # type: ignore[union-attr]
        return self._vector_scalar(right, left.value, scalar_on_left=True)  # type: ignore[arg-type]

    def _scalars(self, a: float, b: float) -> Scalar:
        x, y = np.array([a]), np.array([b])
        if self.op in COMPARISON:
            return Scalar(float(bool(COMPARISON[self.op](x, y)[0])))
        with np.errstate(all="ignore"):
            return Scalar(float(ARITHMETIC[self.op](x, y)[0]))

    def _vector_scalar(self, vec: InstantVector, scalar: float, scalar_on_left: bool) -> InstantVector:
        other = np.full(len(vec), scalar)
        lhs, rhs = (other, vec.values) if scalar_on_left else (vec.values, other)
        with np.errstate(all="ignore"):
            if self.op in ARITHMETIC:
                return _unique(InstantVector([_drop_name(l) for l in vec.labels], ARITHMETIC[self.op](lhs, rhs)))
            keep = COMPARISON[self.op](lhs, rhs)
        if self.return_bool:
            return _unique(InstantVector([_drop_name(l) for l in vec.labels], keep.astype(np.float64)))
        return vec.select(keep)  # the vector's own value, whichever side it is on

    def _vectors(self, left: InstantVector, right: InstantVector) -> InstantVector:
        m = self.matching
        # "one" side: the side whose signatures must be unique.
        many, one, swapped = (right, left, True) if m.card == "one-to-many" else (left, right, False)
        one_by_sig: dict[Labels, int] = {}
        for i, labels in enumerate(one.labels):
            sig = m.signature(labels)
            if sig in one_by_sig:
                side = "left" if swapped else "right"
                raise EvaluationError(
                    f"found duplicate series for the match group {_fmt(sig)} on the {side} hand-side of the "
                    f"operation: [{_fmt(one.labels[one_by_sig[sig]])}, {_fmt(labels)}]; many-to-many matching "
                    "not allowed: matching labels must be unique on one side"
                )
            one_by_sig[sig] = i
        many_idx, one_idx = [], []
        seen: set[Labels] = set()
        for i, labels in enumerate(many.labels):
            sig = m.signature(labels)
            j = one_by_sig.get(sig)
            if j is None:
                continue
            if m.card == "one-to-one":
                if sig in seen:
                    raise EvaluationError(
                        f"multiple matches for labels: many-to-one matching must be explicit "
                        f"(group_left/group_right); match group {_fmt(sig)}"
                    )
                seen.add(sig)
            many_idx.append(i)
            one_idx.append(j)
        if not many_idx:
            return InstantVector.empty()
        mv, ov = many.values[many_idx], one.values[one_idx]
        lv, rv = (ov, mv) if swapped else (mv, ov)
        with np.errstate(all="ignore"):
            if self.op in ARITHMETIC:
                values, keep = ARITHMETIC[self.op](lv, rv), np.ones(len(mv), dtype=bool)
            else:
                keep = COMPARISON[self.op](lv, rv)
                values = keep.astype(np.float64) if self.return_bool else lv
        if not self.return_bool:
            sel = np.flatnonzero(keep)
            many_idx = [many_idx[k] for k in sel]
            one_idx = [one_idx[k] for k in sel]
            values = values[sel]
        drop_name = self.op in ARITHMETIC or self.return_bool
        labels = [
            self._result_labels(many.labels[i], one.labels[j], drop_name) for i, j in zip(many_idx, one_idx)
        ]
        return _unique(InstantVector(labels, np.asarray(values, dtype=np.float64)))

    def _result_labels(self, many: Labels, one: Labels, drop_name: bool) -> Labels:
        m = self.matching
        out = dict(many)
        if drop_name:
            out.pop(METRIC_NAME, None)
        if m.card == "one-to-one":
            if m.on:
                out = {k: v for k, v in out.items() if k in m.labels}
            else:
                for name in m.labels:
                    out.pop(name, None)
        else:
            one_values = dict(one)
            for name in m.include:
                if name in one_values:
                    out[name] = one_values[name]
                else:
                    out.pop(name, None)
        return tuple(sorted(out.items()))

    def _set_operation(self, left: InstantVector, right: InstantVector) -> InstantVector:
        sig = self.matching.signature
        right_sigs = {sig(l) for l in right.labels}
        if self.op == "and":
            return left.select(np.array([sig(l) in right_sigs for l in left.labels], dtype=bool))
        if self.op == "unless":
            return left.select(np.array([sig(l) not in right_sigs for l in left.labels], dtype=bool))
        left_sigs = {sig(l) for l in left.labels}
        extra = right.select(np.array([sig(l) not in left_sigs for l in right.labels], dtype=bool))
        return InstantVector(left.labels + extra.labels, np.concatenate([left.values, extra.values]))


def _drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != METRIC_NAME)


def _unique(vec: InstantVector) -> InstantVector:
    if len(set(vec.labels)) != len(vec.labels):
        raise EvaluationError("vector cannot contain metrics with the same labelset")
    return vec


def _fmt(labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


__all__ = [
    "ARITHMETIC",
    "BinaryNode",
    "COMPARISON",
    "EvalContext",
    "EvaluationError",
    "Matcher",
    "NegateNode",
    "Node",
    "NumberNode",
    "SET_OPERATORS",
    "SelectorNode",
    "VectorMatching",
]
