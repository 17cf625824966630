"""From promql-parser's syntax tree to Headroom plan nodes.

Every construct is either compiled to a node that evaluates it exactly as
Prometheus 2.x does, or refused here, at load time, with a message naming it.
"""

from __future__ import annotations

from datetime import timedelta

import promql_parser as pp

from detector.errors import HeadroomError
from detector.labels import METRIC_NAME
from detector.promql.functions import RANGE_FUNCTIONS, HistogramQuantileNode, RangeFunctionNode
from detector.promql.plan import (
    ARITHMETIC,
    COMPARISON,
    SET_OPERATORS,
    BinaryNode,
    Matcher,
    NegateNode,
    Node,
    NumberNode,
    SelectorNode,
    VectorMatching,
)


class UnsupportedExpression(HeadroomError):
    """PromQL that does not parse, or that Headroom does not evaluate (yet)."""


# promql-parser's enums are not hashable: key by their names.
_MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
_CARDINALITY = {
    "OneToOne": "one-to-one",
    "ManyToOne": "many-to-one",
    "OneToMany": "one-to-many",
    "ManyToMany": "many-to-many",
}


def _enum_name(value: object) -> str:
    return str(value).rsplit(".", 1)[-1]


def compile_expr(text: str) -> Node:
    """Parse and compile one expression.

    >>> compile_expr("up == 0").kind
    'vector'
    >>> compile_expr("abs(x) > 1")
    Traceback (most recent call last):
    ...
    detector.promql.compile.UnsupportedExpression: function abs() is not supported yet, in: abs(x) > 1
    """
    try:
        tree = pp.parse(text)
    except (ValueError, TypeError) as exc:
        raise UnsupportedExpression(f"cannot parse PromQL {text!r}: {exc}") from None
    try:
        return _compile(tree)
    except UnsupportedExpression as exc:
        raise UnsupportedExpression(f"{exc}, in: {text}") from None


def _compile(node: object) -> Node:
    if isinstance(node, pp.NumberLiteral):
        return NumberNode(float(node.val))
    if isinstance(node, pp.ParenExpr):
        return _compile(node.expr)
    if isinstance(node, pp.UnaryExpr):
        return NegateNode(_compile(node.expr))
    if isinstance(node, pp.VectorSelector):
        return _selector(node)
    if isinstance(node, pp.BinaryExpr):
        return _binary(node)
    if isinstance(node, pp.Call):
        name = node.func.name
        if name in RANGE_FUNCTIONS:
            arg = node.args[0]
            while isinstance(arg, pp.ParenExpr):  # Prometheus accepts rate((x[5m])) too
                arg = arg.expr
            if not isinstance(arg, pp.MatrixSelector):
                raise UnsupportedExpression(f"{name}() of a subquery is not supported")
            return RangeFunctionNode(name, _selector(arg.vector_selector), arg.range // timedelta(milliseconds=1))
        if name == "histogram_quantile":
            return HistogramQuantileNode(_compile(node.args[0]), _compile(node.args[1]))
        raise UnsupportedExpression(f"function {name}() is not supported yet")
    if isinstance(node, pp.AggregateExpr):
        raise UnsupportedExpression(f"aggregation {str(node.op)}() is not supported yet")
    if isinstance(node, pp.MatrixSelector):
        raise UnsupportedExpression("a range vector selector (x[5m]) can only be the argument of a range function")
    if isinstance(node, pp.SubqueryExpr):
        raise UnsupportedExpression("subqueries are not supported")
    if isinstance(node, pp.StringLiteral):
        raise UnsupportedExpression("a string literal cannot be a rule's result")
    raise UnsupportedExpression(f"{type(node).__name__} is not supported")


def _selector(node: pp.VectorSelector) -> SelectorNode:
    if node.at is not None:
        raise UnsupportedExpression("the @ modifier is not supported on the stream")
    matchers = []
    if node.name:
        matchers.append(Matcher.create(METRIC_NAME, "=", node.name))
    if node.matchers.or_matchers:
        raise UnsupportedExpression("'or' inside label matchers is not supported")
    for m in node.matchers.matchers:
        matchers.append(Matcher.create(m.name, _MATCH_OPS[_enum_name(m.op)], m.value))
    offset = node.offset
    offset_ms = 0 if offset is None else round(offset.total_seconds() * 1000)
    if offset_ms < 0:
        raise UnsupportedExpression("a negative offset reads the future, which a stream does not have")
    return SelectorNode(tuple(matchers), offset_ms)


def _binary(node: pp.BinaryExpr) -> BinaryNode:
    op = str(node.op)
    if op not in ARITHMETIC and op not in COMPARISON and op not in SET_OPERATORS:
        raise UnsupportedExpression(f"binary operator {op!r} is not supported")
    lhs, rhs = _compile(node.lhs), _compile(node.rhs)
    modifier = node.modifier
    return_bool = bool(modifier and modifier.return_bool)
    matching = VectorMatching()
    if modifier is not None:
        card = _CARDINALITY[_enum_name(modifier.card)]
        on = labels = ()
        if modifier.matching is not None:
            on = _enum_name(modifier.matching.type) == "Include"
            labels = tuple(modifier.matching.labels)
        include = tuple(modifier.group_labels or ())
        fill = getattr(modifier, "fill_values", None)  # always present in promql-parser; set only by fill()
        if fill is not None and (fill.lhs is not None or fill.rhs is not None):
            raise UnsupportedExpression("fill() modifiers are not supported")
        matching = VectorMatching(on=bool(on), labels=labels, card=card, include=include)
    return BinaryNode(op, lhs, rhs, return_bool, matching)
