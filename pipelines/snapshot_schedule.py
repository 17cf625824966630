"""When each partition's next snapshot is due: on a CPU budget, between two intervals.

A snapshot's cost grows with the state a partition holds (every series' rings,
model and forecast), not with the samples since the last one: at 12.5k series
with scores and forecasts it takes about 0.2 CPU-s, while those series' samples
of 30 s take about 0.1 CPU-s to process at one sample per 15 s. Taken on a
fixed clock, snapshots were then the largest cost per sample. So after the
first one (taken at once: offsets are committed only up to a snapshot), the
next is due when

* at least ``min_interval_s`` has passed (``HEADROOM_SNAPSHOT_INTERVAL``), and
* the CPU spent on the partition's messages since the last one is at least the
  next snapshot's expected CPU divided by ``cpu_share`` (``HEADROOM_SNAPSHOT_CPU_SHARE``,
  0.1: snapshots take at most about a tenth of what processing takes), or
  ``max_interval_s`` has passed (``HEADROOM_SNAPSHOT_MAX_INTERVAL``, 5 min), which
  bounds what a successor re-reads after a takeover.

The next snapshot is expected to cost what the last one did, scaled up by how
much the partition's state has grown since (its series, as the caller counts
them): the first snapshot, of a partition that has just started, costs next to
nothing, and taken as the estimate it let the second follow 30 s later, when
the partition was full, at once again (in a 75 s window of the `peers` bench at
100k series that second snapshot was 60% of the worker's CPU).

``cpu_share`` 0 turns the budget off: a snapshot every ``min_interval_s``.

>>> clock = [0.0]
>>> schedule = SnapshotSchedule(30, 300, 0.1, monotonic=lambda: clock[0])
>>> schedule.due("p"), schedule.due("p")   # the first at once, then not before 30 s
(True, False)
>>> schedule.taken("p", cpu_s=0.2)         # it cost 0.2 CPU-s: the next waits for 2 CPU-s of work
>>> clock[0] = 60.0; schedule.work("p", 1.0); schedule.due("p")
False
>>> schedule.work("p", 1.0); schedule.due("p")
True
>>> schedule.taken("p", cpu_s=0.2); clock[0] = 360.0; schedule.due("p")   # 5 min passed: due anyway
True
>>> schedule.taken("p", cpu_s=0.2); clock[0] = 400.0; schedule.work("p", 2.0)
>>> schedule.due("p", size=2)   # twice the series of the last snapshot: 4 CPU-s of work first
False
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Partition:
    last_s: float  # monotonic time the last snapshot was due
    work_cpu_s: float = 0.0  # CPU spent on the partition's messages since then
    snapshot_cpu_s: float = 0.0  # what the last snapshot cost
    size: int = 1  # the partition's size (series) when it was due; at least 1


class SnapshotSchedule:
    """Per partition (any hashable key): :meth:`work` after each message, :meth:`taken` after each
    snapshot, :meth:`due` to ask (it marks the snapshot as due when it says True)."""

    def __init__(self, min_interval_s: float, max_interval_s: float, cpu_share: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.min_interval_s = min_interval_s
        self.max_interval_s = max(max_interval_s, min_interval_s)
        self.cpu_share = cpu_share
        self.monotonic = monotonic
        self._partitions: dict[Hashable, _Partition] = {}

    def work(self, key: Hashable, cpu_s: float) -> None:
        """CPU spent processing a message of the partition."""
        state = self._partitions.get(key)
        if state is not None:
            state.work_cpu_s += cpu_s

    def taken(self, key: Hashable, cpu_s: float) -> None:
        """A snapshot of the partition was taken; it cost ``cpu_s``."""
        state = self._partitions.get(key)
        if state is not None:
            state.snapshot_cpu_s = cpu_s

    def due(self, key: Hashable, size: int = 0) -> bool:
        """Whether to snapshot the partition now (the first time: yes); ``size``: what the
        partition holds now (its series), in the unit the snapshot's cost grows with."""
        now = self.monotonic()
        state = self._partitions.get(key)
        if state is not None:
            elapsed = now - state.last_s
            if elapsed < self.min_interval_s:
                return False
            expected_cpu_s = state.snapshot_cpu_s * max(1.0, size / state.size)
            budget_met = self.cpu_share <= 0 or state.work_cpu_s * self.cpu_share >= expected_cpu_s
            if not budget_met and elapsed < self.max_interval_s:
                return False
        # A partition first seen empty counts as holding one series, so growth from nothing still scales.
        self._partitions[key] = _Partition(now, snapshot_cpu_s=state.snapshot_cpu_s if state is not None else 0.0,
                                           size=max(size, 1))
        return True

    def forget(self, key: Hashable) -> None:
        """The partition left this worker: its next first message snapshots at once again."""
        self._partitions.pop(key, None)
