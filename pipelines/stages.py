"""The lanes of staged rules (``HEADROOM_STAGED_RULES``, issue 13): the Kafka side of :mod:`detector.stages`.

With staged rules on, a worker's lanes are:

* the samples topic, where each partition is a stage-1 partition
  (:class:`Stage1Engines`): its detectors as before, whose rule engine also
  computes the partials of staged rules; after each message (and each idle
  advance of the 1 s timer) the partition's frames go to the partials topic,
  one per combine partition (:meth:`Stage1Engines.frames`);
* the partials topic (``HEADROOM_PARTIALS_TOPIC``, ``HEADROOM_COMBINE_PARTITIONS``
  partitions): a :class:`~detector.stages.combine.CombinePartition` per partition
  (:class:`CombineEngines`), whose alerts go out as the samples lanes' do;
* ``<partials topic>-2`` when the plan has a second combine level;
* the global lane, for what the stages cannot separate (:meth:`StagedRules.placement`).

Both kinds keep the interface of :class:`~pipelines.engines.PartitionEngines`
that :class:`~pipelines.state.StateKeeper` uses, so combine partitions are
snapshotted with the offset of the last frame folded in, and restored and
replayed from there; frames seen again are dropped by the core.

A combine partition is created once every upstream partition has sent a frame
(the frames before are kept, in its snapshot too): the earliest origin they
carry (the first tick each upstream evaluated) is the origin of its
evaluations, so it starts where the data starts. An upstream that has sent
no frame for ``HEADROOM_IDLE_ADVANCE`` plus the longest staged group interval
while others did (a samples partition
quiet during a replay, or owned by no live worker) stops holding it back: on
the 1 s timer its watermark follows the others' (:meth:`Combiner.advance_idle`).
A combine partition runs at most ``HEADROOM_MAX_EVALUATIONS_PER_STEP`` group
evaluations per frame; the worker runs the rest in steps that yield.

>>> from detector.promql import compile_expr
>>> from detector.rules import AlertingRule, RuleGroup
>>> from detector.wire.batch import SampleBatch
>>> from pipelines.settings import Settings
>>> rule = AlertingRule("Few", compile_expr("sum by (ns) (up) < 3"), "sum by (ns) (up) < 3")
>>> staged = StagedRules(Settings(partitions=2, staged_rules=True), [RuleGroup("g", "f.yml", 15_000, (rule,))])
>>> one_shard = dict(start_wait="0s")  # else a new partition waits 10 s for other sender shards (completeness)
>>> stage1 = Stage1Engines(staged, Settings(partitions=2, anomaly_scores=False, forecasts=False, **one_shard),
...                        clock=lambda: 0.0)
>>> combine = CombineEngines(staged, level=1)
>>> up = lambda i: (("__name__", "up"), ("instance", f"i{i}"), ("ns", "web"))
>>> for p in (0, 1):
...     _ = stage1.ingest(p, SampleBatch.from_series([(up(p), [(0, 1.0)])]), offset=0)
...     for dest, frame in stage1.frames(p).items():
...         out = combine.ingest(dest, frame, offset=p)
>>> [(t.labels, t.value, t.state) for t in out.transitions]
[((('alertname', 'Few'), ('ns', 'web')), 2.0, 'firing')]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from detector.partition import PartitionOutput
from detector.rules import RuleGroup
from detector.rules.engine import EngineOutput, RuleEngine, is_live
from detector.rules.placement import Placement, place_groups
from detector.snapshot import SnapshotError, decode, encode
from detector.stages.combine import SNAPSHOT_RECORDS, CombinePartition
from detector.stages.frames import NO_ORIGIN, Frame, FrameFormatError, PartsBuffer, decode_frame
from detector.stages.plan import StagePlan
from detector.stages.stage1 import Outbox, partial_groups
from detector.store import EMPTY
from pipelines.engines import PartitionEngines
from pipelines.settings import Settings

log = logging.getLogger("headroom.worker")


class StagedRules:
    """The stage plan of a rule set, and the topics and partition counts of its stages."""

    def __init__(self, settings: Settings, groups: list[RuleGroup]) -> None:
        self.settings = settings
        self.plan = StagePlan(groups, settings.series_partition_by)
        self.sources = settings.partitions  # stage-1 partitions
        self.combiners = settings.combiners  # partitions of each combine level
        # One per combine level; none when the plan leaves the combine stage nothing to evaluate
        # (e.g. the runbook's rules, all local): no partials lanes, and stage 1 sends no frames.
        self.topics = settings.partials_topics[: self.plan.levels] if self.plan.combines else ()

    def placement(self) -> Placement:
        """What the receiver copies to the global lane: only what the stages cannot separate."""
        return Placement([], self.plan.global_groups(), self.plan.global_selectors)

    def level_of(self, lane: str) -> int | None:
        """1 or 2 for a partials topic, None for another lane."""
        return self.topics.index(lane) + 1 if lane in self.topics else None


def global_lane_placement(settings: Settings, groups: list[RuleGroup]) -> Placement:
    """Which groups the global lane evaluates and which series the receiver copies there."""
    if settings.staged_rules:
        return StagedRules(settings, groups).placement()
    return place_groups(groups, settings.series_partition_by)


class Stage1Engines(PartitionEngines):
    """The samples lane with staged rules: each partition's engine also puts out partials, as frames."""

    def __init__(self, staged: StagedRules, settings: Settings, clock: Callable[[], float] = time.time, **options) -> None:
        super().__init__([], settings, clock, **options)
        self.staged = staged
        self.outboxes: dict[int, Outbox] = {}
        self.assigned_at: dict[int, int] = {}  # wall-clock ms each assigned partition was assigned here
        # The combine partitions evaluate at multiples of these: a watermark-only frame matters once it passes one.
        self.intervals = sorted({g.group.interval_ms for g in staged.plan.groups if not g.is_global}) or [1]

    def assign(self, partitions: set[int]) -> None:
        """Partitions the group gave this worker: one that never gets a sample still advances (see advance_idle)."""
        now_ms = int(self.clock() * 1000)
        for partition in partitions:
            self.assigned_at.setdefault(partition, now_ms)

    def advance_idle(self) -> dict[int, PartitionOutput]:
        """As for any samples lane; besides, a partition that has had no sample at all for
        ``HEADROOM_IDLE_ADVANCE`` since it was assigned follows the wall clock that far behind, so
        the combine partitions, which wait for every stage-1 partition's watermark, never wait
        for it for ever (samples it gets later, older than that, are late, as after any idle advance)."""
        outputs = super().advance_idle()
        idle_ms = self.settings.idle_advance_ms
        if idle_ms <= 0:
            return outputs
        now_ms = int(self.clock() * 1000)
        for partition, since in self.assigned_at.items():
            if now_ms - since < idle_ms:
                # Also when its engine exists: the state keeper starts it empty just before its first
                # message, and snapshots it (an await, so the timer runs) before that message is in.
                # Advanced then, a replay's partition jumped to the wall clock and took every sample
                # as late (two of 16 partitions in a stages_kafka run, 2026-12-07).
                continue
            engine = self.engines.get(partition)
            if engine is None:
                engine = self.start_empty(partition)
            if engine.newest == EMPTY and now_ms - idle_ms > engine.watermark:
                outputs[partition] = engine.advance_to(now_ms - idle_ms)
        return outputs

    def start_empty(self, partition: int, offset: int | None = None):
        engine = super().start_empty(partition, offset)
        engine.rules.skip_log = self.outboxes[partition].skips  # ticks it skips, the combine stage skips too
        return engine

    def restore(self, partition: int, snapshot: bytes, offset: int) -> bool:
        restored = super().restore(partition, snapshot, offset)
        self.engines[partition].rules.skip_log = self.outboxes[partition].skips
        return restored

    def groups_for(self, partition: int) -> list[RuleGroup]:
        # Each partition's partial rules write to its own outbox: groups per partition.
        staged = self.staged
        outbox = self.outboxes[partition] = Outbox(staged.plan, partition, staged.sources, staged.combiners)
        return partial_groups(staged.plan, staged.plan.stage1_parts(), outbox)

    def frames(self, partition: int) -> dict[int, bytes]:
        """The frames to send now, by combine partition: the partials put out since the last call, with
        the instant evaluated through; or, without partials, that instant alone once it passed a tick
        (of any group) the last frame had not. Else none: a combine partition waits only for
        watermarks to pass ticks, so a frame to every combine partition at every message or
        timer second would be waste.
        """
        engine, outbox = self.engines.get(partition), self.outboxes.get(partition)
        if not self.staged.topics or engine is None or outbox is None or engine.watermark == EMPTY:
            return {}
        through = evaluated_through(engine.rules)
        if not outbox.items and not any(through // i > outbox.sent_watermark // i for i in self.intervals):
            return {}
        return outbox.frames(through)

    def forget(self, partitions: set[int]) -> None:
        super().forget(partitions)
        for partition in partitions:
            self.outboxes.pop(partition, None)
            self.assigned_at.pop(partition, None)


def evaluated_through(engine: RuleEngine) -> int:
    """The instant every tick up to which a stage-1 engine has evaluated: the watermark a frame may carry.

    The engine's watermark, or just before the first tick still due where some are left for later
    steps (``HEADROOM_MAX_EVALUATIONS_PER_STEP``) or wait for a group's evaluation delay: a combine
    partition evaluates a tick once every frame's watermark passed it, and drops partials for it
    that come later. (``_next_tick`` is read here because the engine has no public form of it.)

    >>> engine = RuleEngine([])
    >>> engine.watermark, engine._next_tick = 60_000, [30_000, 75_000]
    >>> evaluated_through(engine)
    29999
    """
    due = [tick - 1 for tick in engine._next_tick if tick is not None and tick <= engine.watermark]
    return min(due, default=engine.watermark)


class Combiner:
    """One combine partition: the frames kept until every upstream has reported, then the
    :class:`~detector.stages.combine.CombinePartition` they start (see the module docstring).

    ``now_ms`` (wall clock) of each frame is kept by upstream, for :meth:`advance_idle`.
    """

    def __init__(self, staged: StagedRules, index: int, level: int) -> None:
        self.staged, self.index, self.level = staged, index, level
        self.sources = staged.sources if level == 1 else staged.combiners
        self.early: list[bytes] = []  # frames before every upstream reported
        # What the early frames hold, decoded once each as they come (rebuilt from ``early`` after a
        # restore): re-decoding all of them at every new frame cost time quadratic in the wait for the
        # last upstream (38% of two workers' CPU in a stages_kafka run, 2026-12-07).
        self._early_decoded: list[Frame] | None = []  # every early record, parts too
        self._early_parts = PartsBuffer()
        self._early_whole: list[Frame] = []  # the whole frames among them (parts joined)
        self.partition: CombinePartition | None = None
        self.heard: dict[int, int] = {}  # upstream -> wall-clock ms of its last frame (not in snapshots)

    @property
    def watermark(self) -> int:
        return self.partition.watermark if self.partition is not None else EMPTY

    @property
    def pending(self) -> bool:
        """Evaluations left due (``HEADROOM_MAX_EVALUATIONS_PER_STEP``), as PartitionDetectors.pending."""
        return self.partition is not None and self.partition.evaluations_due

    def catch_up(self) -> PartitionOutput:
        """The next step of the evaluations still due."""
        out = self.partition.step() if self.partition is not None else EngineOutput()
        return PartitionOutput(out, list(out.transitions), notifications=list(out.notifications))

    def receive(self, data: bytes, now_ms: int | None = None) -> EngineOutput:
        """Take one frame (:class:`FrameFormatError` if it is not one for this rule set; nothing kept then)."""
        if self.partition is not None:
            out = self.partition.receive(data)
            if now_ms is not None:
                self.heard[decode_source(data)] = now_ms
            return out
        frame = decode_frame(data)
        if frame.fingerprint != self.staged.plan.fingerprint or frame.sources != self.sources:
            raise FrameFormatError(f"partials frame for another rule set or partitioning (fingerprint {frame.fingerprint:#x}, "
                                   f"{frame.sources} sources; this partition runs {self.staged.plan.fingerprint:#x}, "
                                   f"{self.sources} sources)")
        self._keep_early(data, frame)
        if now_ms is not None:
            self.heard[frame.source] = now_ms
        frames = self._early_whole
        if len({f.source for f in frames}) < self.sources:
            return EngineOutput()  # an upstream that sent only some parts of its frame has not reported
        return self._start(frames)

    def _keep_early(self, data: bytes, frame: Frame) -> None:
        """Keep a frame that came before the start, and what it holds (as :func:`whole_frames` reads them)."""
        self._decoded_early()
        self.early.append(data)
        self._early_decoded.append(frame)  # type: ignore[union-attr]
        try:
            whole = self._early_parts.add(frame, data)
        except FrameFormatError:
            return  # parts that do not make their frame (CRC): it never counts; _start logs it
        if whole is not None:
            self._early_whole.append(whole)

    def _decoded_early(self) -> list[Frame]:
        """The early records decoded (after a restore, decoded here once)."""
        if self._early_decoded is None:
            records, self.early = self.early, []
            self._early_decoded, self._early_parts, self._early_whole = [], PartsBuffer(), []
            for data in records:
                self._keep_early(data, decode_frame(data))
        return self._early_decoded  # type: ignore[return-value]

    def _start(self, frames: list[Frame]) -> EngineOutput:
        # The schedule starts at the first tick any upstream evaluated (a frame's origin), with or
        # without rows for this partition: one engine over all the data starts there too.
        origins = [f.origin for f in frames if f.origin != NO_ORIGIN] + [b.tick for f in frames for b in f.blocks]
        origin = min(origins) if origins else min(f.watermark for f in frames) + 1
        self.partition = self._create(origin)
        out = EngineOutput()
        for early in self.early:
            try:
                step = self.partition.receive(early)
            except FrameFormatError as exc:  # parts that do not make their frame: dropped, as later ones are
                log.error("combine level %d partition %d: dropping a partials frame kept before the start: %s",
                          self.level, self.index, exc)
                continue
            out.transitions += step.transitions
            out.notifications += step.notifications
            out.errors += step.errors
            out.pending = step.pending
        self.early = []
        self._early_decoded, self._early_parts, self._early_whole = [], PartsBuffer(), []
        return out

    def advance_idle(self, now_ms: int, idle_ms: int) -> EngineOutput:
        """An upstream with no frame for ``idle_ms`` (a samples partition quiet in a replay, or owned by
        no live worker) stops holding this partition back: its watermark follows the lowest of those
        upstreams' that sent frames after its last one (:meth:`CombinePartition.presume`). One that
        never reported counts from the first frame here. Its partials for ticks evaluated meanwhile
        are dropped when they come, as late samples; a frame with a newer watermark makes it count again."""
        if idle_ms <= 0 or not self.heard:
            return EngineOutput()
        first = min(self.heard.values())
        heard = {s: self.heard.get(s, first) for s in range(self.sources)}
        silent = [s for s in range(self.sources) if now_ms - heard[s] >= idle_ms]
        if not silent:
            return EngineOutput()
        out = EngineOutput()
        if self.partition is None:
            if not self.early:
                return out
            out = self._start(list(self._decoded_early()))
        partition = self.partition
        follow = {}
        for s in silent:
            later = [o for o in range(self.sources) if heard[o] > heard[s]]
            if later:
                follow[s] = int(partition.watermarks[later].min())  # type: ignore[union-attr]
        if not follow:
            return out
        step = partition.presume(follow)  # type: ignore[union-attr]
        out.transitions += step.transitions
        out.notifications += step.notifications
        out.errors += step.errors
        out.pending = step.pending
        return out

    def take_frames(self) -> dict[int, bytes]:
        return self.partition.take_frames() if self.partition is not None else {}

    def _create(self, origin: int) -> CombinePartition:
        staged, settings = self.staged, self.staged.settings
        deep = staged.plan.levels == 2 and self.level == 1
        return CombinePartition(staged.plan, self.index, staged.combiners, self.sources, start_ms=origin, level=self.level,
                                next_count=staged.combiners if deep else 0, lookback_ms=settings.lookback_ms,
                                resend_delay_ms=settings.resend_delay_ms,
                                max_evaluations_per_step=settings.max_evaluations_per_step)

    def snapshot(self) -> bytes:
        state = self.partition.snapshot_state() if self.partition is not None else None
        return encode({"early": list(self.early), "partition": state}, SNAPSHOT_RECORDS)

    def restore(self, data: bytes) -> None:
        """Load :meth:`snapshot` bytes; :class:`SnapshotError` if they do not fit."""
        state = decode(data, SNAPSHOT_RECORDS)
        if not isinstance(state, dict) or set(state) != {"early", "partition"}:
            raise SnapshotError("corrupt snapshot: not the state of a combine partition")
        self.early = list(state["early"])
        self._early_decoded = None  # decoded at the next frame, or at the start
        if state["partition"] is None:
            self.partition = None
            return
        partition = self._create(0)  # the restored engine carries its own next ticks
        partition.restore_state(dict(state["partition"]))
        self.partition = partition

    def pending_rows(self) -> int:
        if self.partition is None:
            return 0
        return sum(len(p.labels) for parts in self.partition.pending.values() for p in parts.values())


def whole_frames(records: list[bytes]) -> list[Frame]:
    """The frames of ``records`` that are whole, or whose parts have all come (see split_frame)."""
    parts, frames = PartsBuffer(), []
    for data in records:
        try:
            frame = parts.add(decode_frame(data), data)
        except FrameFormatError:
            continue  # parts that do not make their frame (CRC): it never counts; _start logs it
        if frame is not None:
            frames.append(frame)
    return frames


def decode_source(data: bytes) -> int:
    """The upstream partition a frame (already accepted) comes from, read from its header."""
    return int.from_bytes(data[16:20], "little")


class CombineEngines:
    """The combine partitions of one level a worker owns, with the offset of the last frame each folded in.

    The interface :class:`~pipelines.state.StateKeeper` and :class:`~pipelines.worker.Worker`
    use of :class:`~pipelines.engines.PartitionEngines`; "batches" here are frame bytes.
    """

    def __init__(self, staged: StagedRules, level: int, clock: Callable[[], float] = time.time) -> None:
        self.staged, self.level, self.clock = staged, level, clock
        self.engines: dict[int, Combiner] = {}
        self.offsets: dict[int, int] = {}
        self.unreadable = 0  # frames skipped as unreadable, since start

    def start_empty(self, partition: int, offset: int | None = None) -> Combiner:
        combiner = self.engines[partition] = Combiner(self.staged, partition, self.level)
        if offset is not None:
            self.offsets[partition] = offset
        return combiner

    def restore(self, partition: int, snapshot: bytes, offset: int) -> bool:
        combiner = Combiner(self.staged, partition, self.level)
        try:
            combiner.restore(snapshot)
        except SnapshotError as exc:
            log.error("combine partition %d: cannot load its snapshot at offset %d, starting empty: %s", partition, offset, exc)
            self.start_empty(partition)
            return False
        self.engines[partition] = combiner
        self.offsets[partition] = offset
        return True

    def snapshot(self, partition: int) -> tuple[int, bytes] | None:
        combiner, offset = self.engines.get(partition), self.offsets.get(partition)
        if combiner is None or offset is None:
            return None
        try:
            return offset, combiner.snapshot()
        except SnapshotError as exc:
            log.error("combine partition %d: cannot snapshot its state: %s", partition, exc)
            return None

    def folded(self, partition: int, offset: int) -> bool:
        return offset <= self.offsets.get(partition, -1)

    def gap_before(self, partition: int, offset: int) -> bool:
        last = self.offsets.get(partition)
        return last is not None and offset > last + 1

    def skip(self, partition: int, offset: int) -> None:
        if partition in self.engines:
            self.offsets[partition] = offset

    def ingest(self, partition: int, frame: bytes, offset: int | None = None) -> PartitionOutput:
        """Fold in one frame. One that is not a frame of this rule set is logged, counted in
        ``unreadable`` and skipped (nothing of it kept), never a crash: also in a catch-up."""
        combiner = self.engines.get(partition)
        if combiner is None:
            combiner = self.start_empty(partition)
        try:
            out = combiner.receive(frame, int(self.clock() * 1000))
        except FrameFormatError as exc:
            self.unreadable += 1
            log.error("combine level %d partition %d: skipping unreadable partials frame at offset %s: %s",
                      self.level, partition, offset, exc)
            out = EngineOutput()
        if offset is not None:
            self.offsets[partition] = offset
        return PartitionOutput(out, list(out.transitions), notifications=list(out.notifications))

    def take_frames(self, partition: int) -> dict[int, bytes]:
        """Frames for the second combine level, by partition (empty without one)."""
        combiner = self.engines.get(partition)
        return combiner.take_frames() if combiner is not None else {}

    def catch_up(self, partition: int) -> None:
        """Every evaluation left due, at once (the state keeper's replay; the worker runs steps that yield)."""
        combiner = self.engines.get(partition)
        while combiner is not None and combiner.pending:
            combiner.catch_up()

    def advance_idle(self) -> dict[int, PartitionOutput]:
        """A combine partition follows its upstreams' watermarks, never the wall clock; but an
        upstream silent for ``HEADROOM_IDLE_ADVANCE`` follows the others (:meth:`Combiner.advance_idle`)."""
        now_ms, idle_ms = int(self.clock() * 1000), self.staged.settings.idle_advance_ms
        if idle_ms > 0:
            # A live upstream sends a frame only once its watermark passes a tick: never call it silent
            # before the longest staged interval has passed as well.
            idle_ms += max((g.group.interval_ms for g in self.staged.plan.groups if not g.is_global), default=0)
        outputs = {}
        for partition, combiner in self.engines.items():
            out = combiner.advance_idle(now_ms, idle_ms)
            if out.transitions or out.notifications or out.errors or out.pending:
                outputs[partition] = PartitionOutput(out, list(out.transitions), notifications=list(out.notifications))
        return outputs

    def is_live(self, partition: int) -> bool:
        combiner = self.engines.get(partition)
        return combiner is not None and combiner.watermark != EMPTY and is_live(combiner.watermark, int(self.clock() * 1000))

    def reclassify(self) -> int:
        return 0

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.engines.pop(partition, None)
            self.offsets.pop(partition, None)


__all__ = ["CombineEngines", "Combiner", "Stage1Engines", "StagedRules", "evaluated_through", "global_lane_placement"]
