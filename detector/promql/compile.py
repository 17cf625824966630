"""From promql-parser's syntax tree to Headroom plan nodes.

Every construct is either compiled to a node that evaluates it exactly as
Prometheus 2.x does, or refused here, at load time, with a message naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import promql_parser as pp

from detector.errors import HeadroomError
from detector.labels import METRIC_NAME
from detector.promql.aggregations import AGGREGATIONS, LABEL_NAME, AggregateNode
from detector.promql.functions import FUNCTIONS
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
    >>> compile_expr("sin(x) > 1")
    Traceback (most recent call last):
    ...
    detector.promql.compile.UnsupportedExpression: function sin() is not supported yet, in: sin(x) > 1
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
        return _call(node)
    if isinstance(node, pp.AggregateExpr):
        return _aggregate(node)
    if isinstance(node, pp.MatrixSelector):
        raise UnsupportedExpression("a range vector selector (x[5m]) can only be the argument of a range function")
    if isinstance(node, pp.SubqueryExpr):
        raise UnsupportedExpression("subqueries are not supported")
    if isinstance(node, pp.StringLiteral):
        raise UnsupportedExpression("a string literal cannot be a rule's result")
    raise UnsupportedExpression(f"{type(node).__name__} is not supported")


def _unparen(node: object) -> object:
    while isinstance(node, pp.ParenExpr):  # Prometheus accepts rate((x[5m])) too
        node = node.expr
    return node


def _range_selector(name: str, arg: object) -> tuple[SelectorNode, int]:
    """The selector and range (ms) of a range function's ``x[5m]`` argument."""
    arg = _unparen(arg)
    if not isinstance(arg, pp.MatrixSelector):
        raise UnsupportedExpression(f"{name}() of a subquery is not supported")
    return _selector(arg.vector_selector), arg.range // timedelta(milliseconds=1)


def _string(name: str, arg: object) -> str:
    arg = _unparen(arg)
    if not isinstance(arg, pp.StringLiteral):  # the parser type-checks; parentheses are all it allows
        raise UnsupportedExpression(f"{name}() needs string literal arguments")
    return arg.val


def _call(node: pp.Call) -> Node:
    """A function call, compiled by its entry in FUNCTIONS; any other function is refused, by name."""
    name = node.func.name
    build = FUNCTIONS.get(name)
    if build is None:
        raise UnsupportedExpression(f"function {name}() is not supported yet")
    try:
        return build(_CallArgs(name, list(node.args)))
    except ValueError as exc:  # arguments Prometheus refuses too (a bad regex, label name...)
        raise UnsupportedExpression(str(exc)) from None


@dataclass(frozen=True)
class _CallArgs:
    """A call's arguments, compiled on demand (see :class:`detector.promql.functions.CallArgs`)."""

    name: str
    args: list[object]

    def __len__(self) -> int:
        return len(self.args)

    def expr(self, i: int) -> Node:
        return _compile(self.args[i])

    def range_selector(self, i: int) -> tuple[SelectorNode, int]:
        return _range_selector(self.name, self.args[i])

    def string(self, i: int) -> str:
        return _string(self.name, self.args[i])

    def is_selector(self, i: int) -> bool:
        return isinstance(_unparen(self.args[i]), pp.VectorSelector)


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


def _aggregate(node: pp.AggregateExpr) -> AggregateNode:
    op = str(node.op)
    if op not in AGGREGATIONS:
        raise UnsupportedExpression(f"aggregation {op}() is not supported")
    without, grouping = False, ()
    if node.modifier is not None:
        without = _enum_name(node.modifier.type) == "Without"
        grouping = tuple(node.modifier.labels)
    for name in grouping:  # promql-parser also takes quoted UTF-8 names, which Prometheus 2.x refuses
        if not LABEL_NAME.fullmatch(name):
            raise UnsupportedExpression(f"{name!r} is not a label name in Prometheus 2.x")
    param = node.param
    while isinstance(param, pp.ParenExpr):
        param = param.expr
    if op == "count_values":
        if not isinstance(param, pp.StringLiteral):  # the parser allows only strings here
            raise UnsupportedExpression("count_values() takes a string literal label name")
        return AggregateNode(op, _compile(node.expr), grouping, without, label=param.val)
    compiled = None if param is None else _compile(param)
    if compiled is not None and compiled.kind != "scalar":
        raise UnsupportedExpression(f"{op}() takes a scalar parameter")
    return AggregateNode(op, _compile(node.expr), grouping, without, compiled)
