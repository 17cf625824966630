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

live, at most the arrival clock (or the newest sample, if that is ahead of it):
an instant is not complete before it has happened;

with ``tolerance`` a tenth of the gap (scrape timestamps jitter by
milliseconds; a sample that does arrive early is still stored, read by every
later evaluation, and counted as late). Not every series may hold the others
back:

* only a *regular* series predicts its next sample: one whose last two gaps
  agree within the tolerance. A new series, one seen twice, or one sent at
  irregular times (pushed on events, a probe) does not hold: it must not stall
  a partition;
* except in the first scrapes after a start with no state (live only: in
  replay, arrival order is event order). Nothing is complete until the
  partition has received for one *typical* gap (the median gap of its regular
  series, or ``default_gap_ms``, the rules' interval, before any is known)
  plus the sender's batching in event time (from the oldest sample of its
  first batch), and for ``start_wait_ms`` (10 s) on the arrival clock (the
  batching plus one retry: a first request may carry minutes of one shard's
  backlog; 0: no start-up rules, for a sender with one shard): a series not
  heard of yet cannot hold anything back, and by then every live series has
  been sent once (both spans on the arrival clock end it too: a sender that
  stopped after one request holds nothing for good). Until it has received
  for three typical gaps plus the batching, every series has just
  started: one seen once holds with the typical gap, one seen twice with its
  one gap. Without this, each shard's
  first requests after a start moved the watermark past the others' samples
  (0.1-0.3% of a 25-minute run late with 5 or 50 shards, and the alerts of the
  first ticks wrong);
* a series whose newest sample is a staleness marker has ended: it does not hold;
* a series nothing has arrived for in ``3 x gap + 5 s`` (its sender's
  batching), at most ``silence_ms``, while the partition kept receiving (a
  target removed without a staleness marker, a shard that died) does not hold.
  Silence is counted on an *active* clock that advances with arrivals, by at
  most the partition's usual spacing of arrivals (at least the sender's
  batching deadline, 5 s; at most ``silence_ms / 2``) between two of them:
  after an outage of the sender, every series is not suddenly silent, and a
  series whose next request was refused when the outage began is not either
  (a fixed ``silence_ms / 2`` let series sent 15-20 s before the outage go
  silent: 0.005-0.012% late and 4-8 alert transitions wrong in the bench's
  50-shard catch-up), so the catch-up that follows is evaluated on complete
  data too;
* the watermark never trails the partition's newest sample by more than
  ``max_lateness_ms`` of event time, whatever the series say, so the store's
  retention bounds what a late sample can still change; live, only once the
  series have been that far behind for 30 s of the active clock (at most
  ``silence_ms``): a catch-up after an outage as long as the bound starts with
  a request holding the newest samples while the other shards' backlogs
  arrive in the next seconds (with the bound at once, a 10-minute outage left
  the samples of the 15 s before it late: 0.14% with 50 shards, and 65 alert
  transitions of that tick wrong).

Same input, same output: the arrival clock is passed in by the caller (None
in replay, where arrival order is event order).

