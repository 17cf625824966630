"""The detectors of every partition a worker owns in one lane, with the offset each has folded in.

A lane is one samples topic (the target partitions, or the one-partition global
lane). :class:`PartitionEngines` creates a partition's
:class:`~detector.partition.PartitionDetectors` on its first message, restores
it from a snapshot (:mod:`pipelines.state`), and evaluates quiet live
partitions on wall-clock time (:meth:`PartitionEngines.advance_idle`). The
clock is passed in, so tests drive it.

>>> from detector.wire.batch import SampleBatch
>>> from pipelines.settings import Settings
>>> engines = PartitionEngines([], Settings(), clock=lambda: 1_700_000_000.0)
>>> up = (("__name__", "up"), ("job", "api"))
>>> _ = engines.ingest(2, SampleBatch.from_series([(up, [(1_700_000_000_000, 1.0)])]), offset=7)
>>> engines.folded(2, 7), engines.folded(2, 8), engines.is_live(2)
(True, False, True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from detector.partition import PartitionDetectors, PartitionOutput
from detector.rules import RuleGroup
from detector.rules.engine import idle_watermark, is_live
from detector.snapshot import SnapshotError
from detector.store import EMPTY
from detector.wire.batch import SampleBatch
from detector.wire.metadata import MetricTypes
from pipelines.settings import Settings

log = logging.getLogger("headroom.worker")


class PartitionEngines:
    """One set of detectors (rules, and for target lanes scores and forecasts) per assigned partition."""

    def __init__(
        self,
        groups: list[RuleGroup],
        settings: Settings,
        clock: Callable[[], float] = time.time,
        *,
        detectors: bool = True,
        metric_types: MetricTypes | None = None,
    ) -> None:
        self.groups = groups
        self.metric_types = metric_types
        self.settings = settings
        self.clock = clock
        self.detectors = detectors
        self.engines: dict[int, PartitionDetectors] = {}
        self.offsets: dict[int, int] = {}  # offset of the last message folded into each engine
        self._last_ingest_ms: dict[int, int] = {}
        self.models = settings.model_catalog() if detectors and settings.anomaly_scores else None
        self.forecast_config = settings.forecast_config() if detectors and settings.forecasts else None

    def _options(self) -> dict:
        options = {
            "lookback_ms": self.settings.lookback_ms,
            "lateness_ms": self.settings.lateness_ms,
            "resend_delay_ms": self.settings.resend_delay_ms,
            **self.settings.engine_limits(),  # see pipelines/limits.py
        }
        if self.settings.max_lateness_ms > 0:
            options["max_lateness_ms"] = self.settings.max_lateness_ms
            options["silence_ms"] = self.settings.series_silence_ms
            options["start_wait_ms"] = self.settings.start_wait_ms
        return {
            "engine_options": options,
            "scores": self.detectors and self.settings.anomaly_scores,
            "forecasts": self.detectors and self.settings.forecasts,
            "metric_types": self.metric_types,
            "models": self.models,
            "forecast_config": self.forecast_config,
        }

    def groups_for(self, partition: int) -> list[RuleGroup]:
        """The rule groups a partition's engine evaluates (the same everywhere; staged rules differ)."""
        return self.groups

    def start_empty(self, partition: int, offset: int | None = None) -> PartitionDetectors:
        """Fresh detectors for a partition; with ``offset``, as having folded in everything up to it
        (what a first snapshot of the empty state says)."""
        self._last_ingest_ms[partition] = int(self.clock() * 1000)
        engine = self.engines[partition] = PartitionDetectors(self.groups_for(partition), **self._options())
        if offset is not None:
            self.offsets[partition] = offset
        return engine

    def restore(self, partition: int, snapshot: bytes, offset: int) -> bool:
        """Restore a partition from a snapshot taken at ``offset``; one that cannot be
        loaded is logged and the partition starts empty (never a crash)."""
        try:
            self.engines[partition] = PartitionDetectors.restore(snapshot, self.groups_for(partition), **self._options())
        except SnapshotError as exc:
            log.error("partition %d: cannot load its snapshot at offset %d, starting empty: %s", partition, offset, exc)
            self.start_empty(partition)
            return False
        fresh = self.engines[partition].fresh_components
        if fresh:
            log.warning("partition %d: its snapshot at offset %d was taken with other %s settings; the rules' state "
                        "is restored, the %s start afresh", partition, offset, " and ".join(fresh), " and ".join(fresh))
        # Types learned since the snapshot (the metadata topic is read from its start) apply at once.
        self.engines[partition].reclassify()
        self.offsets[partition] = offset
        self._last_ingest_ms[partition] = int(self.clock() * 1000)
        return True

    def snapshot(self, partition: int) -> tuple[int, bytes] | None:
        """``(offset, snapshot)`` of a partition that has folded in a message; None otherwise."""
        engine, offset = self.engines.get(partition), self.offsets.get(partition)
        if engine is None or offset is None:
            return None
        try:
            return offset, engine.snapshot()
        except SnapshotError as exc:
            log.error("partition %d: cannot snapshot its state: %s", partition, exc)
            return None

    def folded(self, partition: int, offset: int) -> bool:
        """Whether the message at ``offset`` is already in the partition's state (from its snapshot)."""
        return offset <= self.offsets.get(partition, -1)

    def ingest(self, partition: int, batch: SampleBatch, offset: int | None = None) -> PartitionOutput:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self.start_empty(partition)
        now_ms = self._last_ingest_ms[partition] = int(self.clock() * 1000)
        out = engine.ingest(batch, arrival_ms=now_ms)
        if offset is not None:
            # Set before any await: a snapshot taken meanwhile (revoke, shutdown) pairs
            # this state with this offset.
            self.offsets[partition] = offset
        return out

    def skip(self, partition: int, offset: int) -> None:
        """Count the message at ``offset`` as done though it added nothing (unreadable): a snapshot
        may cover it, and the next message is not taken for a gap to catch up."""
        if partition in self.engines:
            self.offsets[partition] = offset

    def gap_before(self, partition: int, offset: int) -> bool:
        """Whether messages between the partition's state and ``offset`` were never folded in here."""
        last = self.offsets.get(partition)
        return last is not None and offset > last + 1

    def catch_up(self, partition: int) -> None:
        """Run every evaluation still due in a partition, outputs dropped (for a catch-up after a
        restore: the worker ran and sent them, in steps, before the restart)."""
        engine = self.engines.get(partition)
        while engine is not None and engine.pending:
            engine.catch_up()

    def advance_idle(self) -> dict[int, PartitionOutput]:
        """Evaluate what became due without a message: instants that became complete as
        silent series stopped holding them, and quiet partitions on wall-clock time
        (see :func:`idle_watermark`)."""
        now_ms = int(self.clock() * 1000)
        outputs = {}
        for partition, engine in self.engines.items():
            idle = idle_watermark(engine.newest, self._last_ingest_ms[partition], now_ms, self.settings.idle_advance_ms)
            watermark = max(engine.complete_until(now_ms), idle if idle is not None else EMPTY)
            if watermark > engine.watermark:
                outputs[partition] = engine.advance_to(watermark)
        return outputs

    def is_live(self, partition: int) -> bool:
        engine = self.engines.get(partition)
        return engine is not None and is_live(engine.newest, int(self.clock() * 1000))

    def reclassify(self) -> int:
        """Apply newly learned metric types in every partition; returns how many series changed."""
        return sum(engine.reclassify() for engine in self.engines.values())

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.engines.pop(partition, None)
            self.offsets.pop(partition, None)
            self._last_ingest_ms.pop(partition, None)
