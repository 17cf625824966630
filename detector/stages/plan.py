"""Which stage evaluates each rule, and what every partition of each stage runs.

Every rule gets one of four classes:

``local``
    combines no series that ``partition_by`` may put in different partitions
    (across scrape targets; by series family, across families): evaluated in
    every stage-1 partition, next to its inputs (the test of
    :mod:`detector.rules.placement`).
``staged``
    split (:mod:`detector.stages.split`) into stage-1 partials and a
    remainder that the combine partitions evaluate, with its partials spread
    over them by a non-empty routing key (or, for a rule that only reads
    series other staged rules recorded, evaluated by each combine partition
    over the share it holds).
``one-partition``
    split too, but the remainder needs everything in one place (``absent()``,
    ``vector()``, an aggregation without ``by``): all its partials go to the
    combine partition that owns such rules. They are bounded (counts,
    per-group partials, top-k candidates), not raw series.
``still-global``
    either its partials are unbounded and all go to that one combine
    partition (``quantile`` without ``by``, a join ``on()`` of raw series), or
    the stages cannot separate it (it combines series spread over the combine
    partitions by a staged recording rule with other series, or reads a
    series a global group records): the whole group is then evaluated by one
    engine over the raw series its selectors match, and so is every group
    recording a series it reads, as the global lane does today.

Series recorded by staged rules are read where they are: elementwise by
every combine partition over its share; in any way by the owner partition
if they all live there. A rule that aggregates a staged recording rule's
series (``sum(namespace:cpu:sum)``) reads the recording's expression instead,
when that is exactly what it would read (see :func:`_inlinable`).

An aggregation over a cross-target join that copies labels runs on two
combine levels (:func:`~detector.stages.split.deepen`); its class is that of
its last level. Series it records live on the second level: rules read them
there elementwise, or read its expression.

A group's class is its worst rule's. Rules of a group keep their order:
stage 1 evaluates a group's local rules and the stage-1 slots of its staged
rules in rule order; the combine partitions evaluate the staged rules' remainders
in rule order, after every stage-1 partition finished the tick.

Slots that compute the same thing are evaluated once (every partition pays a
fixed cost per evaluation, so this matters more the more partitions there
are). Two slots on the same ticks with the same expression over scraped
series only (or over a second level's inputs) give the same rows: with the
same route too, the later one is *shared* (it reads the first one's number,
and its rows are sent once); routed otherwise, it *rides* on the first one
(evaluated once, its rows put out under both numbers). Reading a recording's
expression instead of its series (above) makes such twins often.

>>> from detector.promql import compile_expr
>>> from detector.rules import AlertingRule, RecordingRule, RuleGroup
>>> rules = (
...     RecordingRule("ns:cpu:sum", compile_expr("sum by (ns) (rate(cpu[5m]))"), "..."),
...     AlertingRule("Busy", compile_expr("ns:cpu:sum > 4"), "ns:cpu:sum > 4"),
...     AlertingRule("Down", compile_expr("up == 0"), "up == 0"),
...     AlertingRule("NoUp", compile_expr("absent(up)"), "absent(up)"),
... )
>>> plan = StagePlan([RuleGroup("k8s", "f.yml", 15_000, rules)])
>>> [(r.rule.name, r.cls) for r in plan.groups[0].rules]
[('ns:cpu:sum', 'staged'), ('Busy', 'staged'), ('Down', 'local'), ('NoUp', 'one-partition')]
>>> plan.groups[0].cls
'one-partition'
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from detector.labels import DEFAULT_PARTITION_BY, METRIC_NAME, Labels, canonical_bytes, stable_hash
from detector.promql.aggregations import AggregateNode
from detector.promql.plan import DROPS_METRIC_NAME, BinaryNode, Node, SelectorNode
from detector.rules.group import Rule, RuleGroup
from detector.rules.placement import needs_global_lane
from detector.rules.recording import RecordingRule
from detector.stages.split import ONE_PLACE, CannotSplit, Route, Slot, Split, deepen, rebuild, split_expression, walk

LOCAL, STAGED, ONE_PARTITION, STILL_GLOBAL = "local", "staged", "one-partition", "still-global"
CLASSES = (LOCAL, STAGED, ONE_PARTITION, STILL_GLOBAL)
_SINGLE_OWNER_KEY: Labels = ()


@dataclass(eq=False)
class RulePlan:
    """Where one rule runs: ``where`` is ``"local"``, ``"stage2"`` or ``"global"``."""

    rule: Rule
    where: str
    split: Split | None = None
    # A second combine level (split.deepen): the first level's route, and the split of the remainder.
    deep: tuple[Route, Split] | None = None
    level2: bool = False  # reads series a second-level rule records, elementwise: runs on that level too
    stage2_rule: Rule | None = None  # the rule with its (last) remainder as expression

    @property
    def cls(self) -> str:
        if self.where == "local":
            return LOCAL
        if self.where == "global":
            return STILL_GLOBAL
        assert self.split is not None
        last = self.deep[1] if self.deep is not None else self.split
        route = last.slots[0].route if last.slots else last.route
        if last.reads_stage2 or not route.single:
            return STAGED
        return ONE_PARTITION if last.bounded else STILL_GLOBAL


@dataclass(eq=False)
class GroupPlan:
    group: RuleGroup
    rules: list[RulePlan]

    @property
    def cls(self) -> str:
        return max((r.cls for r in self.rules), key=CLASSES.index, default=LOCAL)

    @property
    def is_global(self) -> bool:
        return any(r.where == "global" for r in self.rules)


class StagePlan:
    """The stages of a rule set; see the module docstring."""

    def __init__(self, groups: list[RuleGroup], partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY) -> None:
        self.partition_by = partition_by
        self.groups = self._place(groups)
        self.slots: list[Slot] = []
        raw_only = _reads_raw_only(groups)
        same: dict[tuple, Slot] = {}  # slots that always give the same partials, by what they compute
        computed: dict[tuple, Slot] = {}  # the same, regardless of where the rows go
        for g in self.groups:
            for r in g.rules:
                if r.split is None:
                    continue
                for split in (r.split, r.deep[1] if r.deep is not None else None):
                    if split is None:
                        continue
                    for s in split.slots:
                        if g.group.limit:  # the alert limit counts a rule's alerts in one place
                            s.route = ONE_PLACE
                        if r.deep is not None and split is r.split:
                            s.route = r.deep[0]  # to the first combine level, by the join's labels
                        key = _sharing_key(s, g.group, raw_only)
                        first = same.get(key) if key is not None else None
                        if first is not None:
                            s.id, s.shared = first.id, True  # evaluated and sent once, as that slot
                            continue
                        if key is not None:
                            same[key] = s
                            # The same rows routed otherwise: evaluated once, by the first such slot.
                            host = computed.setdefault(key[:-1], s)
                            if host is not s:
                                s.rides = True
                                host.also.append(s)
                        s.id = len(self.slots)
                        self.slots.append(s)
                    for node in split.inputs:  # from the split's numbering to the plan's
                        node.slot = split.slots[node.slot].id
                last = r.deep[1] if r.deep is not None else r.split
                r.stage2_rule = dataclasses.replace(r.rule, expr=last.remainder)
        # When the stages' groups evaluate: tick t of a group of (interval, delay) once the watermark reached
        # t + delay, t a multiple of the interval (RuleEngine).
        self.phases = tuple(sorted({(g.group.interval_ms, g.group.evaluation_delay_ms) for g in self.groups if not g.is_global}))
        self.levels = 2 if any(r.deep is not None for g in self.groups for r in g.rules) else 1
        # Whether a combine partition has anything to evaluate. Without (every rule local, or still
        # global) there is no combine stage: stage 1 sends no frames, not even watermarks.
        self.combines = any(r.where == "stage2" for g in self.groups if not g.is_global for r in g.rules)
        shared = [(i, s.id) for i, s in enumerate(s for g in self.groups for r in g.rules if r.split is not None
                                                 for split in (r.split, r.deep[1] if r.deep is not None else None)
                                                 if split is not None for s in split.slots) if s.shared]
        # Slot numbers mean something else once slots are shared: frames and snapshots of a plan
        # without sharing are refused, not misread (a rule set with no shared slot keeps its fingerprint).
        self.fingerprint = _fingerprint(groups, partition_by, shared)
        self._global_selectors = tuple(
            n.matchers for g in self.groups if g.is_global for r in g.rules for n in walk(r.rule.expr)
            if isinstance(n, SelectorNode)
        )

    # --- What each partition runs. -------------------------------------------------------

    def stage1_parts(self) -> list[tuple[RuleGroup, list[Rule | Slot]]]:
        """Per group evaluated in stage 1: its local rules and its staged rules' slots, in rule order."""
        parts = []
        for g in self.groups:
            if g.is_global:
                continue
            items: list[Rule | Slot] = []
            for r in g.rules:
                if r.where == "local":
                    items.append(r.rule)
                elif r.split is not None:
                    items += [s for s in r.split.slots if not (s.shared or s.rides)]
            if items:
                parts.append((g.group, items))
        return parts

    def combine_parts(self, index: int, count: int, level: int = 1) -> list[tuple[RuleGroup, list[Rule | Slot]]]:
        """What combine partition ``index`` of ``count`` at ``level`` evaluates, per group in rule order.

        Rules whose partials all go to one place run only in the owner
        partition. At level 1, a rule with a second level contributes its
        second-level slots; at level 2 only such rules run.
        """
        owner = self.owner(count)
        parts = []
        for g in self.groups:
            if g.is_global:
                continue
            items: list[Rule | Slot] = []
            for r in g.rules:
                if r.where != "stage2":
                    continue
                on_level2 = r.deep is not None or r.level2
                if level == 1 and r.deep is not None:
                    items += [s for s in r.deep[1].slots if not (s.shared or s.rides)]
                elif (level == 2) == on_level2 and (index == owner or not self._single(r, g)):
                    items.append(r.stage2_rule)  # type: ignore[arg-type]
            if items:
                parts.append((g.group, items))
        return parts

    def global_groups(self) -> list[RuleGroup]:
        return [g.group for g in self.groups if g.is_global]

    @property
    def global_selectors(self) -> tuple:
        """The matchers of every selector of the still-global groups (what the receiver copies there)."""
        return self._global_selectors

    def feeds_global(self, labels: Labels) -> bool:
        """Whether a raw series is an input of a still-global group."""
        values = dict(labels)
        return any(all(m.matches(values.get(m.name, "")) for m in ms) for ms in self._global_selectors)

    def owner(self, count: int) -> int:
        """The combine partition that evaluates rules whose partials all go to one place."""
        return stable_hash(canonical_bytes(_SINGLE_OWNER_KEY)) % count

    def destination(self, slot: Slot, labels: Labels, count: int) -> int:
        """The combine partition a partial row of ``slot`` goes to."""
        return stable_hash(canonical_bytes(slot.route.key(labels))) % count

    def rule_classes(self) -> Counter[str]:
        return Counter(r.cls for g in self.groups for r in g.rules)

    # --- Placement. ----------------------------------------------------------------------

    def _single(self, r: RulePlan, g: GroupPlan) -> bool:
        if r.split is None:
            return False
        last = r.deep[1] if r.deep is not None else r.split
        return bool(g.group.limit) or (not last.reads_stage2 and last.route.single)

    def _place(self, groups: list[RuleGroup]) -> list[GroupPlan]:
        """Place every rule; repeated until where each recorded series lives stops changing."""
        recorded_where: dict[str, str] = {}
        forced: set[int] = set()
        for _ in range(len(groups) + 2):
            plans = [
                GroupPlan(g, [
                    self._place_rule(rule, g, recorded_where, i in forced, _inlinable(groups, i, k, recorded_where))
                    for k, rule in enumerate(g.rules)
                ])
                for i, g in enumerate(groups)
            ]
            new_forced = {i for i, p in enumerate(plans) if p.is_global} | forced
            recorders: dict[str, set[int]] = {}
            for i, g in enumerate(groups):
                for rule in g.rules:
                    if isinstance(rule, RecordingRule):
                        recorders.setdefault(rule.name, set()).add(i)
            changed = True
            while changed:  # a group recording what a global group reads is global too
                changed = False
                for i in list(new_forced):
                    for name in _names_read(groups[i]):
                        for j in recorders.get(name, ()):
                            if j not in new_forced:
                                new_forced.add(j)
                                changed = True
            new_where: dict[str, str] = {}
            order = ("local", "stage2", "owner", "deep", "global")
            for i, p in enumerate(plans):
                for r in p.rules:
                    if isinstance(r.rule, RecordingRule):
                        where = "global" if i in new_forced else r.where
                        if where == "stage2" and (r.deep is not None or r.level2):
                            where = "deep"  # in the second combine level: read only as its expression
                        elif where == "stage2" and self._single(r, p):
                            where = "owner"  # all its series in the owner combine partition
                        previous = new_where.get(r.rule.name, "local")
                        new_where[r.rule.name] = max(previous, where, key=order.index)
            if new_where == recorded_where and new_forced == forced:
                return plans
            recorded_where, forced = new_where, new_forced
        raise AssertionError("rule placement did not settle")  # each round only moves rules later in `order`

    def _place_rule(
        self, rule: Rule, group: RuleGroup, recorded_where: dict[str, str], forced: bool, inlinable: dict[str, Node]
    ) -> RulePlan:
        if forced:
            return RulePlan(rule, "global")
        expr = _inline(rule.expr, inlinable) if inlinable else rule.expr
        names = _names_in(expr)
        if any(recorded_where.get(n) == "global" for n in names):
            return RulePlan(rule, "global")
        deep = frozenset(n for n in names if recorded_where.get(n) == "deep")
        if deep:  # only elementwise over those series, on the level where they are
            try:
                split = split_expression(expr, self.partition_by, deep)
            except CannotSplit:
                return RulePlan(rule, "global")
            if split.slots or not split.reads_stage2 or group.limit:
                return RulePlan(rule, "global")
            return RulePlan(rule, "stage2", split, level2=True)
        stage2 = frozenset(n for n, w in recorded_where.items() if w == "stage2")
        owner = frozenset(n for n, w in recorded_where.items() if w == "owner")
        if expr is rule.expr and not (names & (stage2 | owner)) and not needs_global_lane(expr, self.partition_by):
            return RulePlan(rule, "local")
        try:
            split = split_expression(expr, self.partition_by, stage2, owner)
        except CannotSplit:
            return RulePlan(rule, "global")
        if group.limit and split.reads_stage2:
            return RulePlan(rule, "global")
        return RulePlan(rule, "stage2", split, None if group.limit else deepen(split))


