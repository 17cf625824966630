"""``absent(v)`` and ``absent_over_time(x[r])``: a sample of value 1 when there is nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.labels import METRIC_NAME, Labels
from detector.promql.plan import EvalContext, Matcher, Node, SelectorNode
from detector.promql.subquery import SubqueryNode
from detector.promql.values import InstantVector, Value


def absent_labels(matchers: Sequence[Matcher]) -> Labels:
    """The labels ``absent(x{...})`` gives, from its matchers in order, as Prometheus 2.42 derives them.

    Each ``=`` matcher of a label not set yet sets it; any other matcher of a
    label (``!=``, ``=~``, ``!~``, a second ``=``) removes it; the name and
    empty values never count. The order matters: ``job!~"b", job="x"`` keeps
    ``job``, ``job="x", job!~"b"`` does not (a rule's matchers come in
    Prometheus's printed order, see :func:`detector.promql.compile.compile_expr`).

    >>> ms = [Matcher.create(*m) for m in [("__name__", "=", "up"), ("job", "=", "api"), ("env", "=~", "p.*"),
    ...       ("dc", "=", "a"), ("dc", "=", "b"), ("team", "=", ""), ("zone", "!=", "b"), ("zone", "=", "a")]]
    >>> absent_labels(ms)
    (('job', 'api'), ('zone', 'a'))
    """
    found: dict[str, str] = {}
    has: set[str] = set()
    for m in matchers:
        if m.name == METRIC_NAME:
            continue
        if m.op == "=" and m.name not in has:
            found[m.name] = m.value
            has.add(m.name)
        else:
            found.pop(m.name, None)
    return tuple(sorted((k, v) for k, v in found.items() if v != ""))


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
    subquery: SubqueryNode | None = None  # absent_over_time(expr[5m:1m]): its labels are always empty
    kind = "vector"

    def combines_series(self, keep: frozenset[str]) -> bool:
        return True  # "no such series anywhere" is a question about every partition

    def reach_ms(self) -> int:
        if self.expr is not None:
            return self.expr.reach_ms()
        if self.subquery is not None:
            return self.subquery.reach_ms()
        assert self.selector is not None
        return self.range_ms + self.selector.offset_ms

    def evaluate(self, ctx: EvalContext) -> Value:
        if self.expr is not None:
            present = len(self.expr.evaluate(ctx)) > 0  # type: ignore[arg-type]
        elif self.subquery is not None:
            present = bool(np.any(self.subquery.matrix(ctx)[3] > 0))
        else:
            assert self.selector is not None
            rows = self.selector.rows(ctx.store)
            parts = ctx.store.windows(rows, self.selector.read_time(ctx, self.range_ms), self.range_ms)
            present = any(bool(np.any(counts > 0)) for _, _, _, counts in parts)
        return InstantVector.empty() if present else InstantVector([self.labels], np.ones(1))
