"""PromQL functions, as Prometheus 2.42 evaluates them: :data:`FUNCTIONS` maps each name to how a call compiles.

The modules, by role:

* :mod:`.ranges`: functions of a range selector (``rate(x[5m])``, the
  ``*_over_time`` family, ``deriv``, ``predict_linear``...): a kernel of a
  :class:`~.ranges.Window` each.
* :mod:`.elementwise`: functions of each sample's value (``abs``, ``round``,
  ``clamp``...): a kernel of the values and the scalar arguments each.
* :mod:`.dates`: ``time()``, ``timestamp()`` and the date functions.
* :mod:`.labels`: ``label_replace`` and ``label_join``.
* :mod:`.histograms`: ``histogram_quantile``.
* :mod:`.absent`: ``absent`` and ``absent_over_time``.
* :mod:`.scalars`: ``scalar``, ``vector`` and ``pi``.

Where Go computes differently from Python, :mod:`detector.promql.go_compat`
and :mod:`detector.promql.go_regexp` give Go's answer.

Checked against ``promtool test rules``. Arithmetic is done in the same order
as Prometheus does it (compensated sums where it uses them), so results match
it bit for bit, except exp, ln, log2 and log10, which are libm's and may
differ from Go's in the last bit. A result with two samples of the same labels
fails, as in Prometheus. label_replace takes Go regular expressions: they are
translated to Python's, and refused at compile time where they are invalid or
have no Python equivalent.

Adding a function
-----------------
1. Write what it computes in the module of its role: a range kernel
   (``def f(w: Window) -> np.ndarray``, one value per row) in ranges.py, an
   element-wise kernel (``def f(values, params) -> np.ndarray``) in
   elementwise.py, or, for anything else, a :class:`~detector.promql.plan.Node`
   subclass in the module it belongs with (or a new one).
2. Add one entry to :data:`FUNCTIONS` below: the name, and the builder that
   turns the call's arguments (:class:`CallArgs`) into the node. A builder
   raises ValueError for arguments Prometheus would refuse (the compiler
   reports it as an unsupported expression, at load time).
3. Test it against promtool (tests/unit/test_promql_more_functions.py).

A name that is not in :data:`FUNCTIONS` is refused at compile time, by name:

>>> sorted(FUNCTIONS)[:4]
['abs', 'absent', 'absent_over_time', 'avg_over_time']
>>> from detector.promql import compile_expr
>>> compile_expr("sin(x)")
Traceback (most recent call last):
...
detector.promql.compile.UnsupportedExpression: function sin() is not supported yet, in: sin(x)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from detector.promql.functions import elementwise, ranges
from detector.promql.functions.absent import AbsentNode, absent_labels
from detector.promql.functions.dates import DateNode, TimeNode, TimestampNode
from detector.promql.functions.elementwise import VectorFunctionNode, VectorKernel, of_value
from detector.promql.functions.histograms import HistogramQuantileNode
from detector.promql.functions.labels import RelabelNode, label_joiner, label_replacer
from detector.promql.functions.ranges import RangeFunction, RangeFunctionNode, RangeKernel
from detector.promql.functions.scalars import PiNode, ScalarNode, VectorNode
from detector.promql.plan import Node, SelectorNode
from detector.promql.subquery import SubqueryNode


class CallArgs(Protocol):
    """The arguments of one call, as the compiler hands them to a builder."""

    name: str  # the function's name

    def __len__(self) -> int: ...

    def expr(self, i: int) -> Node:
        """Argument ``i``, compiled."""
        ...

    def range_selector(self, i: int) -> tuple[SelectorNode, int]:
        """Argument ``i``, a range selector ``x[5m] offset 1m``: the selector and the range in ms."""
        ...

    def subquery(self, i: int) -> SubqueryNode | None:
        """Argument ``i`` if it is a subquery ``expr[5m:1m]``, compiled; else None (a range selector)."""
        ...

    def string(self, i: int) -> str:
        """Argument ``i``, a string literal."""
        ...

    def is_selector(self, i: int) -> bool:
        """Whether argument ``i`` is an instant selector itself (parentheses aside)."""
        ...


Builder = Callable[[CallArgs], Node]
"""Compiles one call of a function: its arguments to a plan node."""


def _over_range(kernel: RangeKernel, min_samples: int = 1, keeps_name: bool = False, matrix_arg: int = 0) -> Builder:
    """A range function; its other argument, if any, is the scalar parameter."""
    function = RangeFunction(kernel, min_samples, keeps_name, matrix_arg)

    def build(args: CallArgs) -> Node:
        subquery = args.subquery(matrix_arg)
        selector, range_ms = (None, subquery.range_ms) if subquery is not None else args.range_selector(matrix_arg)
        params = [args.expr(i) for i in range(len(args)) if i != matrix_arg]
        return RangeFunctionNode(args.name, function, selector, range_ms, params[0] if params else None, subquery)

    return build


def _of_values(kernel: VectorKernel) -> Builder:
    """An element-wise function: a vector first, scalar arguments after it."""
    return lambda args: VectorFunctionNode(args.name, kernel, args.expr(0), tuple(args.expr(i) for i in range(1, len(args))))


def _absent(args: CallArgs) -> Node:
    expr = args.expr(0)
    # Labels come from the matchers of a selector argument only, not of one deeper inside.
    labels = absent_labels(expr.matchers) if args.is_selector(0) else ()  # type: ignore[attr-defined]
    return AbsentNode(expr, labels)


def _absent_over_time(args: CallArgs) -> Node:
    subquery = args.subquery(0)
    if subquery is not None:  # Prometheus derives no labels from a subquery
        return AbsentNode(None, (), range_ms=subquery.range_ms, subquery=subquery)
    selector, range_ms = args.range_selector(0)
    return AbsentNode(None, absent_labels(selector.matchers), selector, range_ms)


def _date(args: CallArgs) -> Node:
    return DateNode(args.name, args.expr(0) if len(args) else None)


def _label_replace(args: CallArgs) -> Node:
    dst, replacement, src, regex = (args.string(i) for i in range(1, 5))
    relabel = label_replacer(dst, replacement, src, regex)  # checked before the vector argument is compiled
    return RelabelNode(args.expr(0), relabel, dst)


def _label_join(args: CallArgs) -> Node:
    dst, separator, *sources = (args.string(i) for i in range(1, len(args)))
    relabel = label_joiner(dst, separator, sources)
    return RelabelNode(args.expr(0), relabel, dst)


FUNCTIONS: dict[str, Builder] = {
    # Range functions (ranges.py).
    "rate": _over_range(ranges.rate, min_samples=2),
    "increase": _over_range(ranges.increase, min_samples=2),
    "delta": _over_range(ranges.delta, min_samples=2),
    "irate": _over_range(ranges.irate, min_samples=2),
    "idelta": _over_range(ranges.idelta, min_samples=2),
    "deriv": _over_range(ranges.deriv, min_samples=2),
    "predict_linear": _over_range(ranges.predict_linear, min_samples=2),
    "changes": _over_range(ranges.changes),
    "resets": _over_range(ranges.resets),
    "avg_over_time": _over_range(ranges.avg_over_time),
    "min_over_time": _over_range(ranges.min_over_time),
    "max_over_time": _over_range(ranges.max_over_time),
    "sum_over_time": _over_range(ranges.sum_over_time),
    "count_over_time": _over_range(ranges.count_over_time),
    "quantile_over_time": _over_range(ranges.quantile_over_time, matrix_arg=1),
    "stddev_over_time": _over_range(ranges.stddev_over_time),
    "stdvar_over_time": _over_range(ranges.stdvar_over_time),
    "last_over_time": _over_range(ranges.last_over_time, keeps_name=True),  # the only one to keep the name (2.42)
    "present_over_time": _over_range(ranges.present_over_time),
    # absent.py
    "absent": _absent,
    "absent_over_time": _absent_over_time,
    # Element-wise functions (elementwise.py).
    "abs": _of_values(of_value(np.abs)),
    "ceil": _of_values(of_value(np.ceil)),
    "floor": _of_values(of_value(np.floor)),
    "sqrt": _of_values(of_value(np.sqrt)),
    "exp": _of_values(of_value(np.exp)),
    "ln": _of_values(of_value(np.log)),
    "log2": _of_values(of_value(np.log2)),
    "log10": _of_values(of_value(np.log10)),
    "sgn": _of_values(elementwise.sgn),
    "round": _of_values(elementwise.round_to_nearest),
    "clamp": _of_values(elementwise.clamp),
    "clamp_min": _of_values(elementwise.clamp_min),
    "clamp_max": _of_values(elementwise.clamp_max),
    "deg": _of_values(elementwise.deg),
    "rad": _of_values(elementwise.rad),
    # Time and dates (dates.py).
    "time": lambda args: TimeNode(),
    "timestamp": lambda args: TimestampNode(args.expr(0), of_selector=args.is_selector(0)),
    **{
        name: _date
        for name in ("minute", "hour", "day_of_week", "day_of_month", "day_of_year", "days_in_month", "month", "year")
    },
    # Labels (labels.py).
    "label_replace": _label_replace,
    "label_join": _label_join,
    # Histograms (histograms.py).
    "histogram_quantile": lambda args: HistogramQuantileNode(args.expr(0), args.expr(1)),
    # Scalars and vectors (scalars.py).
    "scalar": lambda args: ScalarNode(args.expr(0)),
    "vector": lambda args: VectorNode(args.expr(0)),
    "pi": lambda args: PiNode(),
    # Order means nothing to a rule: sort and sort_desc give their argument.
    "sort": lambda args: args.expr(0),
    "sort_desc": lambda args: args.expr(0),
}
"""Every PromQL function Headroom evaluates, by name: the builder of its plan node."""


__all__ = ["FUNCTIONS", "Builder", "CallArgs"]
