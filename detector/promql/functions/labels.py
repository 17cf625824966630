"""``label_replace`` and ``label_join``: each sample's labels rewritten, its value kept."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from detector.labels import Labels
from detector.promql.functions.common import unique
from detector.promql.go_regexp import go_expand, go_regexp
from detector.promql.plan import EvalContext, Node
from detector.promql.values import InstantVector, Value

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


@dataclass(eq=False)
class RelabelNode(Node):
    """``label_replace`` and ``label_join``: each sample's labels rewritten, its value kept.

    ``relabel`` maps a label set to its new one; results are cached per label set.

    >>> from detector.wire.batch import SampleBatch
    >>> from detector.promql import compile_expr
    >>> from detector.store import SeriesStore
    >>> store = SeriesStore(retention_ms=600_000)
    >>> _ = store.append(SampleBatch.from_series([((("__name__", "up"), ("instance", "db-1:9100")), [(0, 1.0)])]))
    >>> node = compile_expr('label_replace(up, "host", "$1", "instance", "(.*):.*")')
    >>> list(node.evaluate(EvalContext(store, t_ms=0)).samples())
    [((('__name__', 'up'), ('host', 'db-1'), ('instance', 'db-1:9100')), 1.0)]
    """

    expr: Node
    relabel: Callable[[Labels], Labels]
    dst: str = ""  # the label it writes: a node above that matches or groups by it may meet series of other partitions
    kind = "vector"

    def __post_init__(self) -> None:
        self._cached = lru_cache(maxsize=1 << 16)(self.relabel)

    def reach_ms(self) -> int:
        return self.expr.reach_ms()

    def evaluate(self, ctx: EvalContext) -> Value:
        vector = self.expr.evaluate(ctx)
        assert isinstance(vector, InstantVector)
        return unique([self._cached(l) for l in vector.labels], vector.values)


def _with_label(labels: Labels, name: str, value: str) -> Labels:
    """``labels`` with ``name`` set to ``value``, or removed if ``value`` is empty."""
    kept = [p for p in labels if p[0] != name]
    if value:
        kept.append((name, value))
    return tuple(sorted(kept))


def label_replacer(dst: str, replacement: str, src: str, regex: str) -> Callable[[Labels], Labels]:
    """The relabelling ``label_replace(v, dst, replacement, src, regex)`` does; ValueError if it would fail.

    >>> relabel = label_replacer("host", "$1", "instance", "(.*):.*")
    >>> relabel((("instance", "db-1:9100"),))
    (('host', 'db-1'), ('instance', 'db-1:9100'))
    >>> relabel((("instance", "db-1"),))  # no match: unchanged
    (('instance', 'db-1'),)
    """
    if not LABEL_NAME.fullmatch(dst):
        raise ValueError(f"invalid destination label name in label_replace(): {dst}")
    try:
        pattern = go_regexp(regex)
    except ValueError as exc:
        raise ValueError(f"invalid regular expression in label_replace(): {regex}: {exc}") from None

    def relabel(labels: Labels) -> Labels:
        match = pattern.fullmatch(dict(labels).get(src, ""))
        if match is None:
            return labels
        return _with_label(labels, dst, go_expand(replacement, match))

    return relabel


def label_joiner(dst: str, separator: str, sources: Sequence[str]) -> Callable[[Labels], Labels]:
    """The relabelling ``label_join(v, dst, separator, src...)`` does; ValueError if it would fail.

    >>> label_joiner("addr", ":", ["host", "port"])((("host", "db"), ("port", "5432")))
    (('addr', 'db:5432'), ('host', 'db'), ('port', '5432'))
    """
    for name in sources:
        if not LABEL_NAME.fullmatch(name):
            raise ValueError(f"invalid source label name in label_join(): {name}")
    if not LABEL_NAME.fullmatch(dst):
        raise ValueError(f"invalid destination label name in label_join(): {dst}")

    def relabel(labels: Labels) -> Labels:
        values = dict(labels)
        return _with_label(labels, dst, separator.join(values.get(name, "") for name in sources))

    return relabel

