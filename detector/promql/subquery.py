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
from detector.promql.plan import At, EvalContext, EvaluationError, Node
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
        rows: dict[Labels, list[tuple[int, float]]] = {}
        for step in self._steps(self.end(ctx)):
            result = self.expr.evaluate(EvalContext(ctx.store, step, ctx.lookback_ms, ctx.evaluation_ms))
            if not isinstance(result, InstantVector):  # the parser allows only instant vectors here
                raise EvaluationError("a subquery needs an instant vector expression")
            for labels, value in result.samples():
                rows.setdefault(labels, []).append((step, value))
        width = max((len(points) for points in rows.values()), default=0)
        stamps = np.zeros((len(rows), width), dtype=np.int64)
        values = np.full((len(rows), width), np.nan)
        counts = np.zeros(len(rows), dtype=np.int64)
        for i, points in enumerate(rows.values()):
            counts[i] = len(points)
            stamps[i, : len(points)] = [t for t, _ in points]
            values[i, : len(points)] = [v for _, v in points]
        return list(rows), stamps, values, counts
