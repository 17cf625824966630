"""N stage-1 partitions, M combine partitions (two levels of M if the plan needs them) and the still-global engine, in one process.

The parity oracle of the tests and the model of the Kafka wiring: each step
only calls :meth:`Stage1Partition.ingest`/``advance_to`` (batches in, frame
bytes out), :meth:`CombinePartition.receive` (frame bytes in, outputs
out) and :meth:`CombinePartition.take_frames` (a first combine level's frames
for the second). Like the receiver, it sends every stage-1 partition the newest sample
time seen (minus the lateness bound) after each batch, so every partition
and the combine stage evaluate the same ticks as one engine over all series.

>>> from detector.wire.batch import SampleBatch
>>> from detector.promql import compile_expr
>>> from detector.rules import AlertingRule, RuleGroup
>>> rule = AlertingRule("Busy", compile_expr("sum by (ns) (cpu) > 4"), "sum by (ns) (cpu) > 4")
>>> staged = StagedEngine([RuleGroup("g", "f.yml", 15_000, (rule,))], partitions=4, combiners=4)
>>> cpu = [(("__name__", "cpu"), ("instance", f"i{i}"), ("ns", "web")) for i in range(3)]
>>> out = staged.ingest(SampleBatch.from_series([(s, [(0, 2.0)]) for s in cpu]))
>>> [(t.labels, t.value, t.state) for t in out.transitions]
[((('alertname', 'Busy'), ('ns', 'web')), 6.0, 'firing')]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.labels import DEFAULT_PARTITION_BY, labels_from_canonical, partition_for
from detector.output.alerts import AlertNotification, AlertTransition
from detector.promql.plan import DEFAULT_LOOKBACK_MS
from detector.rules.engine import DEFAULT_RESEND_DELAY_MS, EngineOutput, RuleEngine
from detector.rules.group import RuleGroup
from detector.stages.combine import CombinePartition
from detector.stages.frames import split_frame
from detector.stages.plan import StagePlan
from detector.stages.stage1 import Stage1Partition
from detector.wire.batch import SampleBatch


@dataclass
class StagedOutput:
    """Everything one step produced, from every partition of both stages and the global engine."""

    transitions: list[AlertTransition] = field(default_factory=list)
    notifications: list[AlertNotification] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, out: EngineOutput) -> None:
        self.transitions += out.transitions
        self.notifications += out.notifications
        self.errors += out.errors


@dataclass
class StageLoad:
    """What went through each partition so far: the figures of the scale-out bench."""

    samples: np.ndarray  # per stage-1 partition
    global_samples: int  # into the still-global engine
    frame_bytes: np.ndarray  # per combine partition


class StagedEngine:
    """See the module docstring. ``start_ms``: the tick origin (default: the first batch's oldest sample)."""

    def __init__(
        self,
        groups: list[RuleGroup],
        *,
        partitions: int = 4,
        combiners: int | None = None,
        partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
        lateness_ms: int = 0,
        resend_delay_ms: int = DEFAULT_RESEND_DELAY_MS,
        start_ms: int | None = None,
        frame_max_bytes: int | None = None,
    ) -> None:
        self.plan = StagePlan(groups, partition_by)
        self.frame_max_bytes = frame_max_bytes  # frames go as parts of at most this (split_frame), as over Kafka
        self.partitions = partitions
        self.combiners = combiners or partitions
        self.partition_by = partition_by
        self.lateness_ms = lateness_ms
        self._options = {"lookback_ms": lookback_ms, "resend_delay_ms": resend_delay_ms}
        self.stage1: list[Stage1Partition] = []
        self.combine: list[CombinePartition] = []
        self.combine2: list[CombinePartition] = []  # the second combine level, if the plan has one
        self.global_engine: RuleEngine | None = None
        self.newest: int | None = None
        self._partition_of: dict[bytes, int] = {}
        self._feeds_global: dict[bytes, bool] = {}
        self.load = StageLoad(np.zeros(partitions, dtype=np.int64), 0, np.zeros(self.combiners, dtype=np.int64))
        if start_ms is not None:
            self._start(start_ms)

    def _start(self, origin: int) -> None:
        lateness = {"lateness_ms": self.lateness_ms}
        self.stage1 = [
            Stage1Partition(self.plan, p, self.partitions, self.combiners, start_ms=origin, **self._options, **lateness)
            for p in range(self.partitions)
        ]
        deep = self.plan.levels == 2
        self.combine = [
            CombinePartition(self.plan, c, self.combiners, self.partitions, start_ms=origin,
                             next_count=self.combiners if deep else 0, **self._options)
            for c in range(self.combiners)
        ]
        if deep:
            self.combine2 = [
                CombinePartition(self.plan, c, self.combiners, self.combiners, start_ms=origin, level=2, **self._options)
                for c in range(self.combiners)
            ]
        self.global_engine = RuleEngine(self.plan.global_groups(), start_ms=origin, **self._options, **lateness)

    def ingest(self, batch: SampleBatch) -> StagedOutput:
        out = StagedOutput()
        if len(batch) == 0:
            return out
        if not self.stage1:
            self._start(int(batch.timestamps.min()))
        newest = int(batch.timestamps.max())
        self.newest = newest if self.newest is None else max(self.newest, newest)
        frames: list[dict[int, bytes]] = []
        for p, part in enumerate(self.split_batch(batch)):
            if part is not None:
                self.load.samples[p] += len(part)
                result, sent = self.stage1[p].ingest(part)
                out.add(result)
                frames.append(sent)
        wanted = self._global_part(batch)
        if wanted is not None:
            self.load.global_samples += len(wanted)
            out.add(self.global_engine.ingest(wanted))  # type: ignore[union-attr]
        self._deliver(frames, out)
        return self._advance(self.newest - self.lateness_ms, out)

    def advance_to(self, watermark_ms: int) -> StagedOutput:
        """Move every partition's watermark (the end of a replay, or an idle timer)."""
        return self._advance(watermark_ms, StagedOutput())

    def _advance(self, watermark_ms: int, out: StagedOutput) -> StagedOutput:
        if not self.stage1:
            return out
        frames = []
        for part in self.stage1:
            result, sent = part.advance_to(watermark_ms)
            out.add(result)
            frames.append(sent)
        out.add(self.global_engine.advance_to(watermark_ms))  # type: ignore[union-attr]
        self._deliver(frames, out)
        return out

    def _deliver(self, frames: list[dict[int, bytes]], out: StagedOutput) -> None:
        for sent in frames:
            for dest, data in sent.items():
                self.load.frame_bytes[dest] += len(data)
                for part in self._records(data):
                    out.add(self.combine[dest].receive(part))
        if self.combine2:
            for sent in [c.take_frames() for c in self.combine]:
                for dest, data in sent.items():
                    self.load.frame_bytes[dest] += len(data)  # level 2's partition c sits with level 1's
                    for part in self._records(data):
                        out.add(self.combine2[dest].receive(part))

    def _records(self, frame: bytes) -> list[bytes]:
        return [frame] if self.frame_max_bytes is None else split_frame(frame, self.frame_max_bytes)

    def stores(self) -> list:
        """Every store of every partition (recorded series live where their rule runs)."""
        stores = [p.engine.store for p in self.stage1] + [c.engine.store for c in self.combine + self.combine2]
        return stores + ([self.global_engine.store] if self.global_engine is not None else [])

    # --- Where samples go. -----------------------------------------------------------------

    def split_batch(self, batch: SampleBatch) -> list[SampleBatch | None]:
        """A batch cut by stage-1 partition (None where a partition gets nothing), as the receiver cuts it."""
        if self.partitions == 1:
            return [batch]
        known = self._partition_of.get
        found = [known(k) for k in batch.series_keys]  # series seen before: one look-up each
        if None in found:
            found = [self._partition(k) if p is None else p for k, p in zip(batch.series_keys, found)]
        dest = np.array(found, dtype=np.int64)
        return [_take(batch, dest == p) for p in range(self.partitions)]

    def _partition(self, key: bytes) -> int:
        p = self._partition_of.get(key)
        if p is None:
            p = self._partition_of[key] = partition_for(labels_from_canonical(key), self.partitions, self.partition_by)
        return p

    def _global_part(self, batch: SampleBatch) -> SampleBatch | None:
        if not self.plan.global_groups():
            return None
        wanted = np.fromiter((self._global(k) for k in batch.series_keys), dtype=bool, count=len(batch.series_keys))
        return _take(batch, wanted)

    def _global(self, key: bytes) -> bool:
        found = self._feeds_global.get(key)
        if found is None:
            found = self._feeds_global[key] = self.plan.feeds_global(labels_from_canonical(key))
        return found

    def partial_rows(self) -> np.ndarray:
        """Partial rows received so far by each combine partition."""
        rows = np.array([c.rows_received for c in self.combine], dtype=np.int64)
        if self.combine2:  # level 2's partition c sits with level 1's
            rows += np.array([c.rows_received for c in self.combine2], dtype=np.int64)
        return rows


def _take(batch: SampleBatch, series_mask: np.ndarray) -> SampleBatch | None:
    """The samples of the series ``series_mask`` selects, as a batch of only those series."""
    if not series_mask.any():
        return None
    chosen = np.flatnonzero(series_mask)
    renumber = np.full(len(series_mask), -1, dtype=np.int64)
    renumber[chosen] = np.arange(len(chosen))
    sample_mask = series_mask[batch.series_index]
    return SampleBatch(
        list(map(batch.series_keys.__getitem__, chosen.tolist())),
        renumber[batch.series_index[sample_mask]].astype(np.uint32),
        batch.timestamps[sample_mask],
        batch.values[sample_mask],
    )


__all__ = ["StageLoad", "StagedEngine", "StagedOutput"]
