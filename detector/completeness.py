"""When a partition's samples for an instant are complete: the event-time watermark.

Prometheus sends remote-write over up to 50 shards at once (each series always
through the same shard, so one series arrives in time order), and a shard
holds a batch back for up to ``batch_send_deadline`` (5 s) or retries it with
backoff (up to 5 s). The first shard's request for a scrape therefore says
little about the others: evaluating an instant as soon as *some* sample has
passed it evaluates on incomplete data, and ``absent()``, ratios and sums then
alert wrongly.

Each series tells us more. Scrapes are periodic: a series whose newest sample
is at ``n`` and whose samples are ``gap`` apart will not send anything older
than about ``n + gap``, so every instant before that is complete *for this
series*. The partition is complete up to the smallest such bound over the
series that are still being sent:

    watermark = min over live series of (newest + gap - tolerance)

with ``tolerance`` a tenth of the gap (scrape timestamps jitter by
milliseconds; a sample that does arrive early is still stored, read by every
later evaluation, and counted as late). Not every series may hold the others
back:

* a series seen once has no gap yet: it does not hold (a new series must not
  stall a partition);
* a series whose newest sample is a staleness marker has ended: it does not hold;
* a series nothing has arrived for in ``silence_ms`` while the partition kept
  receiving (a target removed without a staleness marker, a shard that died)
  does not hold. Silence is counted on an *active* clock that advances with
  arrivals, by at most ``silence_ms / 2`` between two of them: after an outage
  of the sender, every series is not suddenly silent, so the catch-up that
  follows is evaluated on complete data too;
* the watermark never trails the partition's newest sample by more than
  ``max_lateness_ms`` of event time, whatever the series say, so the store's
  retention bounds what a late sample can still change.

Same input, same output: the arrival clock is passed in by the caller (None
in replay, where arrival order is event order).

>>> import numpy as np
>>> tracker = CompletenessTracker(max_lateness_ms=120_000, silence_ms=30_000)
>>> rows = np.array([0, 1])
>>> tracker.observe(rows, np.array([0, 0]), arrival_ms=0)
>>> tracker.observe(rows, np.array([15_000, 15_000]), arrival_ms=15_000)
>>> tracker.watermark(newest_ms=15_000, now_ms=15_000)   # both series: next sample near 30 s
28500
>>> tracker.observe(np.array([0]), np.array([30_000]), arrival_ms=30_000)  # series 1's shard is slow
>>> tracker.watermark(newest_ms=30_000, now_ms=30_000)
28500
>>> for t in (45_000, 60_000):  # ... and then silent while series 0 goes on
...     tracker.observe(np.array([0]), np.array([t]), arrival_ms=t)
>>> tracker.watermark(newest_ms=60_000, now_ms=60_000)
73500
"""

from __future__ import annotations

import numpy as np

EMPTY = np.iinfo(np.int64).min


