"""``absent(v)`` and ``absent_over_time(x[r])``: a sample of value 1 when there is nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.labels import METRIC_NAME, Labels
from detector.promql.plan import EvalContext, Matcher, Node, SelectorNode
from detector.promql.values import InstantVector, Value


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
            _, _, counts = ctx.store.window(rows, ctx.t_ms - self.selector.offset_ms, self.range_ms)
            present = bool(np.any(counts > 0))
        return InstantVector.empty() if present else InstantVector([self.labels], np.ones(1))
