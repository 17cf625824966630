"""The scorer the pipeline calls: series keys to state rows, counters to rates, batches to scores.

One :class:`AnomalyScorer` holds every series of a partition. Each Kafka
message (a :class:`~detector.wire.batch.SampleBatch`) is scored in one call; the
samples of one series are scored in their order in the batch, every sample
before it is learned.

>>> from detector.wire.batch import SampleBatch
>>> scorer = AnomalyScorer()
>>> batch = SampleBatch.from_series([
...     ((("__name__", "jobs_total"),), [(i * 15_000, 10.0 * i) for i in range(3)]),
...     ((("__name__", "queue_depth"),), [(i * 15_000, 5.0) for i in range(3)]),
... ])
>>> scorer.score_batch(batch).tolist()  # warming up: every sample gets a score, 0.0
[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
>>> scorer.is_counter_row(scorer.rows_for(batch.series_keys)).tolist()
[True, False]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from detector.anomaly.counters import CounterState, is_counter
from detector.anomaly.models import DEFAULT_MODEL, make_model
from detector.labels import labels_from_canonical
from detector.wire.metadata import MetricTypes


def _name_from_key(key: bytes) -> str:
    """The metric name of a canonical series key ("" for a key that is not one)."""
    try:
        labels = labels_from_canonical(key)
    except Exception:  # noqa: BLE001 - a caller's own keys: no name, so not a counter by name
        return ""
    for name, value in labels:
        if name == "__name__":
            return value
    return ""


class AnomalyScorer:
    """Anomaly scores for many series, state kept as rows of one model.

    ``counter`` decides, for a series key seen for the first time, whether it is
    a counter (scored on its per-second rate); by default the metric name's
    Prometheus conventions do (``_total``, ``_count``, ``_sum``, ``_bucket``).
    With ``metric_types`` (the senders' metadata), a declared type decides
    first; :meth:`reclassify` applies types learned after a series was seen.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        counter: Callable[[bytes], bool] | None = None,
        metric_types: MetricTypes | None = None,
    ) -> None:
        self.model_name = model
        self.model = make_model(model)
        self.metric_types = metric_types
        self.counter = counter or self._counter_by_type_or_name
        self.rows: dict[bytes, int] = {}
        self.free: list[int] = []
        self.capacity = 0
        self.counters = CounterState(0)
        self.counter_rows = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return len(self.rows)

    def _grow(self, need: int) -> None:
        if need <= self.capacity:
            return
        # A quarter more, not twice: at 10k+ series per partition doubling left a third of the
        # state rows (about 0.9 KB each) unused on average; copies stay amortised O(1).
        capacity = max(need, self.capacity + self.capacity // 4, 64)
        self.model.grow(capacity)
        self.counters.grow(capacity)
        self.counter_rows = np.r_[self.counter_rows, np.zeros(capacity - self.capacity, dtype=bool)]
        self.capacity = capacity

    def rows_for(self, keys: Sequence[bytes]) -> np.ndarray:
        """The state row of each series key, making rows for keys not seen before."""
        known = list(map(self.rows.get, keys))  # one dict lookup per key, in C, for the common case
        if None not in known:
            return np.array(known, dtype=np.intp)
        out = np.empty(len(keys), dtype=np.intp)
        for i, key in enumerate(keys):
            row = known[i]
            if row is None:
                row = self.rows.get(key)  # listed twice (a coalesced batch): made a row at its first mention
            if row is None:
                if self.free:
                    row = self.free.pop()
                else:
                    row = len(self.rows)
                    self._grow(row + 1)
                self.rows[key] = row
                self.counter_rows[row] = bool(self.counter(key))
            out[i] = row
        return out

    def _counter_by_type_or_name(self, key: bytes) -> bool:
        name = _name_from_key(key)
        return is_counter(name, self.metric_types.type_of(name) if self.metric_types is not None else None)

    def reclassify(self) -> int:
        """Apply what is now known of each series' type; returns how many series changed.

        A series whose counter-ness changed starts again from nothing: what
        its model learned was of the wrong quantity (a rate, or a raw value).
        Metadata changes rarely (a new family, a new sender), so a pass over
        every series then is cheap.
        """
        changed = [(key, row) for key, row in self.rows.items() if bool(self.counter(key)) != bool(self.counter_rows[row])]
        if changed:
            rows = np.asarray([row for _, row in changed], dtype=np.intp)
            self.model.reset(rows)
            self.counters.reset(rows)
            self.counter_rows[rows] = ~self.counter_rows[rows]
        return len(changed)

    def is_counter_row(self, rows: np.ndarray) -> np.ndarray:
        return self.counter_rows[rows]

    def retire(self, keys: Sequence[bytes]) -> None:
        """Forget series (stale, or moved away): their rows are cleared and reused."""
        gone = [self.rows.pop(k) for k in keys if k in self.rows]
        if gone:
            rows = np.asarray(gone, dtype=np.intp)
            self.model.reset(rows)
            self.counters.reset(rows)
            self.free.extend(gone)

    def score(self, rows: np.ndarray, timestamps_s: np.ndarray, values: np.ndarray,
              deviation: np.ndarray | None = None) -> np.ndarray:
        """Score samples (row, time in seconds, value), in order within each row; with ``deviation``
        (float64, one per sample) each sample's signed relative deviation from its expected level
        (a counter's: of its rate) is written there, NaN where the model has none."""
        rows = np.asarray(rows, dtype=np.intp)
        t = np.asarray(timestamps_s, dtype=np.float64)
        x = np.asarray(values, dtype=np.float64)
        counter = self.counter_rows[rows]
        if counter.any():  # a counter is scored on its rate (in order within each series, as the model)
            x = x.copy()
            x[counter] = self.counters.rates(rows[counter], t[counter], x[counter])
        return self.model.run(rows, t, x, deviation)

    def score_batch(self, batch, deviation: np.ndarray | None = None) -> np.ndarray:
        """Scores of a :class:`~detector.wire.batch.SampleBatch`, one per sample, in its order (and
        deviations into ``deviation``, as :meth:`score`)."""
        rows = self.rows_for(batch.series_keys)[batch.series_index.astype(np.intp)]
        return self.score(rows, batch.timestamps / 1000.0, batch.values, deviation)

    @property
    def bytes_per_series(self) -> int:
        return int(self.model.bytes_per_series) + 2 * 8 + 1

    # Snapshots (detector.snapshot) carry every other attribute; these come from the constructor.
    SNAPSHOT_SKIP = frozenset({"model_name", "counter", "metric_types"})
