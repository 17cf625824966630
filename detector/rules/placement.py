"""Where each rule group is evaluated: with its targets' partitions, or in the global lane.

Series are partitioned by their scrape target (``job``, ``instance``; other
``partition_by`` labels, or the series family, are tested alike through
:func:`detector.labels.colocated_by`). A group
whose expressions only combine series of one target (a queue's depth over its
max depth, one histogram's buckets, a rate) is evaluated in every partition,
next to its inputs. A group with an expression that combines series across
targets (``sum by (reason) (...)`` over instances, ``on(queue_name)`` matching
a config metric of another job, ``absent()``, ``scalar()``) or reads no series
at all (``vector(1)``) goes to the *global lane*: the receiver also sends the
series its selectors match to a one-partition topic, and one engine there sees
all of them. Groups whose recorded series a global group reads go there too,
so nothing a global rule needs is computed elsewhere; and a group that reads a
series a global group records goes there as well, since that series exists
only in the lane. The receiver also sends
the lane a clock sample per request (:data:`detector.labels.LANE_CLOCK`), so its evaluations
advance even while none of its input series exist (``absent()`` must fire
then).

A group whose alert templates call ``query`` goes to the global lane too: a
query may read any target's series. The selectors of its constant queries
(``{{ query "up == 0" }}``) join the lane's, so those series reach it; a query
built while rendering (``{{ printf "up{instance=%q}" $labels.instance | query }}``)
can only read what the lane holds for its other selectors.

>>> from detector.promql import compile_expr
>>> needs_global_lane(compile_expr("pgmq_queue_depth / pgmq_queue_max_depth > 0.8"))
False
>>> needs_global_lane(compile_expr("pgmq_queue_depth / on(queue_name) group_left pgmq_queue_limit > 0.8"))
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from detector.labels import DEFAULT_PARTITION_BY, METRIC_NAME, AllNamesBut, Labels, colocated_by
from detector.promql import UnsupportedExpression, compile_expr
from detector.promql.aggregations import AggregateNode
from detector.promql.functions import HistogramQuantileNode, RelabelNode
from detector.promql.plan import BinaryNode, Matcher, Node, SelectorNode
from detector.rules.alerting import AlertingRule
from detector.rules.group import RuleGroup
from detector.rules.recording import RecordingRule


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children():
        yield from walk(child)


def needs_global_lane(node: Node, partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY) -> bool:
    """Whether an expression combines series across targets, or reads no series at all
    (``vector(1)``, ``time() > 0``: every partition would give the same result)."""
    nodes = list(walk(node))
    return combines_across(node, colocated_by(partition_by)) or not any(isinstance(n, SelectorNode) for n in nodes)


def combines_across(node: Node, keep: frozenset[str] | AllNamesBut) -> bool:
    """Whether ``node`` may combine series that differ in a label of ``keep`` (:func:`detector.labels.colocated_by`).

    Besides the nodes that combine such series themselves, a node that matches
    or groups series by their labels counts if below it ``label_replace`` or
    ``label_join`` writes a label of ``keep``: series of two partitions may then
    agree on it.

    >>> from detector.promql import compile_expr
    >>> keep = frozenset({"job", "instance"})
    >>> combines_across(compile_expr('sum by (job, instance) (label_replace(up, "pod", "$1", "job", "(.*)"))'), keep)
    False
    >>> combines_across(compile_expr('sum by (job, instance) (label_replace(up, "instance", "$1", "pod", "(.*)"))'), keep)
    True
    """
    for n in walk(node):
        if n.combines_series(keep):
            return True
        if _matches_labels(n) and any(isinstance(d, RelabelNode) and d.dst in keep for d in walk(n)):
            return True
    return False


def _matches_labels(node: Node) -> bool:
    """Nodes whose result for a series depends on other series with related labels."""
    if isinstance(node, BinaryNode):
        return node.lhs.kind == node.rhs.kind == "vector"
    return isinstance(node, (AggregateNode, HistogramQuantileNode))


@dataclass(frozen=True)
class Placement:
    local: list[RuleGroup]
    global_: list[RuleGroup]
    global_selectors: tuple[tuple[Matcher, ...], ...]

    def feeds_global_lane(self, labels: Labels) -> bool:
        """Whether a series is an input of some global group (so goes to the global lane too)."""
        values = dict(labels)
        return any(all(m.matches(values.get(m.name, "")) for m in matchers) for matchers in self.global_selectors)


def place_groups(groups: list[RuleGroup], partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY) -> Placement:
    """Split groups into local and global ones (see the module docstring)."""
    is_global = [
        any(needs_global_lane(rule.expr, partition_by) or uses_template_query(rule) for rule in g.rules) for g in groups
    ]
    recorded_by: dict[str, list[int]] = {}  # several groups may record one name
    for i, g in enumerate(groups):
        for rule in g.rules:
            if isinstance(rule, RecordingRule):
                recorded_by.setdefault(rule.name, []).append(i)
    reads = [_recorded_names_read(g, recorded_by) for g in groups]
    changed = True
    while changed:
        changed = False
        for i in range(len(groups)):
            for j in (j for name in reads[i] for j in recorded_by.get(name, ())):
                if is_global[i] == is_global[j]:
                    continue
                # Global reads local: the lane must compute that recording itself.
                # Local reads global: the recording exists only in the lane, where
                # no partition can read it, so the reader goes there too.
                is_global[i] = is_global[j] = changed = True
    global_groups = [g for g, flag in zip(groups, is_global) if flag]
    selectors = tuple(
        node.matchers
        for g in global_groups
        for rule in g.rules
        for expr in expressions_read(rule)
        for node in walk(expr)
        if isinstance(node, SelectorNode)
    )
    return Placement([g for g, flag in zip(groups, is_global) if not flag], global_groups, selectors)


def uses_template_query(rule: object) -> bool:
    """Whether an alerting rule's label or annotation templates call ``query``."""
    return isinstance(rule, AlertingRule) and any(t.uses_query() for _, t in (*rule.labels, *rule.annotations))


def expressions_read(rule: object) -> list[Node]:
    """A rule's expression and the constant expressions its templates ``query``."""
    nodes = [rule.expr]  # type: ignore[attr-defined]
    if isinstance(rule, AlertingRule):
        for _, template in (*rule.labels, *rule.annotations):
            for text in template.queries():
                try:
                    nodes.append(compile_expr(text))
                except UnsupportedExpression:
                    pass  # the query then renders as its error; it reads nothing
    return nodes


def _recorded_names_read(group: RuleGroup, recorded: dict[str, list[int]]) -> set[str]:
    """The recorded names a group's selectors can match (``job:x:sum`` or ``{__name__=~"job:.*"}``)."""
    names = set()
    for rule in group.rules:
        for node in (n for expr in expressions_read(rule) for n in walk(expr)):
            if isinstance(node, SelectorNode):
                by_name = [m for m in node.matchers if m.name == METRIC_NAME]
                if by_name:  # a selector without a name matcher is left out, as before
                    names |= {r for r in recorded if all(m.matches(r) for m in by_name)}
    return names
