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

* only a *regular* series predicts its next sample: one whose last two gaps
  agree within the tolerance. A new series, one seen twice, or one sent at
  irregular times (pushed on events, a probe) does not hold: it must not stall
  a partition;
* a series whose newest sample is a staleness marker has ended: it does not hold;
* a series nothing has arrived for in ``3 x gap + 5 s`` (its sender's
  batching), at most ``silence_ms``, while the partition kept receiving (a
  target removed without a staleness marker, a shard that died) does not hold. Silence is counted on an *active* clock that advances with
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
>>> for t in (0, 15_000, 30_000):
...     tracker.observe(rows, np.array([t, t]), arrival_ms=t)
>>> tracker.watermark(newest_ms=30_000, now_ms=30_000)   # both series: next sample near 45 s
43500
>>> tracker.observe(np.array([0]), np.array([45_000]), arrival_ms=45_000)  # series 1's shard is slow
>>> tracker.watermark(newest_ms=45_000, now_ms=45_000)
43500
>>> for t in (60_000, 75_000, 90_000):  # ... and then silent while series 0 goes on
...     tracker.observe(np.array([0]), np.array([t]), arrival_ms=t)
>>> tracker.watermark(newest_ms=90_000, now_ms=90_000)
103500
"""

from __future__ import annotations

import numpy as np

EMPTY = np.iinfo(np.int64).min
SENDER_BATCHING_MS = 5_000  # Prometheus's batch_send_deadline: a live series may arrive this late


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
        self._prev_gap = np.zeros(initial_rows, dtype=np.int64)  # the gap before it
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
        stored = self._newest[series]
        before = np.where(same_row_before, stamps[np.maximum(last - 1, 0)], stored)
        # And the one before that, for the gap before the newest gap.
        two_before = np.zeros(len(last), dtype=bool)
        has_two = same_row_before & (last > 1)
        two_before[has_two] = rows[last[has_two] - 2] == series[has_two]
        before2 = np.where(two_before, stamps[np.maximum(last - 2, 0)], np.where(same_row_before, stored, EMPTY))
        advanced = newest > stored
        gap = newest - before
        known = advanced & (before != EMPTY) & (gap > 0)
        prev_gap = np.where(before2 != EMPTY, before - before2, self._gap[series])
        self._prev_gap[series[known]] = prev_gap[known]
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
        self._prev_gap[rows] = 0
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
        gap = self._gap
        regular = (gap > 0) & (np.abs(gap - self._prev_gap) <= gap // 10)
        holds = regular & ~self._ended & (self._newest != EMPTY)
        if now_ms is not None:
            allowance = np.minimum(3 * gap + SENDER_BATCHING_MS, self.silence_ms)
            holds &= self._arrived >= self._active_at(now_ms) - allowance
        return holds

    def _grow(self, rows: int) -> None:
        size = len(self._newest)
        if rows <= size:
            return
        extra = max(rows, 2 * size) - size
        self._newest = np.concatenate([self._newest, np.full(extra, EMPTY, dtype=np.int64)])
        self._gap = np.concatenate([self._gap, np.zeros(extra, dtype=np.int64)])
        self._prev_gap = np.concatenate([self._prev_gap, np.zeros(extra, dtype=np.int64)])
        self._arrived = np.concatenate([self._arrived, np.full(extra, EMPTY, dtype=np.int64)])
        self._ended = np.concatenate([self._ended, np.zeros(extra, dtype=bool)])
