"""What every function module needs: result labels without the metric name, scalar arguments, unique results."""

from __future__ import annotations

import numpy as np

from detector.labels import METRIC_NAME, Labels
from detector.promql.plan import EvalContext, EvaluationError, Node
from detector.promql.values import InstantVector, Scalar


def drop_name(labels: Labels) -> Labels:
    """``labels`` without ``__name__``, as most functions return them.

    >>> drop_name((("__name__", "up"), ("job", "api")))
    (('job', 'api'),)
    """
    return tuple(p for p in labels if p[0] != METRIC_NAME)


def scalar_arg(node: Node, ctx: EvalContext) -> float:
    """The value of a scalar argument (the parser has checked that it is one)."""
    value = node.evaluate(ctx)
    assert isinstance(value, Scalar)  # the parser type-checks scalar arguments
    return value.value


def unique(labels: list[Labels], values: np.ndarray) -> InstantVector:
    """A function's result; Prometheus refuses one where two samples have the same labels."""
    if len(set(labels)) != len(labels):
        raise EvaluationError("vector cannot contain metrics with the same labelset")
    return InstantVector(labels, np.asarray(values, dtype=np.float64))
