"""Which metric names a rule set can read, so a partition stores only what some rule may need.

>>> from detector.rules import load_rule_files
>>> may_read_metric(load_rule_files(["backpressure"]), "headroom_anomaly_score")
False
>>> may_read_metric(load_rule_files(["anomaly"]), "headroom_anomaly_score")
True
"""

from __future__ import annotations

from detector.labels import METRIC_NAME
from detector.promql.plan import SelectorNode
from detector.rules.alerting import AlertingRule
from detector.rules.group import RuleGroup
from detector.rules.placement import expressions_read, walk


def may_read_metric(groups: list[RuleGroup], name: str) -> bool:
    """Whether any rule of ``groups`` could read a series named ``name``.

    A selector reads it when all its ``__name__`` matchers match ``name``; one
    without a name matcher (``{job="api"}``) may read any name. Constant
    ``query`` calls in alert templates count as expressions; a query built
    while rendering may read anything, so it answers True.
    """
    for group in groups:
        for rule in group.rules:
            if isinstance(rule, AlertingRule) and not all(
                t.queries_are_constant() for _, t in (*rule.labels, *rule.annotations)
            ):
                return True
            for node in (n for expr in expressions_read(rule) for n in walk(expr)):
                if isinstance(node, SelectorNode) and all(
                    m.matches(name) for m in node.matchers if m.name == METRIC_NAME
                ):
                    return True
    return False
