"""Recent samples of every series of one partition, kept as numpy columns.

The rule engine asks "what was the value of these series at time t" once per
evaluation, for thousands of series at a time; the store answers with whole
arrays instead of a Python loop per series. Each series owns one row of two
ring buffers (timestamps, values); rows grow, doubling, only when a series
holds more samples inside the retention window than its row has room for.

A series that no query can read any more is retired (:meth:`SeriesStore.retire`)
and its row reused by the next new series. Each row records which assignment
it holds (a sequence number), so a cache of matching rows can tell a reused
row from the series it had before (:meth:`SeriesStore.still_same`).

Appends follow Prometheus's storage rules: per series, a sample whose
timestamp is not newer than the newest one stored is dropped and counted
(a duplicate when it repeats the newest timestamp, out-of-order otherwise).
That makes ingest idempotent: a remote-write request retried after a timeout
changes nothing.

>>> from detector.wire.batch import SampleBatch
>>> store = SeriesStore(retention_ms=300_000)
>>> up = (("__name__", "up"), ("job", "api"))
>>> stats = store.append(SampleBatch.from_series([(up, [(1000, 1.0), (2000, 0.0)])]))
>>> stats.accepted, stats.duplicates
(2, 0)
>>> store.append(SampleBatch.from_series([(up, [(2000, 0.0)])])).duplicates
1
>>> found, values = store.instant(np.array([0]), t_ms=1500, lookback_ms=300_000)
>>> found.tolist(), values.tolist()
([True], [1.0])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.wire.batch import SampleBatch
from detector.labels import Labels, labels_from_canonical

EMPTY = np.iinfo(np.int64).min
STALE_NAN_BITS = 0x7FF0000000000002
"""Prometheus's staleness marker: a NaN with this exact bit pattern."""


