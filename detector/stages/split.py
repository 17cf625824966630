"""Splitting one rule expression into stage-1 slots and the stage-2 remainder.

A *local* subtree combines no series across scrape targets (the placement
test of :mod:`detector.rules.placement`), so each stage-1 partition can
evaluate it over its own series. Walking a rule's expression from the top,
the first nodes that do combine across targets become *slots*:

* an aggregation of a local subtree: its partial (``sum``, ``count``,
  ``min``, ``max``, ``group``, ``avg``, ``stddev``, ``stdvar``,
  ``count_values``); ``topk``/``bottomk`` send each partition's own top k per
  group (the global top k is among them) and apply the aggregation again;
  ``quantile`` has no exact bounded partial, so it falls back to sending the
  input samples, routed by its groups;
* ``absent(v)`` / ``absent_over_time(x[r])`` of a local subtree: a count;
* ``scalar(v)`` of a local subtree: at most two samples per partition (one in
  all is the value, any other number NaN); these rows, and any other bounded
  partials under ``scalar()``, are *broadcast* to every combine partition,
  which all compute the scalar, so what it is compared with stays spread;
* any other local vector under a combining node (the sides of an
  ``on(...)``/``ignoring(...)`` join, an argument of a combining function):
  the subtree's samples themselves, repartitioned.

The remainder is the expression with those subtrees replaced by
:class:`~detector.stages.inputs.StagedInput` leaves; a combine partition
evaluates it as any rule. Its :class:`Route` says which partials must meet in
one combine partition: every combining node left in the remainder constrains
it (``by (ns)``: same ``ns``; ``on(q)``: same ``q``; ``ignoring(i)``: same
labels but ``i``; ``histogram_quantile``: same labels but ``le``;
``absent``/``scalar``/``vector``: everything in one place) and the route is
the finest key all of them allow.

>>> from detector.promql import compile_expr
>>> s = split_expression(compile_expr("sum by (ns) (rate(x[5m])) > 10"))
>>> [slot.kind for slot in s.slots], s.route
(['sum'], Route(on=True, labels=frozenset({'ns'})))
>>> s = split_expression(compile_expr("depth / on(queue) group_left limit > 0.8"))
>>> [slot.kind for slot in s.slots], s.route.labels, s.bounded
(['vector', 'vector'], frozenset({'queue'}), False)
>>> split_expression(compile_expr('absent(up{job="api"})')).route.single
True
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from detector.labels import DEFAULT_PARTITION_BY, METRIC_NAME, Labels, colocated_by
from detector.promql.aggregations import AggregateNode
from detector.promql.functions import (
    AbsentNode,
    HistogramQuantileNode,
    RangeFunctionNode,
    RelabelNode,
    ScalarNode,
    VectorNode,
)
from detector.promql.functions.ranges import RangeFunction, last_over_time
from detector.promql.plan import BinaryNode, Node, SelectorNode
from detector.promql.subquery import SubqueryNode
from detector.rules.placement import combines_across
from detector.promql.functions.scalars import ScalarNode
from detector.stages.inputs import StagedInput

# absent_over_time(x[r]) is whether any series has a sample in the range: what
# count(last_over_time(x[r])) tells. last_over_time keeps the metric name, so
# series differing only by name cannot collide.
_LAST_OVER_TIME = RangeFunction(last_over_time, min_samples=1, keeps_name=True)


@dataclass(frozen=True)
class Route:
    """Which labels of a partial row choose its combine partition: ``on`` these, or all but these.

    >>> Route(on=True, labels=frozenset({"ns", "pod"})).meet(Route(on=False, labels=frozenset({"pod"})))
    Route(on=True, labels=frozenset({'ns'}))
    >>> Route(on=True, labels=frozenset({"ns"})).key((("__name__", "x"), ("ns", "a"), ("pod", "p")))
    (('ns', 'a'),)
    """

    on: bool = False
    labels: frozenset[str] = frozenset()

    @property
    def single(self) -> bool:
        """Every row goes to one combine partition."""
        return self.on and not self.labels

    def key(self, labels: Labels) -> Labels:
        # The metric name never routes: nodes between a slot and the
        # combining node may drop it.
        if self.on:
            return tuple(p for p in labels if p[0] in self.labels and p[0] != METRIC_NAME)
        return tuple(p for p in labels if p[0] not in self.labels and p[0] != METRIC_NAME)

    def meet(self, other: Route) -> Route:
        """The finest route under which rows that either route keeps together stay together."""
        if self.on and other.on:
            return Route(True, self.labels & other.labels)
        if not self.on and not other.on:
            return Route(False, self.labels | other.labels)
        on, ignoring = (self, other) if self.on else (other, self)
        return Route(True, on.labels - ignoring.labels)


EVERYTHING = Route(False, frozenset())
ONE_PLACE = Route(True, frozenset())


@dataclass(eq=False)
class Slot:
    """A piece of a rule stage 1 evaluates: ``nodes`` give its partial of ``kind`` (see :mod:`.partials`)."""

    kind: str
    nodes: tuple[Node, ...]
    bounded: bool  # rows bounded by the result's groups (or k), not by the input series
    limit: int = 0  # keep at most this many rows per partition (0: all)
    broadcast: bool = False  # rows go to every combine partition (a scalar()'s partials)
    id: int = -1  # set by the plan
    shared: bool = False  # set by the plan: an earlier slot computes the same, and this one reads its id
    rides: bool = False  # set by the plan: an earlier slot computes the same rows, routed otherwise, and puts them out for it too
    also: list[Slot] = field(default_factory=list)  # the slots that ride on this one
    route: Route = field(default=EVERYTHING)  # set with the rule's route


@dataclass(eq=False)
class Split:
    remainder: Node
    slots: list[Slot]
    route: Route
    reads_stage2: bool  # the remainder reads series recorded by stage-2 rules (no slots then)
    inputs: list[StagedInput] = field(default_factory=list)  # the remainder's leaves, numbered by slot position

    @property
    def bounded(self) -> bool:
        return all(s.bounded for s in self.slots)


class CannotSplit(Exception):
    """The expression mixes what the stages cannot separate; it stays in the global engine."""


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children():
        yield from walk(child)


def _names(selector: Node) -> set[str]:
    if not isinstance(selector, SelectorNode):
        return set()
    return {m.value for m in selector.matchers if m.name == METRIC_NAME and m.op == "="}


def split_expression(
    expr: Node,
    partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY,
    stage2_names: frozenset[str] = frozenset(),
    owner_names: frozenset[str] = frozenset(),
    leaf: type[Node] = SelectorNode,
    bounded_leaves: frozenset[int] = frozenset(),
) -> Split:
    """Split ``expr`` (see the module docstring).

    ``stage2_names`` are metrics recorded by stage-2 rules, spread over the
    combine partitions; ``owner_names`` those recorded by stage-2 rules whose
    results all live in the one combine partition that owns rules routed to
    one place (so a rule reading them in any way runs there too). Raises
    :class:`CannotSplit` when the remainder would have to read spread stage-2
    series together with partials or owner series, or combine them.

    With ``leaf=StagedInput`` it splits a remainder again (see :func:`deepen`):
    its inputs are then what a combine partition holds, keyed by ``partition_by``;
    passing on one of ``bounded_leaves`` as it is stays bounded.
    """
    stage2_names = stage2_names | owner_names
    keep = colocated_by(partition_by)
    slots: list[Slot] = []
    inputs: list[StagedInput] = []

    def combining(node: Node) -> bool:
        return combines_across(node, keep)

    def selectors(node: Node) -> list[Node]:
        return [n for n in walk(node) if isinstance(n, leaf)]

    def stage2(sel: Node) -> bool:
        return bool(_names(sel) & stage2_names)

    def owner(sel: Node) -> bool:
        return bool(_names(sel) & owner_names)

    def local(node: Node) -> bool:
        sels = selectors(node)
        return bool(sels) and not combining(node) and not any(stage2(s) for s in sels)

    def slot(kind: str, nodes: tuple[Node, ...], bounded: bool, limit: int = 0) -> StagedInput:
        slots.append(Slot(kind, nodes, bounded, limit))
        inputs.append(StagedInput(len(slots) - 1))
        return inputs[-1]

    def rewrite(node: Node) -> Node:
        sels = selectors(node)
        if not sels:
            return node  # constants and time(): the combine partition evaluates them as well
        if all(owner(s) for s in sels) or (all(stage2(s) for s in sels) and not combining(node)):
            return node  # stage-2 series, read where they are recorded
        if local(node):
            if node.kind != "vector":
                raise CannotSplit("a scalar subtree reading series")
            return slot("vector", (node,), bounded=isinstance(node, StagedInput) and node.slot in bounded_leaves)
        if isinstance(node, SubqueryNode) or (isinstance(node, AbsentNode) and node.subquery is not None):
            # Its inner expression runs at past steps; merged partials exist for the tick only.
            raise CannotSplit("a subquery of an expression that combines series")
        if isinstance(node, AggregateNode) and local(node.expr) and (node.param is None or not selectors(node.param)):
            return _aggregation(node, slot)
        if isinstance(node, AbsentNode) and not any(stage2(s) for s in sels):
            inner = node.expr
            if inner is None:
                inner = RangeFunctionNode("last_over_time", _LAST_OVER_TIME, node.selector, node.range_ms)
            if local(inner):
                counted = slot("sum", (AggregateNode("count", inner),), bounded=True)
                return rebuild(node, lambda child: child, expr=counted, selector=None, range_ms=0)
        if isinstance(node, ScalarNode) and not any(stage2(s) for s in sels):
            before = len(slots)
            if local(node.expr):
                scalar = rebuild(node, lambda child: child, expr=slot("vector", (node.expr,), bounded=True, limit=2))
            else:
                scalar = rebuild(node, rewrite)
            if all(s.bounded for s in slots[before:]):
                # Few rows: every combine partition gets them all and computes the scalar
                # itself, so the vector it is compared with can stay spread.
                for s in slots[before:]:
                    s.broadcast = True
            return scalar
        return rebuild(node, rewrite)

    if expr.lead_ms() > 0:  # the group waits for the stream past its ticks (a negative offset): one engine does that
        raise CannotSplit("a negative offset")
    remainder = rewrite(expr)
    read = [n for n in walk(remainder) if isinstance(n, SelectorNode)]
    reads_owner = any(owner(n) for n in read)
    reads_stage2 = any(not owner(n) for n in read)
    if reads_stage2 and (slots or reads_owner or _constraint(remainder, walk_all=True) is not None):
        raise CannotSplit("reads series recorded by stage-2 rules together with other series")
    if reads_stage2:
        route = EVERYTHING  # elementwise over what each combine partition holds
    elif reads_owner:
        route = ONE_PLACE  # where those series are
    elif not slots:
        route = ONE_PLACE  # reads no series (vector(1), time()): one answer, in one place
    else:
        route = _route(remainder, False, slots)
        for s in slots:  # an aggregation's rows carry only its grouping labels: route on no more
            if s.kind != "vector" and not s.broadcast:
                route = route.meet(_constraint(s.nodes[0]) or EVERYTHING)
    for s in slots:
        s.route = route
    return Split(remainder, slots, route, reads_stage2, inputs)


def deepen(split: Split) -> tuple[Route, Split] | None:
    """A second combine level for a split whose remainder needs everything in one place.

    ``sum by (node) (cpu * on(namespace, pod) group_left(node) kube_pod_info)``
    cannot be routed by ``node`` (the cpu rows do not carry it) nor by
    ``(namespace, pod)`` (the sum crosses pods). Routed by the join's labels,
    a first combine level evaluates the join and the partial sums by node;
    a second level, routed by ``node``, merges them. Returns the first level's
    route and the split of the remainder into what it evaluates (slots) and
    what the second level evaluates; None if no join gives a better split.

    >>> from detector.promql import compile_expr
    >>> first = split_expression(compile_expr("sum by (node) (a * on(ns, pod) group_left(node) b)"))
    >>> first.route.single, first.bounded
    (True, False)
    >>> route, second = deepen(first)
    >>> sorted(route.labels), [s.kind for s in second.slots], sorted(second.route.labels)
    (['ns', 'pod'], ['sum'], ['node'])
    """
    if not split.route.single or split.bounded or split.reads_stage2:
        return None
    if any(isinstance(n, SelectorNode) for n in walk(split.remainder)):
        return None  # reads series recorded in the owner partition: it must run there
    joins = [n for n in walk(split.remainder) if isinstance(n, BinaryNode) and n.matching.on and n.matching.labels]
    # Slots read through scalar(): outside the join, deepening loses them (``sum(a + on(ns) b) >
    # scalar(sum(up))`` never fired on two levels; found by the parity property test), so such a
    # split stays on one level. A slot outside the join read as a vector (``/ on() group_left sum(up)``) is fine.
    in_scalar = [n for s in walk(split.remainder) if isinstance(s, ScalarNode) for n in walk(s) if isinstance(n, StagedInput)]
    for join in joins:
        keys = tuple(sorted(set(join.matching.labels) - {METRIC_NAME}))
        if not keys:
            continue
        below = {id(n) for n in walk(join)}
        if any(id(leaf) not in below for leaf in in_scalar):
            continue
        try:
            bounded = frozenset(i for i, s in enumerate(split.slots) if s.bounded)
            second = split_expression(split.remainder, keys, leaf=StagedInput, bounded_leaves=bounded)
        except CannotSplit:
            continue
        if second.slots and (second.bounded or not second.route.single):
            return Route(True, frozenset(keys)), second
    return None


def _aggregation(node: AggregateNode, slot: Callable[..., StagedInput]) -> Node:
    def sibling(op: str) -> AggregateNode:
        return AggregateNode(op, node.expr, node.grouping, node.without)

    op = node.op
    if op in ("sum", "count"):
        return slot("sum", (node,), bounded=True)
    if op in ("min", "max", "group"):
        return slot(op, (node,), bounded=True)
    if op == "count_values":
        return slot("sum", (node,), bounded=True)
    if op == "avg":
        return slot("avg", (node, sibling("count")), bounded=True)
    if op in ("stddev", "stdvar"):
        return slot(op, (sibling("count"), sibling("avg"), sibling("stdvar")), bounded=True)
    if op in ("topk", "bottomk"):
        return rebuild(node, lambda child: child, expr=slot("vector", (node,), bounded=True))
    # quantile: no exact partial of bounded size; the input samples go to the group's partition.
    return rebuild(node, lambda child: child, expr=slot("vector", (node.expr,), bounded=False))


def _constraint(node: Node, walk_all: bool = False) -> Route | None:
    """What ``node`` needs kept together (None: nothing); with ``walk_all``, of any node below."""
    if walk_all:
        found = [c for c in (_constraint(n) for n in walk(node)) if c is not None]
        return found[0] if found else None
    if isinstance(node, AggregateNode):
        return Route(not node.without, frozenset(node.grouping))
    if isinstance(node, BinaryNode) and node.lhs.kind == node.rhs.kind == "vector":
        return Route(node.matching.on, frozenset(node.matching.labels))
    if isinstance(node, (AbsentNode, ScalarNode, VectorNode)):
        return ONE_PLACE
    if isinstance(node, HistogramQuantileNode):
        return Route(False, frozenset({"le"}))
    return None


def _changes_labels(node: Node) -> bool:
    """Nodes that make labels a combining node above could group by, which routing cannot foresee."""
    if isinstance(node, RelabelNode):
        return True
    if isinstance(node, BinaryNode) and node.matching.include:
        return True
    return isinstance(node, AggregateNode) and node.op == "count_values"


def _route(node: Node, above: bool, slots: list[Slot]) -> Route:
    if isinstance(node, StagedInput):
        return EVERYTHING
    if isinstance(node, ScalarNode):
        inputs = [n for n in walk(node) if isinstance(n, StagedInput)]
        if inputs and all(slots[n.slot].broadcast for n in inputs):
            return EVERYTHING  # every combine partition has all it needs
    if above and _changes_labels(node):
        return ONE_PLACE
    own = _constraint(node)
    route = own if own is not None else EVERYTHING
    for child in node.children():
        route = route.meet(_route(child, above or own is not None, slots))
    return route


def rebuild(node: Node, fn: Callable[[Node], Node], **changes: object) -> Node:
    """A copy of ``node`` with ``fn`` applied to its children and ``changes`` set (caches fresh)."""
    for name, value in vars(node).items():
        if name in changes:
            continue
        if isinstance(value, Node):
            new = fn(value)
            if new is not value:
                changes[name] = new
        elif isinstance(value, tuple) and any(isinstance(v, Node) for v in value):
            new_tuple = tuple(fn(v) if isinstance(v, Node) else v for v in value)
            if any(a is not b for a, b in zip(new_tuple, value)):
                changes[name] = new_tuple
    if not changes:
        return node
    clone = copy.copy(node)
    for name, value in vars(clone).items():
        if isinstance(value, weakref.WeakKeyDictionary):
            setattr(clone, name, weakref.WeakKeyDictionary())
    for name, value in changes.items():
        setattr(clone, name, value)
    post_init = getattr(clone, "__post_init__", None)
    if post_init is not None:
        post_init()
    return clone


__all__ = ["CannotSplit", "EVERYTHING", "ONE_PLACE", "Route", "Slot", "Split", "deepen", "rebuild", "split_expression", "walk"]
