"""Subqueries, ``expr[5m:1m] offset 1m``: an instant expression evaluated at steps, as the range of a range function.

As Prometheus 2.42 evaluates them (``promql/engine.go``): the steps are the
absolute multiples of the resolution (``1m``) in the closed interval
[t - offset - range, t - offset]; the resolution defaults to the global
evaluation interval when omitted (``[5m:]``; promtool's test engine uses 1m).
Each step evaluates the inner expression exactly as an instant query at that
time; the samples of each label set, in time order, are then one row of the
range function's :class:`~detector.promql.functions.ranges.Window`, with the
range ending at t - offset.

>>> from detector.wire.batch import SampleBatch
>>> from detector.store import SeriesStore
>>> from detector.promql import compile_expr
>>> store = SeriesStore(retention_ms=3_600_000)
>>> x = (("__name__", "x"), ("job", "a"))
>>> _ = store.append(SampleBatch.from_series([(x, [(t, t / 1000) for t in range(0, 600_001, 15_000)])]))
>>> node = compile_expr("max_over_time(x[5m:2m] offset 30s)")
>>> node.subquery.steps(600_000)  # multiples of 2m in [600s - 30s - 300s, 600s - 30s]
[360000, 480000]
>>> list(node.evaluate(EvalContext(store, t_ms=600_000)).samples())
[((('job', 'a'),), 480.0)]
>>> node.reach_ms()  # the store keeps range + offset before the evaluation time, and the lookback
330000
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.labels import Labels
from detector.promql.plan import At, EvalContext, EvaluationError, Node, SelectorNode
from detector.promql.values import InstantVector, Value


@dataclass(eq=False)
class SubqueryNode(Node):
    """``expr[range:step] offset o``; only a range function evaluates it, through :meth:`matrix`."""

    expr: Node
    range_ms: int
    step_ms: int
    offset_ms: int = 0
    at: At | None = None
    kind = "matrix"

    def reach_ms(self) -> int:
        return self.offset_ms + self.range_ms + self.expr.reach_ms()

    def lead_ms(self) -> int:
        return max(0, self.expr.lead_ms() - self.offset_ms)

    def end(self, ctx: EvalContext) -> int:
        """Where the range ends: the evaluation time (or the @ time) minus the offset."""
        base = ctx.t_ms if self.at is None else self.at.time(ctx, self.reach_ms())
        return base - self.offset_ms

    def evaluate(self, ctx: EvalContext) -> Value:
        raise EvaluationError("a subquery is a range vector: only a range function can evaluate it")

    def steps(self, t_ms: int) -> list[int]:
        """The evaluation times of the inner expression for an evaluation at ``t_ms`` (its @ time, if any)."""
        return self._steps(t_ms - self.offset_ms)

    def _steps(self, end: int) -> list[int]:
        first = -(-(end - self.range_ms) // self.step_ms) * self.step_ms  # the first multiple at or after the start
        return list(range(first, end + 1, self.step_ms))

    def matrix(self, ctx: EvalContext) -> tuple[list[Labels], np.ndarray, np.ndarray, np.ndarray]:
        """(labels, stamps, values, counts): row i holds the ``counts[i]`` samples of ``labels[i]``, oldest first."""
        steps = self._steps(self.end(ctx))
        if isinstance(self.expr, SelectorNode):
            labels, present, values = self._selector_grid(ctx, self.expr, steps)
        else:
            labels, present, values = self._grid(ctx, steps)
        # Pack each row's samples to the left, in time order, as a range function's window holds them.
        order = np.argsort(~present, axis=1, kind="stable")
        stamps = np.take_along_axis(np.broadcast_to(np.asarray(steps, dtype=np.int64), present.shape), order, axis=1)
        return labels, stamps, np.take_along_axis(values, order, axis=1), present.sum(axis=1)

    def _grid(self, ctx: EvalContext, steps: list[int]) -> tuple[list[Labels], np.ndarray, np.ndarray]:
        """Each label set's value at each step (``present`` where it has one): the inner expression evaluated per step."""
        index: dict[Labels, int] = {}
        columns = []
        for step in steps:
            result = self.expr.evaluate(EvalContext(ctx.store, step, ctx.lookback_ms, ctx.evaluation_ms))
            if not isinstance(result, InstantVector):  # the parser allows only instant vectors here
                raise EvaluationError("a subquery needs an instant vector expression")
            rows = np.fromiter((index.setdefault(labels, len(index)) for labels in result.labels), dtype=np.int64,
                               count=len(result))
            columns.append((rows, result.values))
        present = np.zeros((len(index), len(steps)), dtype=bool)
        values = np.full((len(index), len(steps)), np.nan)
        for j, (rows, column) in enumerate(columns):
            present[rows, j] = True
            values[rows, j] = column
        return list(index), present, values

    def _selector_grid(self, ctx: EvalContext, selector: SelectorNode, steps: list[int]) -> tuple[list[Labels], np.ndarray, np.ndarray]:
        """:meth:`_grid` of a plain selector (``x[30m:1m]``), read from the store a step at a time for all series at once."""
        rows = selector.rows(ctx.store)
        present = np.zeros((len(rows), len(steps)), dtype=bool)
        values = np.full((len(rows), len(steps)), np.nan)
        for j, step in enumerate(steps):
            at = EvalContext(ctx.store, step, ctx.lookback_ms, ctx.evaluation_ms)
            present[:, j], values[:, j] = ctx.store.instant(rows, selector.read_time(at), ctx.lookback_ms)
        seen = present.any(axis=1)
        return [ctx.store.labels[r] for r in rows[seen]], present[seen], values[seen]
