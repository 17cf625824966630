"""Recording rules: an expression's result stored back as new series."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.labels import METRIC_NAME, Labels, canonical_bytes
from detector.promql import EvalContext, InstantVector, Node, Scalar
from detector.promql.plan import EvaluationError
from detector.store import STALE_NAN_BITS, SeriesStore

_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(eq=False)
class RecordingRule:
    """Evaluates ``expr`` and appends the result under the name ``record``.

    Later rules of the same group see the result at the same evaluation time,
    as in Prometheus; a series that leaves the result gets a staleness marker.
    ``previous`` (per engine) holds the rows written at the last evaluation.
    """

    name: str
    expr: Node
    expr_text: str
    labels: tuple[tuple[str, str], ...] = ()
    group: str = ""
    source: str = ""
    # Result labels -> stored key: the same series come back at every evaluation (a pure function, so
    # one memo serves every engine the rule runs in).
    _keys: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def evaluate(self, ctx: EvalContext, previous: np.ndarray) -> np.ndarray:
        result = self.expr.evaluate(ctx)
        if isinstance(result, Scalar):
            result = InstantVector([()], np.array([result.value]))
        memo = self._keys
        if len(memo) > max(4 * len(result.labels), 1 << 12):  # series churn: start the memo again
            memo.clear()
        keys = []
        for labels in result.labels:
            key = memo.get(labels)
            if key is None:
                key = memo[labels] = self._key(labels)
            keys.append(key)
        if len(set(keys)) != len(keys):
            raise EvaluationError(
                f"recording rule {self.name}: vector contains metrics with the same labelset after applying rule labels"
            )
        return write_series(ctx.store, keys, result.values, ctx.t_ms, previous)

    def _key(self, labels: Labels) -> bytes:
        """The stored series' key for a result sample's labels: the rule's name and labels set."""
        out = dict(labels)
        out[METRIC_NAME] = self.name
        for name, value in self.labels:
            if value:
                out[name] = value
            else:  # an empty value removes the label, as in Prometheus
                out.pop(name, None)
        return canonical_bytes(tuple(sorted(out.items())))


def write_series(store: SeriesStore, keys: list[bytes], values: np.ndarray, t_ms: int, previous: np.ndarray) -> np.ndarray:
    """Append a rule's output at ``t_ms``; series written last time but not now get a staleness marker.

    Returns the rows written, to pass back as ``previous`` next time.
    """
    if not keys and not len(previous):
        return _NO_ROWS  # nothing then, nothing now (an alerting rule without alerts, mostly)
    rows = store.series_ids(keys) if keys else _NO_ROWS
    values = np.asarray(values, dtype=np.float64)
    # Usually the same series as last time, in the same order: then none went.
    same = len(previous) == len(rows) and bool((previous == rows).all())
    gone = _NO_ROWS if same or not len(previous) else np.setdiff1d(previous, rows)
    if len(gone):
        stale = np.full(len(gone), STALE_NAN_BITS, dtype=np.uint64).view(np.float64)
        rows_and_gone, values = np.concatenate([rows, gone]), np.concatenate([values, stale])
    else:
        rows_and_gone = rows
    store.append_rows(rows_and_gone, t_ms, values, distinct=True)  # keys are distinct (checked), gone rows too
    return rows