>>> import numpy as np
>>> tracker = CompletenessTracker(max_lateness_ms=120_000, silence_ms=30_000)
>>> rows = np.array([0, 1])
>>> for t in (0, 15_000, 30_000):
...     tracker.observe(rows, np.array([t, t]), arrival_ms=t)
>>> tracker.watermark(newest_ms=30_000, now_ms=31_000)   # both series: next sample near 45 s ...
31000
>>> tracker.watermark(newest_ms=30_000, now_ms=44_000)   # ... so complete up to 43.5 s once it is 43.5 s
43500
>>> tracker.observe(np.array([0]), np.array([45_000]), arrival_ms=45_000)  # series 1's shard is slow
>>> tracker.watermark(newest_ms=45_000, now_ms=45_000)
43500
>>> for t in (60_000, 75_000, 90_000):  # ... and then silent while series 0 goes on
...     tracker.observe(np.array([0]), np.array([t]), arrival_ms=t)
>>> tracker.watermark(newest_ms=90_000, now_ms=110_000)
103500
"""

from __future__ import annotations

import numpy as np

EMPTY = np.iinfo(np.int64).min
SENDER_BATCHING_MS = 5_000  # Prometheus's batch_send_deadline: a live series may arrive this late
# After an outage every shard retries within its backoff (at most 5 s) and sends its oldest samples first.
CATCH_UP_GRACE_MS = 30_000
# After a start, every shard has sent what it held within its batching deadline plus one retry
# (Prometheus's max_backoff, 5 s), even if its first request carried minutes of backlog.
START_WAIT_MS = 2 * SENDER_BATCHING_MS
SPACING_WEIGHT = 0.1  # of the newest spacing between arrivals in their moving average


class CompletenessTracker:
    """Per-series newest sample, spacing and arrival time; the partition's complete-up-to instant.

    Rows are the store's series rows (:class:`detector.store.SeriesStore`).
    """

    # Snapshots (detector.snapshot) carry the per-row columns; the bounds are configuration.
    SNAPSHOT_SKIP = frozenset({"max_lateness_ms", "silence_ms", "default_gap_ms", "start_wait_ms"})

    def __init__(
        self, *, max_lateness_ms: int, silence_ms: int, default_gap_ms: int = 15_000,
        start_wait_ms: int = START_WAIT_MS, initial_rows: int = 1024,
    ) -> None:
        self.max_lateness_ms = max_lateness_ms
        self.silence_ms = silence_ms
        self.default_gap_ms = default_gap_ms  # a series' gap before any series has shown one
        self.start_wait_ms = start_wait_ms  # of the arrival clock; 0: no start-up rules
        self._newest = np.full(initial_rows, EMPTY, dtype=np.int64)
        self._gap = np.zeros(initial_rows, dtype=np.int64)  # 0: not known yet
        self._prev_gap = np.zeros(initial_rows, dtype=np.int64)  # the gap before it
        self._arrived = np.full(initial_rows, EMPTY, dtype=np.int64)  # on the active clock
        self._ended = np.zeros(initial_rows, dtype=bool)
        self._active_ms = 0  # the active clock: arrival time while samples keep arriving
        self._last_arrival_ms = EMPTY  # the caller's clock at the last arrival
        # Moving average of the time between arrivals, each at most silence_ms / 2 (where it starts).
        self._spacing_ms = float(silence_ms // 2)
        self._behind_since = EMPTY  # active clock when the series' bound fell behind max_lateness_ms
        # Where the start-up began: the oldest sample and the caller's clock at the first batch.
        self._first_ms = EMPTY
        self._first_arrival_ms = EMPTY
        self._started = start_wait_ms <= 0  # past the start-up rules

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
        first_batch = self._first_ms == EMPTY
        if first_batch:
            self._first_ms = int(stamps.min())
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
            if self._last_arrival_ms != EMPTY:
                spacing = min(max(arrival_ms - self._last_arrival_ms, 0), self.silence_ms // 2)
                self._spacing_ms += SPACING_WEIGHT * (spacing - self._spacing_ms)
            self._active_ms = self._active_at(arrival_ms)
            self._last_arrival_ms = max(self._last_arrival_ms, arrival_ms)
            self._arrived[series] = self._active_ms
            if first_batch:
                self._first_arrival_ms = arrival_ms

    def _active_at(self, now_ms: int) -> int:
        """The active clock at ``now_ms`` of the caller's clock."""
        if self._last_arrival_ms == EMPTY:
            return self._active_ms
        return self._active_ms + min(max(now_ms - self._last_arrival_ms, 0), self._pause_credit())

    def _pause_credit(self) -> int:
        """How much of a pause between arrivals counts on the active clock: the usual spacing."""
        return int(min(self.silence_ms // 2, max(SENDER_BATCHING_MS, self._spacing_ms)))

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
        # The typical gap matters only in the first scrapes (a median over every row: not per batch after).
        typical = self.default_gap_ms if self._started else self.typical_gap()
        if self._within_start(newest_ms, typical + SENDER_BATCHING_MS, now_ms, self.start_wait_ms):
            return floor  # series not heard of yet may still hold anything back
        holds, bound = self._holding(newest_ms, now_ms, typical)
        if self._first_arrival_ms != EMPTY and not self._within_start(
                newest_ms, 3 * typical + SENDER_BATCHING_MS, now_ms, self.start_wait_ms):
            self._started = True  # for good: a young series from now on is a new one
        if not holds.any():
            self._behind_since = EMPTY
            return newest_ms
        complete = int(np.min(bound[holds]))
        if now_ms is not None:
            # Live, nothing is complete before it happened: a tick evaluated ahead of the clock
            # (and of every sample) makes a new or irregular series' sample for it late however
            # soon it arrives (the latency bench's probes stamped T and sent 50 ms before T: 1 s
            # late in about a third of runs), and its alerts start in the future. The newest
            # sample also bounds it when the sender's clock runs ahead of ours.
            complete = min(complete, max(newest_ms, now_ms))
        if complete >= floor:
            self._behind_since = EMPTY
            return complete
        if now_ms is None:
            return floor
        # Behind the bound: for a grace of the active clock first, as a catch-up's first
        # request carries the newest samples while the other shards' backlogs are on their way.
        active = self._active_at(now_ms)
        if self._behind_since == EMPTY:
            self._behind_since = active
        return floor if active - self._behind_since >= min(self.silence_ms, CATCH_UP_GRACE_MS) else complete

    def holding_back(self, watermark_ms: int, now_ms: int | None = None) -> np.ndarray:
        """Rows that keep the watermark where it is (for logs and tests)."""
        newest = int(self._newest.max()) if len(self._newest) else EMPTY
        holds, bound = self._holding(newest, now_ms, self.typical_gap())
        return np.flatnonzero(holds & (bound <= watermark_ms))

    def typical_gap(self) -> int:
        """The median gap of the live regular series; ``default_gap_ms`` before there is one."""
        gap = self._gap
        regular = (gap > 0) & (np.abs(gap - self._prev_gap) <= gap // 10) & ~self._ended & (self._newest != EMPTY)
        return int(np.median(gap[regular])) if regular.any() else self.default_gap_ms

    def _within_start(self, newest_ms: int, span_ms: int, now_ms: int | None, arrival_span_ms: int) -> bool:
        """Whether, since its first batch, the partition has received for less than ``span_ms`` of
        event time or ``arrival_span_ms`` of the arrival clock (never in replay: arrival order is
        event order). Both spans on the clock end it too: a sender that stopped after its first
        request, or sent its history in one, does not hold the partition for good."""
        if self._started or self._first_arrival_ms == EMPTY:
            return False
        if now_ms is not None:
            waited = now_ms - self._first_arrival_ms
            if waited < arrival_span_ms:
                return True
            if waited >= arrival_span_ms + span_ms:
                return False
        return newest_ms < self._first_ms + span_ms

    def _holding(self, newest_ms: int, now_ms: int | None, typical: int) -> tuple[np.ndarray, np.ndarray]:
        """Which rows hold the watermark, and each row's complete-up-to bound."""
        gap, prev = self._gap, self._prev_gap
        regular = (gap > 0) & (prev > 0) & (np.abs(gap - prev) <= gap // 10)
        # In its first scrapes the partition's series are young (seen once: the typical gap;
        # seen twice: its one gap) and hold all the same; after that a young series is a new
        # one (or a probe, a push) and must not stall the partition.
        if self._within_start(newest_ms, 3 * typical + SENDER_BATCHING_MS, now_ms, self.start_wait_ms):
            regular |= (gap == 0) | (prev == 0)
        assumed = np.where(gap > 0, gap, typical)
        holds = regular & ~self._ended & (self._newest != EMPTY)
        if now_ms is not None:
            allowance = np.minimum(3 * assumed + SENDER_BATCHING_MS, self.silence_ms)
            holds &= self._arrived >= self._active_at(now_ms) - allowance
        return holds, self._newest + assumed - assumed // 10

    def restore_state(self, state: dict) -> None:
        """Load a snapshot; one from before the start-up wait existed is past it."""
        from detector.snapshot import apply_attributes

        state = dict(state)
        for name in ("_first_ms", "_first_arrival_ms"):
            state.setdefault(name, EMPTY + 1)  # any sample is past it
        state.setdefault("_spacing_ms", float(self.silence_ms // 2))
        state.setdefault("_behind_since", EMPTY)
        state.setdefault("_started", True)
        apply_attributes(self, state)

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
