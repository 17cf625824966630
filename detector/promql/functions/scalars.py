"""``scalar(v)``, ``vector(s)`` and ``pi()``: between scalars and vectors, and the constant."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detector.promql.functions.common import scalar_arg
from detector.promql.plan import EvalContext, Node
from detector.promql.values import InstantVector, Scalar, Value


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
        return InstantVector([()], np.array([scalar_arg(self.expr, ctx)]))