def _inlinable(groups: list[RuleGroup], gi: int, ri: int, recorded_where: dict[str, str]) -> dict[str, Node]:
    """Stage-2 recorded series the rule at (gi, ri) may read as the expression that records them.

    Such a series is written by one recording rule without extra labels, in a
    group of the same interval evaluated before the reader at every tick (an
    earlier group, or earlier in the same group): at tick t the reader sees
    exactly what that expression gives at t, or nothing where it gave nothing
    (a staleness marker). Reading the expression instead lets an aggregation
    of a staged recording rule (``sum(namespace:cpu:sum)``) be staged too,
    instead of a third stage or the global lane.
    """
    found: dict[str, list[tuple[int, int, RecordingRule]]] = {}
    for i, g in enumerate(groups):
        for k, rule in enumerate(g.rules):
            if isinstance(rule, RecordingRule):
                found.setdefault(rule.name, []).append((i, k, rule))
    out = {}
    for name, recorders in found.items():
        if recorded_where.get(name) not in ("stage2", "deep") or len(recorders) != 1:
            continue
        i, k, rule = recorders[0]
        if not rule.labels and groups[i].interval_ms == groups[gi].interval_ms and (i, k) < (gi, ri):
            out[name] = rule.expr
    return out


def _inline(expr: Node, inlinable: dict[str, Node]) -> Node:
    """``expr`` with bare selectors of ``inlinable`` series replaced by their expressions.

    Only where the metric name is dropped anyway (an aggregation's argument
    not grouped by ``__name__``, an arithmetic operand), since the expression
    has no ``__name__`` where the recorded series has one.
    """

    def bare(node: Node) -> Node | None:
        if isinstance(node, SelectorNode) and node.offset_ms == 0 and len(node.matchers) == 1:
            m = node.matchers[0]
            if m.name == METRIC_NAME and m.op == "=" and m.value in inlinable:
                return inlinable[m.value]
        return None

    def visit(node: Node) -> Node:
        if isinstance(node, AggregateNode) and METRIC_NAME not in node.grouping:
            replacement = bare(node.expr)
            if replacement is not None:
                return rebuild(node, visit, expr=replacement)
        if isinstance(node, BinaryNode) and node.op in DROPS_METRIC_NAME:
            changes = {side: r for side in ("lhs", "rhs") if (r := bare(getattr(node, side))) is not None}
            if changes:
                return rebuild(node, visit, **changes)
        return rebuild(node, visit)

    return visit(expr)


