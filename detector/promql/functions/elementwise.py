"""Functions of each sample's value: abs, ceil, floor, round, sqrt, exp, ln,
log2, log10, sgn, clamp, clamp_min, clamp_max, deg and rad. All drop the metric name.

Every kernel takes the values and the scalar arguments, and returns the new
values (None for no result at all, as ``clamp`` with min > max gives).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detector.promql.functions.common import drop_name, scalar_arg, unique
from detector.promql.go_compat import go_max, go_min
from detector.promql.plan import EvalContext, Node
from detector.promql.values import InstantVector, Value

# exp, ln, log2 and log10 are numpy's (libm). Prometheus uses Go's math
# package, which rounds differently in the last bit for a few percent of
# inputs; a rule's threshold never sees that, and the differential tests
# allow it.


VectorKernel = Callable[[np.ndarray, tuple[float, ...]], "np.ndarray | None"]
"""(values, scalar arguments) -> new values, or None for no result at all."""


def of_value(fn: Callable[[np.ndarray], np.ndarray]) -> VectorKernel:
    """The kernel of a function without scalar arguments, such as ``of_value(np.abs)``.

    >>> of_value(np.abs)(np.array([-1.5, 2.0]), ())
    array([1.5, 2. ])
    """
    return lambda values, params: fn(values)


def sgn(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    return np.where(values < 0, -1.0, np.where(values > 0, 1.0, values))  # ±0 and NaN stay


def round_to_nearest(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """``round(v)`` and ``round(v, to_nearest)``."""
    inverse = np.float64(1.0) / np.float64(params[0] if params else 1.0)  # Go: 1/0 is +Inf
    return np.floor(values * inverse + 0.5) / inverse  # halves round up


def clamp(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray | None:
    low, high = params
    if high < low:
        return None
    return go_max(np.full_like(values, low), go_min(np.full_like(values, high), values))


def clamp_min(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    return go_max(values, np.full_like(values, params[0]))


def clamp_max(values: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    return go_min(values, np.full_like(values, params[0]))


deg = of_value(lambda v: v * 180 / math.pi)
rad = of_value(lambda v: v * math.pi / 180)


@dataclass(eq=False)
class VectorFunctionNode(Node):
    """``abs(v)``, ``round(v, 5)``, ``clamp(v, 0, 1)``...: a new value per sample, the name dropped.

    >>> from detector.wire.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> from detector.store import SeriesStore
    >>> store = SeriesStore(retention_ms=600_000)
    >>> _ = store.append(SampleBatch.from_series([((("__name__", "temp"), ("room", "a")), [(0, -2.5)])]))
    >>> list(compile_expr("round(temp)").evaluate(EvalContext(store, t_ms=0)).samples())
    [((('room', 'a'),), -2.0)]
    """

    name: str
    kernel: VectorKernel
    expr: Node
    params: tuple[Node, ...] = ()
    kind = "vector"

    def reach_ms(self) -> int:
        return max([self.expr.reach_ms(), *(p.reach_ms() for p in self.params)])

    def evaluate(self, ctx: EvalContext) -> Value:
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        params = tuple(scalar_arg(p, ctx) for p in self.params)
        with np.errstate(all="ignore"):
            values = self.kernel(vector.values, params)
        if values is None:
            return InstantVector.empty()
        return unique([drop_name(l) for l in vector.labels], values)