def _classify_in_order(rows: np.ndarray, stamps: np.ndarray, newest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Duplicate and out-of-order masks when some series goes back in time inside a batch.

    Only a malformed sender gets here (Prometheus sends each series in time
    order), so a plain loop is fine.
    """
    dup = np.zeros(len(rows), dtype=bool)
    old = np.zeros(len(rows), dtype=bool)
    bound: dict[int, int] = {}
    for i, (row, stamp) in enumerate(zip(rows.tolist(), stamps.tolist())):
        last = bound.get(row, int(newest[i]))
        if stamp > last:
            bound[row] = stamp
        elif stamp == last:
            dup[i] = True
        else:
            old[i] = True
    return dup, old


def is_stale(values: np.ndarray) -> np.ndarray:
    """True where a value is the staleness marker (compared by bits, not as a float)."""
    return np.asarray(values, dtype=np.float64).view(np.uint64) == STALE_NAN_BITS


@dataclass(slots=True)
class AppendStats:
    accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    new_series: int = 0
    max_timestamp: int = EMPTY
    rows: np.ndarray | None = None  # by :meth:`SeriesStore.append`: the row of each of the batch's series


class SeriesStore:
    """Ring buffers of recent samples, one row per series, for one partition.

    ``retention_ms`` is how far back any query reaches (lookback plus the
    longest range plus the allowed lateness); older samples may be overwritten.
    """

    def __init__(self, retention_ms: int, initial_capacity: int = 16, initial_rows: int = 1024) -> None:
        self.retention_ms = retention_ms
        self.labels: list[Labels | None] = []  # per row; None for a free row
        self._keys: list[bytes | None] = []  # per row; None for a free row
        self._ids: dict[bytes, int] = {}
        self._free: list[int] = []
        self.seq = 0  # assignments of a series to a row, ever
        self.retired = 0  # series retired, ever
        self._ts = np.full((initial_rows, initial_capacity), EMPTY, dtype=np.int64)
        self._vals = np.zeros((initial_rows, initial_capacity), dtype=np.float64)
        self._written = np.zeros(initial_rows, dtype=np.int64)  # samples ever written per row
        self._newest = np.full(initial_rows, EMPTY, dtype=np.int64)
        self._born = np.zeros(initial_rows, dtype=np.int64)  # per row: its assignment's seq, 0 when free

    def __len__(self) -> int:
        """Series held now (retired ones not counted)."""
        return len(self._ids)

    @property
    def rows_in_use(self) -> int:
        """Rows ever handed out (live or free for reuse): what the arrays hold."""
        return len(self.labels)

    @property
    def capacity(self) -> int:
        return self._ts.shape[1]

    def series_id(self, key: bytes) -> int:
        """Row of the series with these canonical label bytes, created if new."""
        sid = self._ids.get(key)
        if sid is None:
            sid = self._add_series(key, labels_from_canonical(key))
        return sid

    def series_ids(self, keys: list[bytes]) -> np.ndarray:
        """:meth:`series_id` of each key; one dict lookup per known key (the common case)."""
        found = list(map(self._ids.get, keys))
        if None in found:
            found = [self.series_id(k) if r is None else r for r, k in zip(found, keys)]
        return np.array(found, dtype=np.int64)

    def newest_timestamp(self, sid: int) -> int:
        return int(self._newest[sid])

    def append(self, batch: SampleBatch) -> AppendStats:
        """Store a batch's samples; see the module docstring for what is dropped."""
        stats = AppendStats()
        if len(batch) == 0:
            return stats
        before = len(self)
        rows = self.series_ids(batch.series_keys)
        stats.new_series = len(self) - before
        stats.rows = rows
        self._store(rows[batch.series_index], batch.timestamps, batch.values, stats)
        return stats

    def append_rows(self, rows: np.ndarray, t_ms: int, values: np.ndarray) -> AppendStats:
        """Store one sample at ``t_ms`` for each given row (recording rules' output)."""
        stats = AppendStats()
        if len(rows):
            self._store(np.asarray(rows, dtype=np.int64), np.full(len(rows), t_ms, dtype=np.int64), values, stats)
        return stats

    def _store(self, rows: np.ndarray, stamps: np.ndarray, values: np.ndarray, stats: AppendStats) -> None:
        # Grouped by series, each series' samples still in the order sent: like
        # Prometheus's appender, a sample must be newer than every sample of its
        # series appended before it, in earlier batches or earlier in this one.
        order = np.argsort(rows, kind="stable")
        rows, stamps, values = rows[order], stamps[order], values[order]
        same_series = rows[1:] == rows[:-1]
        newest = self._newest[rows]
        if np.any(same_series & (stamps[1:] < stamps[:-1])):
            dup, old = _classify_in_order(rows, stamps, newest)
        else:  # time order within every series: whole-array comparisons suffice
            repeat = np.zeros(len(rows), dtype=bool)
            repeat[1:] = same_series & (stamps[1:] == stamps[:-1])
            old = stamps < newest
            dup = repeat | (stamps == newest)
        keep = ~(old | dup)
        stats.duplicates += int(np.count_nonzero(dup & ~old))
        stats.out_of_order += int(np.count_nonzero(old))
        if not keep.all():
            rows, stamps, values = rows[keep], stamps[keep], values[keep]
        if len(rows) == 0:
            return
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        counts = np.diff(np.r_[starts, len(rows)])
        rank = np.arange(len(rows)) - np.repeat(starts, counts)
        while True:
            slot = (self._written[rows] + rank) % self.capacity
            overwritten = self._ts[rows, slot]
            # Room is short if a sample still inside the retention window would
            # be overwritten, or one batch brings more samples than a row holds.
            if counts.max() <= self.capacity and not np.any(overwritten >= stamps - self.retention_ms):
                break
            self._grow_capacity()
        self._ts[rows, slot] = stamps
        self._vals[rows, slot] = values
        group_rows = rows[starts]
        self._written[group_rows] += counts
        self._newest[group_rows] = stamps[starts + counts - 1]
        stats.accepted += len(rows)
        stats.max_timestamp = max(stats.max_timestamp, int(stamps.max()))

    def instant(self, rows: np.ndarray, t_ms: int, lookback_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """For each row, the newest sample in [t - lookback, t] (Prometheus 2.x: both ends closed).

        Returns ``(found, values)``; a series whose newest sample there is a
        staleness marker is not found, exactly as Prometheus ends it at once.
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=bool), np.zeros(0)
        stamps = self._ts[rows]
        inside = (stamps <= t_ms) & (stamps >= t_ms - lookback_ms)
        masked = np.where(inside, stamps, EMPTY)
        slot = masked.argmax(axis=1)
        pick = np.arange(len(rows))
        found = masked[pick, slot] != EMPTY
        values = self._vals[rows, slot]
        found &= ~is_stale(values)
        return found, values

    def latest(self, rows: np.ndarray, t_ms: int, lookback_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`instant` with each sample's own timestamp: ``(found, stamps, values)``.

        ``timestamp(x)`` needs when the sample it selects was taken, not when
        the rule is evaluated.

        >>> from detector.wire.batch import SampleBatch
        >>> store = SeriesStore(retention_ms=300_000)
        >>> _ = store.append(SampleBatch.from_series([((("__name__", "x"),), [(1000, 1.0), (2000, 5.0)])]))
        >>> found, stamps, values = store.latest(np.array([0]), t_ms=2500, lookback_ms=300_000)
        >>> found.tolist(), stamps.tolist(), values.tolist()
        ([True], [2000], [5.0])
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64), np.zeros(0)
        stamps = self._ts[rows]
        inside = (stamps <= t_ms) & (stamps >= t_ms - lookback_ms)
        masked = np.where(inside, stamps, EMPTY)
        slot = masked.argmax(axis=1)
        pick = np.arange(len(rows))
        newest = masked[pick, slot]
        values = self._vals[rows, slot]
        found = (newest != EMPTY) & ~is_stale(values)
        return found, newest, values

    def window(self, rows: np.ndarray, t_ms: int, range_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row, its samples in [t - range, t] (Prometheus 2.x: both ends closed), oldest first.

        Returns ``(stamps, values, counts)``: row i's samples fill the first
        ``counts[i]`` columns of ``stamps[i]`` and ``values[i]``; the columns
        after them hold ``EMPTY`` and NaN. Staleness markers are left out, as
        Prometheus leaves them out of range vectors.

        >>> from detector.wire.batch import SampleBatch
        >>> store = SeriesStore(retention_ms=300_000)
        >>> stale = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
        >>> x = (("__name__", "x"),)
        >>> _ = store.append(SampleBatch.from_series([(x, [(0, 1.0), (10, 2.0), (20, stale), (30, 4.0)])]))
        >>> stamps, values, counts = store.window(np.array([0]), t_ms=30, range_ms=20)
        >>> stamps.tolist(), values.tolist(), counts.tolist()
        ([[10, 30]], [[2.0, 4.0]], [2])
        """
        start = t_ms - range_ms
        stamps = self._ts[rows]
        # A ring is in time order, rotated: its oldest sample sits at slot
        # written % capacity once it has wrapped, at slot 0 before. So the
        # window's samples are a run of consecutive (rotated) slots, found by
        # counting instead of sorting.
        older = np.count_nonzero((stamps < start) & (stamps != EMPTY), axis=1)
        counts = np.count_nonzero((stamps >= start) & (stamps <= t_ms), axis=1)
        width = int(counts.max()) if len(rows) else 0
        written = self._written[rows]
        first = older + np.where(written >= self.capacity, written, 0)
        slots = (first[:, None] + np.arange(width)) % self.capacity
        flat = rows[:, None] * self.capacity + slots
        filled = np.arange(width) < counts[:, None]
        values = np.take(self._vals, flat)
        stale = filled & is_stale(values)
        if stale.any():
            # Drop the staleness markers and close the gaps they leave, keeping time order.
            filled &= ~stale
            counts = np.count_nonzero(filled, axis=1)
            width = int(counts.max())
            keep = np.argsort(~filled, axis=1, kind="stable")[:, :width]
            flat = np.take_along_axis(flat, keep, axis=1)
            values = np.take_along_axis(values, keep, axis=1)
            filled = np.arange(width) < counts[:, None]
        stamps = np.where(filled, np.take(self._ts, flat), EMPTY)
        values = np.where(filled, values, np.nan)
        return stamps, values, counts

    def _add_series(self, key: bytes, labels: Labels) -> int:
        if self._free:
            sid = self._free.pop()
            self.labels[sid] = labels
            self._keys[sid] = key
        else:
            sid = len(self.labels)
            if sid == self._ts.shape[0]:
                self._grow_rows()
            self.labels.append(labels)
            self._keys.append(key)
        self.seq += 1
        self._born[sid] = self.seq
        self._ids[key] = sid
        return sid

    # --- Retirement. ----------------------------------------------------------------------

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._born[: len(self.labels)])

    def key(self, row: int) -> bytes:
        return self._keys[row]  # type: ignore[return-value]

    def newest(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's newest timestamp, and whether that sample is a staleness marker."""
        rows = np.asarray(rows, dtype=np.int64)
        slot = (self._written[rows] - 1) % self.capacity
        return self._newest[rows], (self._written[rows] > 0) & is_stale(self._vals[rows, slot])

    def retire(self, rows: np.ndarray) -> list[bytes]:
        """Forget these rows' series and free the rows for reuse; returns the series keys.

        The caller guarantees no query can still read them (see
        :meth:`detector.rules.engine.RuleEngine.free_expired`).

        >>> from detector.wire.batch import SampleBatch
        >>> store = SeriesStore(retention_ms=300_000)
        >>> _ = store.append(SampleBatch.from_series([((("__name__", "a"),), [(1000, 1.0)])]))
        >>> store_key = store.key(0)
        >>> store.retire(np.array([0])) == [store_key]
        True
        >>> _ = store.append(SampleBatch.from_series([((("__name__", "b"),), [(2000, 2.0)])]))
        >>> len(store), store.rows_in_use, store.labels
        (1, 1, [(('__name__', 'b'),)])
        """
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        rows = rows[self._born[rows] > 0]
        keys = [self._keys[r] for r in rows.tolist()]
        for r, key in zip(rows.tolist(), keys):
            del self._ids[key]
            self.labels[r] = None
            self._keys[r] = None
        self._ts[rows] = EMPTY
        self._vals[rows] = 0.0
        self._written[rows] = 0
        self._newest[rows] = EMPTY
        self._born[rows] = 0
        self._free += rows[::-1].tolist()  # lowest row reused first
        self.retired += len(keys)
        return keys  # type: ignore[return-value]

    def rows_added_since(self, seq: int) -> np.ndarray:
        """Rows given to a series after assignment number ``seq`` (in row order)."""
        if seq >= self.seq:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self._born[: len(self.labels)] > seq)

    def births(self, rows: np.ndarray) -> np.ndarray:
        """The assignment number of each row's series, to compare later with :meth:`still_same`."""
        return self._born[rows]

    def still_same(self, rows: np.ndarray, births: np.ndarray) -> np.ndarray:
        """Mask of rows that still hold the series they held when ``births`` was taken."""
        return self._born[rows] == births

    def _grow_rows(self) -> None:
        n, cap = self._ts.shape
        self._ts = np.vstack([self._ts, np.full((n, cap), EMPTY, dtype=np.int64)])
        self._vals = np.vstack([self._vals, np.zeros((n, cap))])
        self._written = np.concatenate([self._written, np.zeros(n, dtype=np.int64)])
        self._newest = np.concatenate([self._newest, np.full(n, EMPTY, dtype=np.int64)])
        self._born = np.concatenate([self._born, np.zeros(n, dtype=np.int64)])

    def _grow_capacity(self) -> None:
        """Double every row, keeping each ring's samples in their slot order."""
        n, cap = self._ts.shape
        # Unroll each ring so its oldest sample sits at slot 0, then widen.
        full = self._written >= cap
        shift = np.where(full, self._written % cap, 0)[:, None]
        order = (np.arange(cap)[None, :] + shift) % cap
        ts = np.take_along_axis(self._ts, order, axis=1)
        vals = np.take_along_axis(self._vals, order, axis=1)
        self._ts = np.hstack([ts, np.full((n, cap), EMPTY, dtype=np.int64)])
        self._vals = np.hstack([vals, np.zeros((n, cap))])
        # Rows now hold min(written, cap) samples from slot 0 on.
        self._written = np.minimum(self._written, cap)

    # Snapshots (detector.snapshot) carry every other attribute; retention is configuration.
    SNAPSHOT_SKIP = frozenset({"retention_ms"})