def _names_in(expr: Node) -> set[str]:
    return {m.value for n in walk(expr) if isinstance(n, SelectorNode) for m in n.matchers if m.name == METRIC_NAME and m.op == "="}


def _names_read(group: RuleGroup) -> set[str]:
    return set().union(*(_names_in(rule.expr) for rule in group.rules))


def _reads_raw_only(groups: list[RuleGroup]) -> Callable[[Node], bool]:
    """Whether an expression reads only scraped series: each selector names a metric no rule writes."""
    written = {rule.name for g in groups for rule in g.rules if isinstance(rule, RecordingRule)} | {"ALERTS", "ALERTS_FOR_STATE"}

    def raw_only(node: Node) -> bool:
        for n in walk(node):
            if isinstance(n, SelectorNode):
                names = {m.value for m in n.matchers if m.name == METRIC_NAME and m.op == "="}
                if not names or names & written:
                    return False
        return True

    return raw_only


def _sharing_key(slot: Slot, group: RuleGroup, raw_only: Callable[[Node], bool]) -> tuple | None:
    """What a slot computes, when; two slots with one key give the same partials at every tick.

    The nodes' dataclass reprs spell out the expression (a node without one, or
    a function made per expression, shows its address: no two such are alike).
    Slots evaluated on the same ticks (group interval and delay) over the same
    data give the same rows: over scraped series only, since a rule between them
    may write a series they read; or over other slots' merged partials (a second
    combine level's input), which do not change within a tick.
    """
    if not all(raw_only(node) for node in slot.nodes):
        return None
    return (slot.kind, slot.limit, slot.bounded, group.interval_ms, group.evaluation_delay_ms, repr(slot.nodes),
            (slot.route, slot.broadcast))  # last: where the rows go


def _fingerprint(groups: list[RuleGroup], partition_by: tuple[str, ...], shared: list | None = None) -> int:
    """Identifies the rule set and partitioning a frame's slot numbers refer to."""
    text = repr((partition_by, [(g.name, g.interval_ms, g.limit, [(type(r).__name__, r.name, r.expr_text) for r in g.rules]) for g in groups]))
    if shared:
        text += repr(("shared slots", shared))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


__all__ = ["CLASSES", "GroupPlan", "LOCAL", "ONE_PARTITION", "RulePlan", "STAGED", "STILL_GLOBAL", "StagePlan"]
