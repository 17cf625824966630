"""Recent samples of every series of one partition, kept as numpy columns.

The rule engine asks "what was the value of these series at time t" once per
evaluation, for thousands of series at a time; the store answers with whole
arrays instead of a Python loop per series.

Each series owns one ring buffer (timestamps, values) in a *size class*: the
classes hold rings of 1, 1.5, 2, 3, 4, 6, 8, ... times ``initial_capacity``
samples (x1.5 and x4/3 in turn), as rows of two numpy arrays. A series starts
in class 0 and moves up a class only when it holds more samples inside the
retention window than its ring has room for (so at most a third of a ring is
left over: with doubling classes, a series needing 42 slots held 64, now 48);
it moves back down (:meth:`SeriesStore.compact`) when at most a quarter of its ring is
still readable. So a series' memory depends on its own density only: one
series with 20,000 samples in range costs its own 20,000 slots, not 20,000 for
every series of the partition. Queries work class by class, each one a plain
columnar computation (in the usual case, one class for all).

A series that no query can read any more is retired (:meth:`SeriesStore.retire`)
and its row reused by the next new series. Each row records which assignment
it holds (a sequence number), so a cache of matching rows can tell a reused
row from the series it had before (:meth:`SeriesStore.still_same`).

Appends follow Prometheus's storage rules: per series, a sample whose
timestamp is not newer than the newest one stored is dropped and counted
(a duplicate when it repeats the newest timestamp, out-of-order otherwise).
That makes ingest idempotent: a remote-write request retried after a timeout
changes nothing. Two limits keep one sender from exhausting memory, both
counted in :class:`Refused`: with ``min_interval_ms``, a series keeps at most
one ingested sample per interval (epoch-aligned, the first one wins), and
with ``max_series``, new series beyond that many are dropped (the ones already
held keep going).

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

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from detector.wire.batch import SampleBatch
from detector.labels import Labels, PairInterner

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
class Refused:
    """What the store's limits kept out, with one series of each kind to name in a log line.

    >>> a, b = Refused(too_dense=2, dense_series=b"x"), Refused(too_dense=1, dense_series=b"y", new_series=1)
    >>> a.add(b)
    >>> a.too_dense, a.dense_series, a.new_series, bool(Refused())
    (3, b'x', 1, False)
    """

    too_dense: int = 0  # samples closer than min_interval_ms to the previous one of their series
    dense_series: bytes | None = None
    new_series: int = 0  # new series dropped: the partition holds max_series already
    new_series_samples: int = 0
    new_series_example: bytes | None = None

    def __bool__(self) -> bool:
        return bool(self.too_dense or self.new_series)

    def add(self, other: Refused) -> None:
        self.too_dense += other.too_dense
        self.dense_series = self.dense_series or other.dense_series
        self.new_series += other.new_series
        self.new_series_samples += other.new_series_samples
        self.new_series_example = self.new_series_example or other.new_series_example


@dataclass(slots=True)
class AppendStats:
    accepted: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    new_series: int = 0
    max_timestamp: int = EMPTY
    refused: Refused = field(default_factory=Refused)
    rows: np.ndarray | None = None  # by :meth:`SeriesStore.append`: the row of each of the batch's series


@lru_cache(maxsize=None)
def _ladder(base: int) -> np.ndarray:  # base: a Python int (the cache's key)
    """Ring size of each class: ``base``, then x1.5 and x4/3 in turn (``base << k/2`` for even
    ``k``, half as much again for odd), up to far more than any series can hold.

    >>> _ladder(16)[:9].tolist()
    [16, 24, 32, 48, 64, 96, 128, 192, 256]
    """
    caps = [base << (k // 2) if k % 2 == 0 else (3 * base << (k // 2)) // 2 for k in range(2 * (61 - base.bit_length()))]
    out = np.array(caps, dtype=np.int64)
    out.flags.writeable = False
    return out


def _size_class(needed: np.ndarray, base: int) -> np.ndarray:
    """Smallest class whose rings (:func:`_ladder`) hold ``needed`` samples.

    >>> _size_class(np.array([0, 1, 16, 17, 24, 25, 33, 42, 20_000]), 16).tolist()
    [0, 0, 0, 1, 1, 2, 3, 3, 21]
    """
    return np.searchsorted(_ladder(base), np.asarray(needed, dtype=np.int64), side="left").astype(np.int64)


class SeriesStore:
    """Ring buffers of recent samples, one per series, for one partition.

    ``retention_ms`` is how far back any query reaches (lookback plus the
    longest range plus the allowed lateness); older samples may be overwritten.
    ``min_interval_ms`` (0: off) and ``max_series`` (None: no limit) are the
    limits of the module docstring.
    """

    def __init__(self, retention_ms: int, initial_capacity: int = 16, initial_rows: int = 1024, *,
                 min_interval_ms: int = 0, max_series: int | None = None) -> None:
        self.retention_ms = retention_ms
        self.min_interval_ms = min_interval_ms
        self.max_series = max_series
        self.initial_rows = initial_rows
        self.labels: list[Labels | None] = []  # per row; None for a free row
        self._keys: list[bytes | None] = []  # per row; None for a free row
        self._ids: dict[bytes, int] = {}
        self._free: list[int] = []
        # Label sets built from shared (name, value) pairs: most of a series' labels are its
        # target's, held once (see PairInterner); rebuilt as series retire, so it cannot grow for ever.
        self._interner = PairInterner()
        self._retired_since_rebuild = 0
        self.seq = 0  # assignments of a series to a row, ever
        self.retired = 0  # series retired, ever
        # Bumped when a snapshot is loaded: the rows then hold other series under the same assignment
        # numbers, so caches keyed by seq / retired (the selectors' matches) must start again.
        self.epoch = 0
        self.base_capacity = initial_capacity  # ring size of class 0
        # Per row (series): its ring's size class and slot in that class, and its ring's counters.
        self._class = np.zeros(initial_rows, dtype=np.int8)
        self._slot = np.full(initial_rows, -1, dtype=np.int64)
        self._written = np.zeros(initial_rows, dtype=np.int64)  # samples ever written to the ring
        self._newest = np.full(initial_rows, EMPTY, dtype=np.int64)
        self._born = np.zeros(initial_rows, dtype=np.int64)  # per row: its assignment's seq, 0 when free
        # Per size class: the rings (one per slot), free slots, slots handed out.
        self._ring_ts: list[np.ndarray] = []
        self._ring_vals: list[np.ndarray] = []
        self._ring_free: list[list[int]] = []
        self._ring_used: list[int] = []
        self._add_class()

    def __len__(self) -> int:
        """Series held now (retired ones not counted)."""
        return len(self._ids)

    @property
    def rows_in_use(self) -> int:
        """Rows ever handed out (live or free for reuse): what the per-series arrays hold."""
        return len(self.labels)

    @property
    def capacity(self) -> int:
        """The largest ring any series holds now (``initial_capacity`` when none)."""
        used = [k for k in range(len(self._ring_ts)) if self._ring_used[k] > len(self._ring_free[k])]
        return self._cap(max(used, default=0))

    def capacity_of(self, row: int) -> int:
        """How many samples the ring of this row's series holds."""
        return self._cap(int(self._class[row]))

    @property
    def nbytes(self) -> int:
        """Bytes of every numpy array the store holds (rings and per-series columns)."""
        arrays = [self._class, self._slot, self._written, self._newest, self._born, *self._ring_ts, *self._ring_vals]
        return sum(a.nbytes for a in arrays)

    def series_id(self, key: bytes) -> int:
        """Row of the series with these canonical label bytes, created if new (no limit applies)."""
        sid = self._ids.get(key)
        if sid is None:
            sid = self._add_series(key, self._interner.decode(key))
        return sid

    def decode_labels(self, key: bytes) -> Labels:
        """The label set of a series key, built from this store's shared pairs (for other holders of
        the same series' labels, such as the forecaster, so they cost an outer tuple, not new strings)."""
        return self._interner.decode(key)

    def share_labels(self, labels: Labels) -> Labels:
        """The same label set, made of this store's shared pairs."""
        return self._interner.share(labels)

    def series_ids(self, keys: list[bytes]) -> np.ndarray:
        """:meth:`series_id` of each key; one dict lookup per known key (the common case)."""
        found = list(map(self._ids.get, keys))
        if None in found:
            found = [self.series_id(k) if r is None else r for r, k in zip(found, keys)]
        return np.array(found, dtype=np.int64)

    def newest_timestamp(self, sid: int) -> int:
        return int(self._newest[sid])

    def admit(self, batch: SampleBatch) -> tuple[SampleBatch, Refused]:
        """The batch without the samples of new series beyond ``max_series``; the series it
        keeps are created, so they count at once. Callers that keep per-series state
        elsewhere (scores, forecasts) admit first and keep that state for admitted series only.

        >>> store = SeriesStore(retention_ms=60_000, max_series=1)
        >>> batch = SampleBatch.from_series([((("__name__", "a"),), [(0, 1.0)]), ((("__name__", "b"),), [(0, 1.0)])])
        >>> kept, refused = store.admit(batch)
        >>> kept.series_keys == batch.series_keys[:1], refused.new_series, len(store)
        (True, 1, 1)
        """
        refused = Refused()
        if self.max_series is None or len(self) + len(batch.series_keys) <= self.max_series:
            return batch, refused  # the batch cannot reach the limit: no per-key look-up here
        rows = self._rows_within_limit(batch.series_keys, refused)
        if not refused.new_series:
            return batch, refused
        keep = rows[batch.series_index] >= 0
        refused.new_series_samples = int(np.count_nonzero(~keep))
        used = np.flatnonzero(rows >= 0)
        local = np.full(len(rows), -1, dtype=np.int64)
        local[used] = np.arange(len(used))
        index = local[batch.series_index[keep]].astype(np.uint32)
        return SampleBatch([batch.series_keys[i] for i in used.tolist()], index, batch.timestamps[keep], batch.values[keep]), refused

    def append(self, batch: SampleBatch) -> AppendStats:
        """Store a batch's samples; see the module docstring for what is dropped (the series
        limit applies in :meth:`admit`, which the engine calls first)."""
        stats = AppendStats()
        if len(batch) == 0:
            return stats
        before = len(self)
        rows = self.series_ids(batch.series_keys)
        stats.new_series = len(self) - before
        stats.rows = rows
        self._store(rows[batch.series_index], batch.timestamps, batch.values, stats, thin=self.min_interval_ms > 0)
        return stats

    def append_rows(self, rows: np.ndarray, t_ms: int, values: np.ndarray, distinct: bool = False) -> AppendStats:
        """Store one sample at ``t_ms`` for each given row (recording rules' output; no limit applies).

        ``distinct``: the caller knows no row is given twice (a rule's output), so
        the common case, every ring in one size class with room, skips grouping
        the samples by series: a rule evaluated in many small partitions paid
        that at every tick.
        """
        stats = AppendStats()
        if len(rows):
            rows = np.asarray(rows, dtype=np.int64)
            if not (distinct and self._store_distinct(rows, t_ms, values, stats)):
                self._store(rows, np.full(len(rows), t_ms, dtype=np.int64), values, stats)
        return stats

    def _store_distinct(self, rows: np.ndarray, t_ms: int, values: np.ndarray, stats: AppendStats) -> bool:
        """:meth:`_store` of one sample at ``t_ms`` per row, rows distinct, if every ring is in one size
        class and has room; False (nothing done) otherwise."""
        classes = self._class[rows]
        k = int(classes[0])
        if len(rows) > 1 and not (classes == k).all():
            return False
        cap = self._cap(k)
        where = (self._slot[rows], self._written[rows] % cap)
        ring_ts = self._ring_ts[k]
        newest = self._newest[rows]
        fresh = newest < t_ms  # else a duplicate (same time) or out of order, as in _store
        if fresh.all():
            if (ring_ts[where] >= t_ms - self.retention_ms).any():
                return False  # a ring must grow: _store does that
        else:
            if (ring_ts[where][fresh] >= t_ms - self.retention_ms).any():
                return False
            old = int(np.count_nonzero(newest > t_ms))
            stats.out_of_order += old
            stats.duplicates += len(rows) - int(np.count_nonzero(fresh)) - old
            rows, values = rows[fresh], np.asarray(values)[fresh]
            where = (where[0][fresh], where[1][fresh])
            if not len(rows):
                return True
        ring_ts[where] = t_ms
        self._ring_vals[k][where] = values
        self._written[rows] += 1
        self._newest[rows] = t_ms
        stats.accepted += len(rows)
        stats.max_timestamp = max(stats.max_timestamp, t_ms)
        return True

    def _rows_within_limit(self, keys: list[bytes], refused: Refused) -> np.ndarray:
        """Each key's row; -1 for a new series beyond ``max_series`` (counted in ``refused``)."""
        rows = []
        for key in keys:
            sid = self._ids.get(key)
            if sid is None:
                if len(self) < self.max_series:
                    sid = self.series_id(key)
                else:
                    sid = -1
                    refused.new_series += 1
                    refused.new_series_example = refused.new_series_example or key
            rows.append(sid)
        return np.array(rows, dtype=np.int64)

    def _store(self, rows: np.ndarray, stamps: np.ndarray, values: np.ndarray, stats: AppendStats,
               thin: bool = False) -> None:
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
        drop = old | dup
        stats.duplicates += int(np.count_nonzero(dup & ~old))
        stats.out_of_order += int(np.count_nonzero(old))
        if thin:
            # At most one sample per series per epoch-aligned min_interval: a sample
            # newer than the previous one of its series, in the same interval, is too dense.
            bucket = stamps // self.min_interval_ms
            dense = (bucket == newest // self.min_interval_ms) & (stamps > newest)
            dense[1:] |= same_series & (bucket[1:] == bucket[:-1]) & (stamps[1:] > stamps[:-1])
            dense &= ~drop
            if dense.any():
                stats.refused.too_dense += int(np.count_nonzero(dense))
                stats.refused.dense_series = self._keys[int(rows[np.argmax(dense)])]
                drop |= dense
        if drop.any():
            keep = ~drop
            rows, stamps, values = rows[keep], stamps[keep], values[keep]
        if len(rows) == 0:
            return
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        counts = np.diff(np.r_[starts, len(rows)])
        rank = np.arange(len(rows)) - np.repeat(starts, counts)
        while True:
            parts = self._by_class(rows)
            if len(parts) == 1 and parts[0][1] is None:  # the usual case: every ring in one class
                k = parts[0][0]
                cap = self._cap(k)
                slot = (self._written[rows] + rank) % cap
                where = (self._slot[rows], slot)
                # Room is short if a sample still inside the retention window would
                # be overwritten, or one batch brings more samples than a ring holds.
                if counts.max() <= cap and not np.any(self._ring_ts[k][where] >= stamps - self.retention_ms):
                    self._ring_ts[k][where] = stamps
                    self._ring_vals[k][where] = values
                    break
                caps = np.full(len(rows), cap, dtype=np.int64)
            else:
                caps = _ladder(int(self.base_capacity))[self._class[rows]]
                slot = (self._written[rows] + rank) % caps
            short = np.logical_or.reduceat(self._gather(self._ring_ts, rows, slot) >= stamps - self.retention_ms, starts)
            short |= counts > caps[starts]
            if short.any():
                grow = rows[starts][short]
                # The next class up (or one that holds the batch): classes step by x1.5 / x4/3, so
                # a ring ends at most that much above what its series needs, not twice.
                self._resize(grow, _size_class(np.maximum(counts[short], caps[starts][short] + 1), int(self.base_capacity)))
                continue
            for k, idx in parts:
                at = slice(None) if idx is None else idx
                where = (self._slot[rows[at]], slot[at])
                self._ring_ts[k][where] = stamps[at]
                self._ring_vals[k][where] = values[at]
            break
        group_rows = rows[starts]
        self._written[group_rows] += counts
        self._newest[group_rows] = stamps[starts + counts - 1]
        stats.accepted += len(rows)
        stats.max_timestamp = max(stats.max_timestamp, int(stamps.max()))

    # --- Queries. --------------------------------------------------------------------------

    def instant(self, rows: np.ndarray, t_ms: int, lookback_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """For each row, the newest sample in [t - lookback, t] (Prometheus 2.x: both ends closed).

        Returns ``(found, values)``; a series whose newest sample there is a
        staleness marker is not found, exactly as Prometheus ends it at once.
        """
        found, _, values = self.latest(rows, t_ms, lookback_ms)
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
        rows = np.asarray(rows, dtype=np.int64)
        parts = self._by_class(rows)
        if len(parts) == 1 and parts[0][1] is None:
            return self._latest_in(parts[0][0], rows, t_ms, lookback_ms)
        found, newest, values = np.zeros(len(rows), dtype=bool), np.zeros(len(rows), dtype=np.int64), np.zeros(len(rows))
        for k, idx in parts:
            found[idx], newest[idx], values[idx] = self._latest_in(k, rows[idx], t_ms, lookback_ms)
        return found, newest, values

    def _latest_in(self, k: int, rows: np.ndarray, t_ms: int, lookback_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slots = self._slot[rows]
        stamps = self._ring_ts[k][slots]
        inside = (stamps <= t_ms) & (stamps >= t_ms - lookback_ms)
        masked = np.where(inside, stamps, EMPTY)
        slot = masked.argmax(axis=1)
        pick = np.arange(len(rows))
        newest = masked[pick, slot]
        values = self._ring_vals[k][slots, slot]
        found = (newest != EMPTY) & ~is_stale(values)
        return found, newest, values

    def window(self, rows: np.ndarray, t_ms: int, range_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each row, its samples in [t - range, t] (Prometheus 2.x: both ends closed), oldest first.

        Returns ``(stamps, values, counts)``: row i's samples fill the first
        ``counts[i]`` columns of ``stamps[i]`` and ``values[i]``; the columns
        after them hold ``EMPTY`` and NaN. Staleness markers are left out, as
        Prometheus leaves them out of range vectors. The arrays are as wide as
        the row with the most samples: :meth:`windows` gives them per size
        class, so one dense series does not widen the others'.

        >>> from detector.wire.batch import SampleBatch
        >>> store = SeriesStore(retention_ms=300_000)
        >>> stale = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
        >>> x = (("__name__", "x"),)
        >>> _ = store.append(SampleBatch.from_series([(x, [(0, 1.0), (10, 2.0), (20, stale), (30, 4.0)])]))
        >>> stamps, values, counts = store.window(np.array([0]), t_ms=30, range_ms=20)
        >>> stamps.tolist(), values.tolist(), counts.tolist()
        ([[10, 30]], [[2.0, 4.0]], [2])
        """
        parts = list(self.windows(rows, t_ms, range_ms))
        if len(parts) == 1 and parts[0][0] is None:
            return parts[0][1:]
        n = len(rows)
        width = max((p[1].shape[1] for p in parts), default=0)
        stamps, values, counts = np.full((n, width), EMPTY, dtype=np.int64), np.full((n, width), np.nan), np.zeros(n, dtype=np.int64)
        for idx, s, v, c in parts:
            stamps[idx, : s.shape[1]], values[idx, : s.shape[1]], counts[idx] = s, v, c
        return stamps, values, counts

    def windows(self, rows: np.ndarray, t_ms: int, range_ms: int) -> Iterator[tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`window` in parts, one per size class: ``(index, stamps, values, counts)``, where
        ``index`` says which of ``rows`` the part covers (None: all of them)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            yield None, np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0)), np.zeros(0, dtype=np.int64)
            return
        for k, idx in self._by_class(rows):
            yield (idx, *self._window_in(k, rows if idx is None else rows[idx], t_ms, range_ms))

    def _window_in(self, k: int, rows: np.ndarray, t_ms: int, range_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        start = t_ms - range_ms
        cap = self._cap(k)
        ring_ts, ring_vals = self._ring_ts[k], self._ring_vals[k]
        slots = self._slot[rows]
        stamps = ring_ts[slots]
        # A ring is in time order, rotated: its oldest sample sits at slot
        # written % capacity once it has wrapped, at slot 0 before. So the
        # window's samples are a run of consecutive (rotated) slots, found by
        # counting instead of sorting.
        older = np.count_nonzero((stamps < start) & (stamps != EMPTY), axis=1)
        counts = np.count_nonzero((stamps >= start) & (stamps <= t_ms), axis=1)
        width = int(counts.max()) if len(rows) else 0
        written = self._written[rows]
        first = older + np.where(written >= cap, written, 0)
        flat = slots[:, None] * cap + (first[:, None] + np.arange(width)) % cap
        filled = np.arange(width) < counts[:, None]
        values = np.take(ring_vals, flat)
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
        stamps = np.where(filled, np.take(ring_ts, flat), EMPTY)
        values = np.where(filled, values, np.nan)
        return stamps, values, counts

    # --- Rows and rings. -------------------------------------------------------------------

    def _add_series(self, key: bytes, labels: Labels) -> int:
        if self._free:
            sid = self._free.pop()
            self.labels[sid] = labels
            self._keys[sid] = key
        else:
            sid = len(self.labels)
            if sid == self._born.shape[0]:
                self._grow_rows()
            self.labels.append(labels)
            self._keys.append(key)
        self.seq += 1
        self._born[sid] = self.seq
        self._ids[key] = sid
        self._class[sid] = 0
        self._slot[sid] = self._take_slot(0)
        return sid

    def _cap(self, k: int) -> int:
        return int(_ladder(int(self.base_capacity))[k])

    def _add_class(self) -> None:
        cap = self._cap(len(self._ring_ts))
        self._ring_ts.append(np.full((0, cap), EMPTY, dtype=np.int64))
        self._ring_vals.append(np.zeros((0, cap)))
        self._ring_free.append([])
        self._ring_used.append(0)

    def _take_slot(self, k: int) -> int:
        """One free ring of class ``k`` (the per-new-series path: plain Python)."""
        free = self._ring_free[k]
        if free:
            return free.pop()
        slot = self._ring_used[k]
        if slot == self._ring_ts[k].shape[0]:
            self._reserve(k, slot + 1)
        self._ring_used[k] = slot + 1
        return slot

    def _take_slots(self, k: int, n: int) -> np.ndarray:
        """``n`` free rings of class ``k``, created if needed."""
        while len(self._ring_ts) <= k:
            self._add_class()
        free = self._ring_free[k]
        reused = free[len(free) - min(n, len(free)) :]
        del free[len(free) - len(reused) :]
        start = self._ring_used[k]
        end = start + n - len(reused)
        if end > self._ring_ts[k].shape[0]:
            self._reserve(k, end)
        self._ring_used[k] = end
        return np.concatenate([np.array(reused, dtype=np.int64), np.arange(start, end, dtype=np.int64)])

    def _reserve(self, k: int, rings: int) -> None:
        """Room for at least ``rings`` rings in class ``k`` (a quarter more each time, so adding one is
        amortised O(1); doubling left a third of a big partition's rings unused on average)."""
        have = self._ring_ts[k].shape[0]
        size = max(rings, have + have // 4, self.initial_rows if k == 0 else 1)
        cap = self._cap(k)
        self._ring_ts[k] = np.concatenate([self._ring_ts[k], np.full((size - have, cap), EMPTY, dtype=np.int64)])
        self._ring_vals[k] = np.concatenate([self._ring_vals[k], np.zeros((size - have, cap))])

    def _release(self, k: int, slots: np.ndarray) -> None:
        if k > 0 and self._ring_used[k] == len(self._ring_free[k]) + len(slots):
            # The class's last rings: give its memory back at once (a burst that passed
            # through a class on its way up leaves nothing behind).
            cap = self._cap(k)
            self._ring_ts[k], self._ring_vals[k] = np.full((0, cap), EMPTY, dtype=np.int64), np.zeros((0, cap))
            self._ring_free[k], self._ring_used[k] = [], 0
            return
        self._ring_ts[k][slots] = EMPTY
        self._ring_vals[k][slots] = 0.0
        self._ring_free[k] += slots.tolist()

    def _by_class(self, rows: np.ndarray) -> list[tuple[int, np.ndarray | None]]:
        """``rows`` split by size class: ``(class, index into rows)``, index None when all share one."""
        if len(rows) == 0:
            return []
        classes = self._class[rows]
        lo, hi = int(classes.min()), int(classes.max())
        if lo == hi:
            return [(lo, None)]
        return [(k, np.flatnonzero(classes == k)) for k in np.flatnonzero(np.bincount(classes)).tolist()]

    def _gather(self, arrays: list[np.ndarray], rows: np.ndarray, slot: np.ndarray) -> np.ndarray:
        """``arrays[class][ring slot, slot]`` for each row."""
        parts = self._by_class(rows)
        if len(parts) == 1 and parts[0][1] is None:
            return arrays[parts[0][0]][self._slot[rows], slot]
        out = np.empty(len(rows), dtype=arrays[0].dtype)
        for k, idx in parts:
            out[idx] = arrays[k][self._slot[rows[idx]], slot[idx]]
        return out

    def _resize(self, rows: np.ndarray, classes: np.ndarray) -> None:
        """Move each row's ring to the given size class, keeping its newest samples in time order."""
        for k in np.unique(self._class[rows]).tolist():
            for j in np.unique(classes[self._class[rows] == k]).tolist():
                if j != k:
                    self._move(rows[(self._class[rows] == k) & (classes == j)], k, j)

    def _move(self, rows: np.ndarray, k: int, j: int) -> None:
        cap_k, cap_j = self._cap(k), self._cap(j)
        slots = self._slot[rows]
        written = self._written[rows]
        held = np.minimum(written, cap_k)
        # Unrolled, a ring's oldest sample comes first; keep the newest cap_j of those held.
        oldest = np.where(written >= cap_k, written % cap_k, 0)
        skip = np.maximum(held - cap_j, 0)
        width = min(cap_k, cap_j)
        cols = (oldest[:, None] + skip[:, None] + np.arange(width)) % cap_k
        ts = self._ring_ts[k][slots[:, None], cols]
        vals = self._ring_vals[k][slots[:, None], cols]
        new = self._take_slots(j, len(rows))
        self._ring_ts[j][new, :width] = ts
        self._ring_vals[j][new, :width] = vals
        self._release(k, slots)
        self._class[rows] = j
        self._slot[rows] = new
        self._written[rows] = held - skip  # the ring now holds these from slot 0 on

    def compact(self, keep_from_ms: int) -> None:
        """Give memory back: a ring at most a quarter full of samples still needed moves to a
        class at most half full, and a class whose rings are mostly free is packed.

        A sample is needed if no later than ``keep_from_ms`` (the oldest time a
        query still to come reads) or inside the retention window of its
        series' newest sample (what :meth:`append` would grow the ring for).

        >>> from detector.wire.batch import SampleBatch
        >>> store = SeriesStore(retention_ms=10_000, initial_capacity=4)
        >>> x = (("__name__", "x"),)
        >>> _ = store.append(SampleBatch.from_series([(x, [(t, 1.0) for t in range(0, 64_000, 1000)])]))
        >>> store.capacity_of(0)
        64
        >>> store.compact(keep_from_ms=60_000)
        >>> store.capacity_of(0), store.window(np.array([0]), 63_000, 3000)[0].tolist()
        (24, [[60000, 61000, 62000, 63000]])
        """
        n = len(self.labels)
        live = self._born[:n] > 0
        for k in range(1, len(self._ring_ts)):
            rows = np.flatnonzero(live & (self._class[:n] == k))
            if len(rows) == 0:
                continue
            cap, quarter = self._cap(k), self._cap(k) // 4
            slots, written = self._slot[rows], self._written[rows]
            held = np.minimum(written, cap)
            bound = np.minimum(keep_from_ms, self._newest[rows] - self.retention_ms)
            # One probe per ring first: the (quarter + 1)-th newest sample. Only if it is
            # no longer needed can the ring shrink; only those rings are counted in full.
            oldest = np.where(written >= cap, written % cap, 0)
            probe = self._ring_ts[k][slots, (oldest + np.maximum(held - quarter - 1, 0)) % cap]
            candidates = (held <= quarter) | (probe < bound)
            if not candidates.any():
                continue
            rows, bound = rows[candidates], bound[candidates]
            needed = np.count_nonzero(self._ring_ts[k][self._slot[rows]] >= bound[:, None], axis=1)
            self._resize(rows, np.minimum(_size_class(2 * needed, self.base_capacity), k - 1))
        self._pack()

    def _pack(self) -> None:
        """Repack each class whose rings are at most a quarter in use (an emptied class frees all);
        in the others, drop the rings never handed out once they are more than an eighth of the class.

        A class grows by a quarter at a time (:meth:`_reserve`): when a partition's series move up
        together, the last growth can leave up to a fifth of the class unused for good (3,000 of
        15,625 rings in one partition of the runbook bench). Growing again later costs one copy.
        """
        n = len(self.labels)
        for k in range(len(self._ring_ts)):
            size, live = self._ring_ts[k].shape[0], self._ring_used[k] - len(self._ring_free[k])
            floor = self.initial_rows if k == 0 else 1
            if size <= floor:
                continue
            if live > size // 4:
                used = max(self._ring_used[k], floor)
                if size - used > size // 8:
                    self._ring_ts[k], self._ring_vals[k] = self._ring_ts[k][:used].copy(), self._ring_vals[k][:used].copy()
                continue
            rows = np.flatnonzero((self._born[:n] > 0) & (self._class[:n] == k) & (self._slot[:n] >= 0))
            keep = max(1 << int(live).bit_length(), floor) if live else (floor if k == 0 else 0)
            cap = self._cap(k)
            ts, vals = np.full((keep, cap), EMPTY, dtype=np.int64), np.zeros((keep, cap))
            ts[: len(rows)] = self._ring_ts[k][self._slot[rows]]
            vals[: len(rows)] = self._ring_vals[k][self._slot[rows]]
            self._ring_ts[k], self._ring_vals[k] = ts, vals
            self._slot[rows] = np.arange(len(rows))
            self._ring_free[k], self._ring_used[k] = [], len(rows)

    # --- Retirement. ----------------------------------------------------------------------

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self._born[: len(self.labels)])

    def key(self, row: int) -> bytes:
        return self._keys[row]  # type: ignore[return-value]

    def newest(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's newest timestamp, and whether that sample is a staleness marker."""
        rows = np.asarray(rows, dtype=np.int64)
        written = self._written[rows]
        caps = _ladder(int(self.base_capacity))[self._class[rows]]
        last = self._gather(self._ring_vals, rows, (written - 1) % caps)
        return self._newest[rows], (written > 0) & is_stale(last)

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
        for k, idx in self._by_class(rows):
            self._release(k, self._slot[rows if idx is None else rows[idx]])
        self._slot[rows] = -1
        self._class[rows] = 0
        self._written[rows] = 0
        self._newest[rows] = EMPTY
        self._born[rows] = 0
        self._free += rows[::-1].tolist()  # lowest row reused first
        self.retired += len(keys)
        self._retired_since_rebuild += len(keys)
        if self._retired_since_rebuild > max(len(self._ids), 1024):  # amortised: O(1) per retired series
            self._interner.rebuild(self.labels)
            self._retired_since_rebuild = 0
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

    def rings(self, rows: np.ndarray, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The rows' rings as ``(stamps, values)``, in slot order, ``width`` wide (default: the
        widest; padded with ``EMPTY`` and 0): raw state, for tools that copy it (bench/state.py)."""
        rows = np.asarray(rows, dtype=np.int64)
        if width is None:
            width = max((self._cap(k) for k, _ in self._by_class(rows)), default=self.base_capacity)
        ts, vals = np.full((len(rows), width), EMPTY, dtype=np.int64), np.zeros((len(rows), width))
        for k, idx in self._by_class(rows):
            at = slice(None) if idx is None else idx
            slots = self._slot[rows[at]]
            ts[at, : self._cap(k)] = self._ring_ts[k][slots]
            vals[at, : self._cap(k)] = self._ring_vals[k][slots]
        return ts, vals

    def _grow_rows(self) -> None:
        n = max(self._born.shape[0] // 4, 1)  # a quarter more: doubling left a third unused on average
        self._class = np.concatenate([self._class, np.zeros(n, dtype=np.int8)])
        self._slot = np.concatenate([self._slot, np.full(n, -1, dtype=np.int64)])
        self._written = np.concatenate([self._written, np.zeros(n, dtype=np.int64)])
        self._newest = np.concatenate([self._newest, np.full(n, EMPTY, dtype=np.int64)])
        self._born = np.concatenate([self._born, np.zeros(n, dtype=np.int64)])

    # --- Snapshots. ------------------------------------------------------------------------

    # Snapshots (detector.snapshot) carry every other attribute; retention and limits are configuration.
    SNAPSHOT_SKIP = frozenset({"retention_ms", "min_interval_ms", "max_series", "initial_rows", "_interner",
                               "_retired_since_rebuild", "epoch"})

    def restore_state(self, state: dict) -> None:
        """Load a snapshot's state; one taken before size classes (one ring width, ``_ts``/``_vals``,
        for every series) is converted: every ring goes to the class that holds it, and
        :meth:`compact` later moves the sparse ones down."""
        from detector.snapshot import SnapshotError, apply_attributes

        if "_ts" in state and "_ring_ts" not in state:
            try:
                state = self._from_one_width(dict(state))
            except (KeyError, ValueError, TypeError) as exc:
                raise SnapshotError(f"SeriesStore: cannot convert a snapshot of the one-width layout: {exc}") from None
        elif "_ring_ts" in state:
            try:
                state = self._from_doubling_classes(dict(state))
            except (KeyError, ValueError, TypeError, AttributeError) as exc:
                raise SnapshotError(f"SeriesStore: cannot convert a snapshot of doubling size classes: {exc}") from None
        apply_attributes(self, state)
        self.epoch += 1
        # A snapshot's label sets come back as separate strings: share their pairs again.
        share = self._interner.share
        self.labels = [None if labels is None else share(labels) for labels in self.labels]

    @staticmethod
    def _from_doubling_classes(state: dict) -> dict:
        """A snapshot taken when class ``k`` held rings of ``base << k`` samples (before the x1.5
        ladder): the same rings, each class moved to the index of its width in :func:`_ladder`
        (``2k``), empty classes between them. Nothing to do for one of the current ladder."""
        base = int(state["base_capacity"])
        widths = [int(ring.shape[1]) for ring in state["_ring_ts"]]
        ladder = _ladder(base)
        if widths == ladder[: len(widths)].tolist():
            return state
        if widths != [base << k for k in range(len(widths))]:
            raise ValueError(f"ring widths {widths} are neither of the current ladder nor doubling from {base}")
        n = 2 * len(widths) - 1
        ring_ts = [np.full((0, int(ladder[j])), EMPTY, dtype=np.int64) for j in range(n)]
        ring_vals = [np.zeros((0, int(ladder[j]))) for j in range(n)]
        ring_free: list[list[int]] = [[] for _ in range(n)]
        ring_used = [0] * n
        for k in range(len(widths)):
            ring_ts[2 * k], ring_vals[2 * k] = state["_ring_ts"][k], state["_ring_vals"][k]
            ring_free[2 * k], ring_used[2 * k] = list(state["_ring_free"][k]), int(state["_ring_used"][k])
        classes = np.asarray(state["_class"])
        state.update({"_class": (2 * classes.astype(np.int16)).astype(classes.dtype), "_ring_ts": ring_ts,
                      "_ring_vals": ring_vals, "_ring_free": ring_free, "_ring_used": ring_used})
        return state

    def _from_one_width(self, state: dict) -> dict:
        ts, vals, written, born = state.pop("_ts"), state.pop("_vals"), state["_written"], state["_born"]
        n, cap = ts.shape
        k = int(_size_class(np.array([cap]), self.base_capacity)[0])
        # Unroll each ring (oldest sample at slot 0), as the class's wider rings expect.
        order = (np.arange(cap)[None, :] + np.where(written >= cap, written % cap, 0)[:, None]) % cap
        rings_ts = np.full((n, self._cap(k)), EMPTY, dtype=np.int64)
        rings_vals = np.zeros((n, self._cap(k)))
        rings_ts[:, :cap] = np.take_along_axis(ts, order, axis=1)
        rings_vals[:, :cap] = np.take_along_axis(vals, order, axis=1)
        live = born > 0
        empty = [np.full((0, self._cap(i)), EMPTY, dtype=np.int64) for i in range(k)]
        state.update({
            "base_capacity": self.base_capacity,
            "_written": np.minimum(written, cap),
            "_class": np.where(live, k, 0).astype(np.int8),
            "_slot": np.where(live, np.arange(n), -1).astype(np.int64),
            "_ring_ts": [*empty, rings_ts],
            "_ring_vals": [*(np.zeros(e.shape) for e in empty), rings_vals],
            "_ring_free": [[] for _ in range(k)] + [np.flatnonzero(~live).tolist()],
            "_ring_used": [0] * k + [n],
        })
        return state
