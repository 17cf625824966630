"""The leaf a stage-2 expression reads its combined partials from.

Compiled rule nodes are shared by every engine, and an evaluation context
carries only the store and the time; so, like the selectors' caches, a combine
partition registers itself as the *feed* of its engine's store, and a
:class:`StagedInput` asks the feed of the store it is evaluated on for its
slot's merged result at that tick.

>>> import numpy as np
>>> from detector.promql import EvalContext, InstantVector
>>> from detector.store import SeriesStore
>>> class Fixed:
...     def combined(self, slot, t_ms):
...         return InstantVector([(("ns", "a"),)], np.array([float(slot + t_ms)]))
>>> store = SeriesStore(retention_ms=1)
>>> register_feed(store, Fixed())
>>> StagedInput(slot=2).evaluate(EvalContext(store, t_ms=40)).values.tolist()
[42.0]
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Protocol

from detector.promql.plan import EvalContext, EvaluationError, Node
from detector.promql.values import InstantVector, Value
from detector.store import SeriesStore


class Feed(Protocol):
    def combined(self, slot: int, t_ms: int) -> InstantVector: ...


_FEEDS: weakref.WeakKeyDictionary[SeriesStore, Feed] = weakref.WeakKeyDictionary()


def register_feed(store: SeriesStore, feed: Feed) -> None:
    """Make ``feed`` answer the :class:`StagedInput` nodes evaluated on ``store``."""
    _FEEDS[store] = feed


@dataclass(eq=False)
class StagedInput(Node):
    """Where a stage-1 slot's merged partials enter the rest of a rule (its value at the tick only)."""

    slot: int
    kind = "vector"

    def evaluate(self, ctx: EvalContext) -> Value:
        feed = _FEEDS.get(ctx.store)
        if feed is None:
            raise EvaluationError(f"staged input {self.slot} evaluated outside a combine partition")
        return feed.combined(self.slot, ctx.t_ms)


__all__ = ["Feed", "StagedInput", "register_feed"]