class CompletenessTracker:
    """Per-series newest sample, spacing and arrival time; the partition's complete-up-to instant.

    Rows are the store's series rows (:class:`detector.store.SeriesStore`).
    """

    # Snapshots (detector.snapshot) carry the per-row columns; the bounds are configuration.
    SNAPSHOT_SKIP = frozenset({"max_lateness_ms", "silence_ms"})

    def __init__(self, *, max_lateness_ms: int, silence_ms: int, initial_rows: int = 1024) -> None:
        self.max_lateness_ms = max_lateness_ms
        self.silence_ms = silence_ms
        self._newest = np.full(initial_rows, EMPTY, dtype=np.int64)
        self._gap = np.zeros(initial_rows, dtype=np.int64)  # 0: not known yet
        self._arrived = np.full(initial_rows, EMPTY, dtype=np.int64)  # on the active clock
        self._ended = np.zeros(initial_rows, dtype=bool)
        self._active_ms = 0  # the active clock: arrival time while samples keep arriving
        self._last_arrival_ms = EMPTY  # the caller's clock at the last arrival

    def observe(
        self,
        rows: np.ndarray,
        stamps: np.ndarray,
        *,
        stale: np.ndarray | None = None,
        arrival_ms: int | None = None,
    ) -> None:
        """Note the samples of one batch (any order, several per series allowed).

        ``stale`` marks the samples that are staleness markers; a series whose
        newest sample is one has ended.
        """
        if len(rows) == 0:
            return
        self._grow(int(rows.max()) + 1)
        order = np.lexsort((stamps, rows))
        rows, stamps = rows[order], stamps[order]
        last = np.flatnonzero(np.append(rows[1:] != rows[:-1], True))
        series = rows[last]
        newest = stamps[last]
        # The sample before each series' newest: earlier in this batch, or the stored newest.
        same_row_before = np.zeros(len(last), dtype=bool)
        has_before = last > 0
        same_row_before[has_before] = rows[last[has_before] - 1] == series[has_before]
        before = np.where(same_row_before, stamps[np.maximum(last - 1, 0)], self._newest[series])
        advanced = newest > self._newest[series]
        gap = newest - before
        known = advanced & (before != EMPTY) & (gap > 0)
        self._gap[series[known]] = gap[known]
        self._newest[series[advanced]] = newest[advanced]
        if stale is not None:
            stale = np.asarray(stale, dtype=bool)[order]
            self._ended[series[advanced]] = stale[last][advanced]
        else:
            self._ended[series[advanced]] = False
        if arrival_ms is not None:
            self._active_ms = self._active_at(arrival_ms)
            self._last_arrival_ms = max(self._last_arrival_ms, arrival_ms)
            self._arrived[series] = self._active_ms

    def _active_at(self, now_ms: int) -> int:
        """The active clock at ``now_ms`` of the caller's clock."""
        if self._last_arrival_ms == EMPTY:
            return self._active_ms
        return self._active_ms + min(max(now_ms - self._last_arrival_ms, 0), self.silence_ms // 2)

    def forget(self, rows: np.ndarray) -> None:
        """Rows whose series were retired: they no longer hold anything back."""
        rows = rows[rows < len(self._newest)]
        self._newest[rows] = EMPTY
        self._gap[rows] = 0
        self._arrived[rows] = EMPTY
        self._ended[rows] = False

    def watermark(self, newest_ms: int, now_ms: int | None = None) -> int:
        """The instant up to which the partition's samples are complete (see the module docstring).

        ``newest_ms`` is the newest sample timestamp of the partition; ``now_ms``
        the arrival clock (None: no series is presumed silent).
        """
        if newest_ms == EMPTY:
            return EMPTY
        floor = newest_ms - self.max_lateness_ms
        holds = self._holding(now_ms)
        if not holds.any():
            return newest_ms
        gaps = self._gap[holds]
        bound = int(np.min(self._newest[holds] + gaps - gaps // 10))
        return max(bound, floor)

    def holding_back(self, watermark_ms: int, now_ms: int | None = None) -> np.ndarray:
        """Rows that keep the watermark where it is (for logs and tests)."""
        holds = self._holding(now_ms)
        bound = self._newest + self._gap - self._gap // 10
        return np.flatnonzero(holds & (bound <= watermark_ms))

    def _holding(self, now_ms: int | None) -> np.ndarray:
        holds = (self._gap > 0) & ~self._ended & (self._newest != EMPTY)
        if now_ms is not None:
            holds &= self._arrived >= self._active_at(now_ms) - self.silence_ms
        return holds

    def _grow(self, rows: int) -> None:
        size = len(self._newest)
        if rows <= size:
            return
        extra = max(rows, 2 * size) - size
        self._newest = np.concatenate([self._newest, np.full(extra, EMPTY, dtype=np.int64)])
        self._gap = np.concatenate([self._gap, np.zeros(extra, dtype=np.int64)])
        self._arrived = np.concatenate([self._arrived, np.full(extra, EMPTY, dtype=np.int64)])
        self._ended = np.concatenate([self._ended, np.zeros(extra, dtype=bool)])
