"""From promql-parser's syntax tree to Headroom plan nodes.

Every construct is either compiled to a node that evaluates it exactly as
Prometheus 2.x does, or refused here, at load time, with a message naming it.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
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
    At,
    SET_OPERATORS,
    BinaryNode,
    Matcher,
    NegateNode,
    Node,
    NumberNode,
    SelectorNode,
    VectorMatching,
)
from detector.promql.subquery import SubqueryNode


class UnsupportedExpression(HeadroomError):
    """PromQL that does not parse, or that Headroom does not evaluate (yet)."""


class InvalidExpression(UnsupportedExpression):
    """PromQL that does not parse: Prometheus refuses it too (the other refusals are Headroom's own)."""


# promql-parser's enums are not hashable: key by their names.
_MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
_CARDINALITY = {
    "OneToOne": "one-to-one",
    "ManyToOne": "many-to-one",
    "OneToMany": "one-to-many",
    "ManyToMany": "many-to-many",
}


# Whether selectors keep their matchers in Prometheus's printed order (a rule's expression) or as written.
_PRINTED_ORDER: ContextVar[bool] = ContextVar("printed_order", default=False)
DEFAULT_SUBQUERY_STEP_MS = 60_000
"""Resolution of ``x[5m:]`` when no other is given: Prometheus's default evaluation interval, and promtool's."""
_SUBQUERY_STEP: ContextVar[int] = ContextVar("subquery_step", default=DEFAULT_SUBQUERY_STEP_MS)
_PRINTED_OP = {"=": '="', "!=": '!="', "=~": '=~"', "!~": '!~"'}

# Functions of Prometheus 2.42 that promql-parser (which follows Prometheus 3) does not know.
_PROMETHEUS_2_ONLY = frozenset({"holt_winters"})
_UNKNOWN_FUNCTION = re.compile(r"unknown function with name '(\w+)'")


def _enum_name(value: object) -> str:
    return str(value).rsplit(".", 1)[-1]


def compile_expr(text: str, *, as_rule: bool = False, subquery_step_ms: int = DEFAULT_SUBQUERY_STEP_MS) -> Node:
    """Parse and compile one expression.

    ``subquery_step_ms``: the resolution of a subquery that gives none
    (``x[5m:]``); Prometheus uses the global evaluation interval.

    ``as_rule``: compile it as Prometheus runs a rule's expression, from its
    printed form (``rules/manager.go`` queries ``expr.String()``), whose label
    matchers are sorted. Only ``absent()``'s labels depend on that order:

    >>> def labels(expr, as_rule):
    ...     return compile_expr(expr, as_rule=as_rule).labels
    >>> labels('absent(m{job="x", job!~"b"})', False), labels('absent(m{job="x", job!~"b"})', True)
    ((), (('job', 'x'),))

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
        unknown = _UNKNOWN_FUNCTION.search(str(exc))
        if unknown and unknown[1] in _PROMETHEUS_2_ONLY:
            raise UnsupportedExpression(f"function {unknown[1]}() is not supported, in: {text}") from None
        raise InvalidExpression(f"cannot parse PromQL {text!r}: {exc}") from None
    token = _PRINTED_ORDER.set(as_rule)
    step_token = _SUBQUERY_STEP.set(subquery_step_ms)
    try:
        return _compile(tree)
    except UnsupportedExpression as exc:
        raise type(exc)(f"{exc}, in: {text}") from None
    finally:
        _PRINTED_ORDER.reset(token)
        _SUBQUERY_STEP.reset(step_token)


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
        raise UnsupportedExpression("a subquery (x[5m:1m]) can only be the argument of a range function")
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
        raise UnsupportedExpression(f"{name}() needs a range selector (x[5m])")
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

    def subquery(self, i: int) -> SubqueryNode | None:
        arg = _unparen(self.args[i])
        return _subquery(arg) if isinstance(arg, pp.SubqueryExpr) else None

    def string(self, i: int) -> str:
        return _string(self.name, self.args[i])

    def is_selector(self, i: int) -> bool:
        return isinstance(_unparen(self.args[i]), pp.VectorSelector)


def _offset_ms(offset: timedelta | None) -> int:
    """An offset in ms; a negative one reads after the evaluation time, which delays the group (see Node.lead_ms)."""
    return 0 if offset is None else round(offset.total_seconds() * 1000)


def _at(node: object) -> At | None:
    """The @ modifier: start() and end() are the rule's evaluation time, a number a fixed time (in seconds)."""
    modifier = node.at  # type: ignore[attr-defined]
    if modifier is None:
        return None
    if _enum_name(modifier.type) in ("Start", "End"):
        return At()
    # promql-parser prints the time in ms ("@ 100.500"), but prints a time before 1970 as 0,
    # and panics (a Rust panic) when asked for it: ask only when the printed time is 0.
    seconds = float(str(modifier).split()[-1])
    if seconds == 0:
        try:
            modifier.at  # noqa: B018 - raises for a time before 1970
        except BaseException:  # noqa: BLE001 - the panic is a BaseException
            raise UnsupportedExpression("an @ time before 1970 is not supported") from None
    return At(round(seconds * 1000))


def _subquery(node: pp.SubqueryExpr) -> SubqueryNode:
    inner = _compile(node.expr)
    if inner.kind != "vector":  # the parser checks this too
        raise UnsupportedExpression("a subquery needs an instant vector expression")
    step_ms = _SUBQUERY_STEP.get() if node.step is None else node.step // timedelta(milliseconds=1)
    range_ms = node.range // timedelta(milliseconds=1)
    if step_ms <= 0 or range_ms <= 0:
        raise UnsupportedExpression("a subquery needs a positive range and resolution")
    return SubqueryNode(inner, range_ms, step_ms, _offset_ms(node.offset), _at(node))


def _selector(node: pp.VectorSelector) -> SelectorNode:
    matchers = []
    if node.name:
        matchers.append(Matcher.create(METRIC_NAME, "=", node.name))
    if node.matchers.or_matchers:
        raise UnsupportedExpression("'or' inside label matchers is not supported")
    for m in node.matchers.matchers:
        matchers.append(Matcher.create(m.name, _MATCH_OPS[_enum_name(m.op)], m.value))
    if _PRINTED_ORDER.get():
        # VectorSelector.String() sorts the printed matchers: `name op "value"` compared as
        # strings, so a label's != and !~ come before its =, and =~ after it.
        matchers.sort(key=lambda m: m.name + _PRINTED_OP[m.op])
    return SelectorNode(tuple(matchers), _offset_ms(node.offset), _at(node))


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
            raise InvalidExpression(f"{name!r} is not a label name in Prometheus 2.x")
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
