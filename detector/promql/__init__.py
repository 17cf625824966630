"""PromQL on the stream: expressions compiled once, evaluated at event times.

``compile_expr`` turns a promql-parser syntax tree into a tree of plan nodes;
each node evaluates against a :class:`~detector.store.SeriesStore` at a given
time. Constructs Headroom cannot evaluate exactly as Prometheus 2.x does are
refused at compile time with :class:`UnsupportedExpression`, naming them.

>>> from detector.wire.batch import SampleBatch
>>> from detector.store import SeriesStore
>>> store = SeriesStore(retention_ms=600_000)
>>> _ = store.append(SampleBatch.from_series([
...     ((("__name__", "sat"), ("job", "a")), [(0, 0.5)]),
...     ((("__name__", "sat"), ("job", "b")), [(0, 0.9)]),
... ]))
>>> result = compile_expr("sat > 0.8").evaluate(EvalContext(store, t_ms=10_000))
>>> [(labels, value) for labels, value in result.samples()]
[((('__name__', 'sat'), ('job', 'b')), 0.9)]
"""

from detector.promql.compile import InvalidExpression, UnsupportedExpression, compile_expr
from detector.promql.plan import EvalContext, EvaluationError, Node
from detector.promql.values import InstantVector, Scalar

__all__ = [
    "EvalContext",
    "EvaluationError",
    "InstantVector",
    "InvalidExpression",
    "Node",
    "Scalar",
    "UnsupportedExpression",
    "compile_expr",
]
