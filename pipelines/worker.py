"""What the worker does with one message, without Kafka: decode, detect, and say what goes out.

:class:`Worker` owns the partitions' detectors of both lanes (target
partitions and the one-partition global lane, see :mod:`pipelines.app`), the
worker's metrics and per-series gauges. :meth:`Worker.handle` takes one
decoded message position (lane, partition, offset) and its value, and returns
an :class:`Outgoing`: the records to produce per topic, the notifications for
the sinks, and the partitions whose snapshot is due. The Faust shell
(:func:`pipelines.app.create_app`) only moves messages in and out; so every
decision here is unit-tested with a fake clock.

>>> from detector.promql import compile_expr
>>> from detector.rules import AlertingRule, RuleGroup
>>> from detector.wire.batch import SampleBatch
>>> from pipelines.settings import Settings
>>> t0 = 1_700_000_010_000  # a multiple of the 15 s interval: evaluated at once
>>> rule = AlertingRule("Down", compile_expr("up == 0"), "up == 0")
>>> one_shard = Settings(start_wait="0s")  # else a new partition waits 10 s for other sender shards
>>> worker = Worker(one_shard, [RuleGroup("g", "inline", 15_000, (rule,))], clock=lambda: t0 / 1000)
>>> up = (("__name__", "up"), ("job", "api"))
>>> out = worker.handle("headroom-samples", 0, 0, SampleBatch.from_series([(up, [(t0, 0.0)])]).encode())
>>> [len(out.records[topic]) for topic in sorted(out.records)], len(out.notifications)
([1], 1)
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from detector.errors import BatchFormatError
from detector.output.alerts import AlertNotification
from detector.partition import PartitionOutput
from detector.rules import RuleGroup
from detector.stages.frames import FRAME_TARGET_BYTES, split_frame
from detector.wire.batch import SampleBatch
from detector.wire.metadata import MetricTypes
from pipelines.engines import PartitionEngines
from pipelines.gauges import DetectorGauges
from pipelines.limits import LimitReport
from pipelines.snapshot_schedule import SnapshotSchedule
from pipelines.settings import Settings
from pipelines.stages import CombineEngines, Stage1Engines, StagedRules, global_lane_placement

log = logging.getLogger("headroom.worker")

Record = tuple[bytes | None, bytes]  # (key, value) of one Kafka record


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.samples = Counter("headroom_worker_samples", "Samples consumed from Kafka", registry=registry)
        self.messages = Counter("headroom_worker_batches", "Sample batches consumed", registry=registry)
        self.folds = Counter("headroom_worker_folds", "Groups of one partition's sample batches folded in at once "
                             "(one per batch unless a backlog is read)", registry=registry)
        self.bad_messages = Counter("headroom_worker_unreadable_batches", "Messages that are not sample batches", registry=registry)
        self.dropped = Counter("headroom_worker_dropped_samples", "Samples dropped as duplicate or out of order", ["reason"], registry=registry)
        self.late = Counter("headroom_worker_late_samples", "Samples older than an evaluation already made", registry=registry)
        self.anomalies = Counter("headroom_anomalous_samples", "Samples scored at or above the anomaly threshold", registry=registry)
        self.transitions = Counter("headroom_alert_transitions", "Alert state changes", ["state"], registry=registry)
        self.eval_errors = Counter("headroom_rule_evaluation_failures", "Failed rule evaluations", registry=registry)
        self.metric_types = Gauge("headroom_metric_types_known", "Metric families with a type from the senders' metadata", registry=registry)
        self.reclassified = Counter("headroom_series_reclassified", "Scored series whose counter-ness changed with new metadata", registry=registry)
        self.retired = Counter("headroom_retired_series", "Stale series whose anomaly and forecast state was freed", registry=registry)
        self.event_time = Gauge("headroom_worker_watermark_seconds", "Newest evaluated event time", ["lane"], registry=registry)
        self.duplicates = Counter("headroom_worker_duplicate_transitions_suppressed",
                                  "Alert transitions not written again after a takeover: the previous owner wrote them",
                                  registry=registry)
        # Staged rules (pipelines.stages): what each combine partition this worker owns has taken in.
        self.partial_rows = Gauge("headroom_combine_partial_rows", "Partial rows a combine partition took in",
                                  ["lane", "partition"], registry=registry)
        self.duplicate_rows = Gauge("headroom_combine_duplicate_rows",
                                    "Partial rows a combine partition received again and dropped (redelivery, replay)",
                                    ["lane", "partition"], registry=registry)
        self.pending_rows = Gauge("headroom_combine_pending_rows",
                                  "Partial rows a combine partition holds for ticks not evaluated yet (set every second)",
                                  ["lane", "partition"], registry=registry)
        # The thread's CPU inside Worker.handle (decode, fold, the evaluations a message made due, partials
        # encoded): the rest of the process's CPU is Kafka, Faust, the event loop, timers and /metrics.
        self.fold_cpu = Counter("headroom_worker_fold_cpu_seconds", "CPU spent folding messages in, by lane (topic)",
                                ["lane"], registry=registry)
        self.frames = Counter("headroom_partial_frames", "Partials frames produced, by topic", ["topic"], registry=registry)
        # What snapshots cost (pipelines.snapshot_schedule keeps them near HEADROOM_SNAPSHOT_CPU_SHARE of the work).
        self.snapshots = Counter("headroom_snapshots", "Partition snapshots taken", ["lane"], registry=registry)
        self.snapshot_cpu = Counter("headroom_snapshot_cpu_seconds", "CPU spent taking partition snapshots (capture, encode, compress)",
                                    ["lane"], registry=registry)


@dataclass
class Outgoing:
    """What one message (or one idle tick) sends on.

    ``records``: Kafka records by topic, in the order to produce them;
    ``notifications``: for the sinks (live data only); ``snapshots``:
    ``(lane, partition)`` whose snapshot is due, to take after the records are sent;
    ``to_partitions``: ``(topic, partition, value)`` records for a given partition
    (partials frames, staged rules), produced before the snapshots too.
    """

    records: dict[str, list[Record]] = field(default_factory=dict)
    to_partitions: list[tuple[str, int, bytes]] = field(default_factory=list)
    notifications: list[AlertNotification] = field(default_factory=list)
    snapshots: list[tuple[str, int]] = field(default_factory=list)

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.records.setdefault(topic, []).append((key, value))

    def extend(self, other: Outgoing) -> None:
        for topic, records in other.records.items():
            self.records.setdefault(topic, []).extend(records)
        self.notifications += other.notifications
        self.snapshots += other.snapshots
        self.to_partitions += other.to_partitions

    def __bool__(self) -> bool:
        return bool(self.records or self.notifications or self.snapshots or self.to_partitions)


class Worker:
    """The detectors of every partition this worker owns, fed one message at a time (see the module doc).

    ``clock``: wall-clock seconds (idle advance, liveness); ``monotonic``:
    seconds for the snapshot schedule; ``cpu_clock``: this thread's CPU seconds,
    for the schedule's budget. All default to the real clocks.
    """

    def __init__(
        self,
        settings: Settings,
        groups: list[RuleGroup],
        *,
        registry: CollectorRegistry | None = None,
        metric_types: MetricTypes | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.settings = settings
        self.metrics = WorkerMetrics(registry if registry is not None else CollectorRegistry())
        self.limits = LimitReport(self.metrics.registry, settings)  # counters and log lines of pipelines/limits.py
        self.gauges = DetectorGauges()  # latest score and forecast per series, for dashboards (appended to /metrics)
        self.metric_types = metric_types if metric_types is not None else MetricTypes()
        # With staged rules the samples partitions are stage 1 and each combine level is a lane
        # of its own (pipelines.stages); only what the stages cannot separate stays global.
        self.staged = StagedRules(settings, groups) if settings.staged_rules else None
        self.placement = self.staged.placement() if self.staged is not None else global_lane_placement(settings, groups)
        if self.staged is None and self.placement.global_:
            self._say_global_lane(groups)
        samples = (
            Stage1Engines(self.staged, settings, clock, metric_types=self.metric_types) if self.staged is not None
            else PartitionEngines(self.placement.local, settings, clock, metric_types=self.metric_types)
        )
        self.lanes: dict[str, PartitionEngines | CombineEngines] = {
            settings.samples_topic: samples,
            settings.global_samples_topic: PartitionEngines(self.placement.global_, settings, clock, detectors=False),
        }
        self.frame_max_bytes = FRAME_TARGET_BYTES
        if self.staged is not None:
            for level, topic in enumerate(self.staged.topics, start=1):
                self.lanes[topic] = CombineEngines(self.staged, level, clock)
        self.monotonic = monotonic
        self.cpu_clock = cpu_clock
        self.snapshots = SnapshotSchedule(settings.snapshot_interval_s, settings.snapshot_max_interval_s,
                                          settings.snapshot_cpu_share, monotonic)
        self._sent_before: dict[tuple[str, int], set[tuple[str, str, int]]] = {}  # see already_sent

    def _say_global_lane(self, groups: list[RuleGroup]) -> None:
        """Log, at start-up, how much of the rule set the one-partition global lane runs (staging off): the
        worker that owns it is where such a deployment saturates first, and one setting spreads it."""
        in_lane = sum(len(g.rules) for g in self.placement.global_)
        log.warning("%d of %d rules (%d of %d groups) combine series across scrape targets and run in the global "
                    "lane, one partition on one worker; HEADROOM_STAGED_RULES=true spreads them over the partitions "
                    "(README, staged rules)", in_lane, sum(len(g.rules) for g in groups), len(self.placement.global_),
                    len(groups))

    @property
    def has_global_lane(self) -> bool:
        return bool(self.placement.global_)

    def assign(self, lane: str, partitions: Iterable[int]) -> None:
        """Partitions the consumer group assigned here (staged rules: quiet ones still send watermarks)."""
        engines = self.lanes.get(lane)
        if isinstance(engines, Stage1Engines):
            engines.assign(set(partitions))

    def assigned(self, lane: str, partition: int) -> bool:
        """Whether the partition has detectors here (restored or started); else restore it before :meth:`handle`."""
        return partition in self.lanes[lane].engines

    def gap_before(self, lane: str, partition: int, offset: int) -> bool:
        """Whether messages before ``offset`` are missing from the partition's state (to catch up first)."""
        return self.lanes[lane].gap_before(partition, offset)

    def holding_back(self, lane: str, partition: int) -> bool:
        """Whether transitions the partition's previous owner wrote are still expected again (see :meth:`already_sent`)."""
        return (lane, partition) in self._sent_before

    @property
    def combine_lanes(self) -> tuple[str, ...]:
        """The partials topics this worker consumes (staged rules), by combine level."""
        return self.staged.topics if self.staged is not None else ()

    def decode(self, lane: str, partition: int, offset: int, value: bytes) -> SampleBatch | bytes | None:
        """The batch in a message (a partials frame stays bytes: the combine partition reads it);
        an unreadable one is logged and counted, and gives None."""
        if lane in self.combine_lanes:
            return value
        try:
            return SampleBatch.decode(value)
        except BatchFormatError as exc:
            self.metrics.bad_messages.inc()
            log.error("skipping unreadable message at %s[%d]@%d: %s", lane, partition, offset, exc)
            return None

    def handle(self, lane: str, partition: int, offset: int, value: bytes | SampleBatch) -> Outgoing:
        """Fold in the message at ``lane[partition]@offset`` (its bytes, or the batch already decoded)."""
        engines = self.lanes[lane]
        if engines.folded(partition, offset):
            return Outgoing()  # delivered again after a restart, already in the restored state
        started = self.cpu_clock()
        outgoing = self._handle(engines, lane, partition, offset, value)
        if outgoing is None:
            return Outgoing()  # unreadable: skipped and counted, nothing folded in
        spent = self.cpu_clock() - started
        self.snapshots.work((lane, partition), spent)
        self.metrics.fold_cpu.labels(lane).inc(spent)
        if self._snapshot_due(lane, partition):
            outgoing.snapshots.append((lane, partition))
        return outgoing

    def handle_many(self, lane: str, partition: int, messages: Sequence[tuple[int, bytes | SampleBatch]]) -> Outgoing:
        """:meth:`handle` for consecutive ``(offset, value)`` messages of one partition, folded in as one
        batch, as the receiver's coalescer would have sent them had they come together.

        Scores and forecasts run in numpy passes of one sample per series each, whose fixed cost
        dominates on a message's few hundred series; a backlog's messages of one partition taken
        together make the passes longer and fewer (a catch-up's 10 samples per series: 10 passes
        for the whole run instead of 10 per message). Partials frames are folded one by one, and a
        caller should hand them over singly, running :meth:`catch_up` after each: a combine
        partition must run the evaluations a frame left due before it reads the next.
        """
        if len(messages) == 1 or lane in self.combine_lanes:
            outgoing = Outgoing()
            for offset, value in messages:
                outgoing.extend(self.handle(lane, partition, offset, value))
            return outgoing
        engines = self.lanes[lane]
        fresh = [(offset, value) for offset, value in messages if not engines.folded(partition, offset)]
        if not fresh:
            return Outgoing()
        batches = [value if isinstance(value, SampleBatch) else self.decode(lane, partition, offset, value)
                   for offset, value in fresh]
        readable = [batch for batch in batches if batch is not None]
        last = fresh[-1][0]
        if not readable:
            engines.skip(partition, last)
            return Outgoing()
        outgoing = self.handle(lane, partition, last, SampleBatch.concat(readable))
        self.metrics.messages.inc(len(readable) - 1)  # handle() counted the merged batch as one
        return outgoing

    def _handle(self, engines: PartitionEngines | CombineEngines, lane: str, partition: int, offset: int,
                value: bytes | SampleBatch) -> Outgoing | None:
        if lane in self.combine_lanes:
            return self._combine(lane, partition, offset, value)  # type: ignore[arg-type]
        batch = value if isinstance(value, SampleBatch) else self.decode(lane, partition, offset, value)
        if batch is None:
            engines.skip(partition, offset)
            return None
        out = engines.ingest(partition, batch, offset=offset)
        self.metrics.messages.inc()
        self.metrics.folds.inc()
        self.metrics.samples.inc(len(batch))
        self.metrics.dropped.labels("duplicate").inc(out.engine.duplicates)
        self.metrics.dropped.labels("out_of_order").inc(out.engine.out_of_order)
        self.metrics.late.inc(out.engine.late)
        outgoing = self._outgoing(lane, partition, out)
        if isinstance(engines, Stage1Engines):
            self._send_partials(engines, partition, outgoing)
        return outgoing

    def _combine(self, lane: str, partition: int, offset: int, value: bytes) -> Outgoing | None:
        """Fold a partials frame into a combine partition; its alerts go out as a samples lane's do."""
        engines = self.lanes[lane]
        unreadable = engines.unreadable
        out = engines.ingest(partition, value, offset=offset)
        if engines.unreadable > unreadable:
            self.metrics.bad_messages.inc()
            return None
        self.metrics.messages.inc()
        outgoing = self._outgoing(lane, partition, out)
        self._send_deeper(lane, partition, outgoing)
        combiner = engines.engines.get(partition)
        if combiner is not None and combiner.partition is not None:
            key = (lane, str(partition))
            self.metrics.partial_rows.labels(*key).set(combiner.partition.rows_received)
            self.metrics.duplicate_rows.labels(*key).set(combiner.partition.duplicate_rows)
            # pending_rows counts every row held: on the 1 s timer (advance_idle), not per frame.
        return outgoing

    def _send_partials(self, engines: Stage1Engines, partition: int, outgoing: Outgoing) -> None:
        """A stage-1 partition's frames due now, if there is a combine stage (see StagedRules.topics)."""
        if self.staged is not None and self.staged.topics:
            self._send_frames(self.staged.topics[0], engines.frames(partition), outgoing)

    def _send_frames(self, topic: str, frames: dict[int, bytes], outgoing: Outgoing) -> None:
        for dest, frame in sorted(frames.items()):
            parts = split_frame(frame, self.frame_max_bytes)  # e.g. many ticks at once in a catch-up, or many groups
            outgoing.to_partitions += [(topic, dest, part) for part in parts]
            self.metrics.frames.labels(topic).inc(len(parts))

    async def catch_up(self, lane: str, partition: int, send: Callable[[Outgoing], Awaitable[None]]) -> int:
        """Run the evaluations a message left due (``HEADROOM_MAX_EVALUATIONS_PER_STEP`` per step),
        yielding to the event loop before each step so ``/metrics``, timers, snapshots and other
        partitions go on; each step's output goes to ``send``. Returns the steps run.

        Stops when the partition is revoked (or restored anew) during a yield: no longer ours."""
        engine = self.lanes[lane].engines.get(partition)
        steps = 0
        while engine is not None and engine.pending:
            await asyncio.sleep(0)
            if self.lanes[lane].engines.get(partition) is not engine:
                break
            out = engine.catch_up()
            steps += 1
            self.limits.steps.inc()
            outgoing = self._outgoing(lane, partition, out)
            engines = self.lanes[lane]
            if isinstance(engines, Stage1Engines):  # each step's partials, as after a message
                self._send_partials(engines, partition, outgoing)
            self._send_deeper(lane, partition, outgoing)
            await send(outgoing)
        return steps

    def advance_idle(self) -> Outgoing:
        """Evaluate quiet live partitions on wall-clock time; what that sends (the 1 s timer's work).

        With staged rules every stage-1 partition also sends its new watermark, if it moved
        (a quiet one too), so the combine partitions never wait for it for ever."""
        outgoing = Outgoing()
        for lane, engines in self.lanes.items():
            for partition, out in engines.advance_idle().items():
                outgoing.extend(self._outgoing(lane, partition, out))
            if isinstance(engines, Stage1Engines):
                for partition in sorted(engines.engines):
                    self._send_partials(engines, partition, outgoing)
            if isinstance(engines, CombineEngines):  # an upstream silent for HEADROOM_IDLE_ADVANCE stopped holding it
                for partition in sorted(engines.engines):
                    self._send_deeper(lane, partition, outgoing)
                    combiner = engines.engines[partition]
                    if combiner.partition is not None:
                        self.metrics.pending_rows.labels(lane, str(partition)).set(combiner.pending_rows())
        return outgoing

    def _send_deeper(self, lane: str, partition: int, outgoing: Outgoing) -> None:
        """A first combine level's frames for the second, if the plan has one."""
        if self.staged is not None and self.staged.level_of(lane) == 1 and len(self.staged.topics) == 2:
            self._send_frames(self.staged.topics[1], self.lanes[lane].take_frames(partition), outgoing)  # type: ignore[union-attr]

    def learned_types(self, families: set[str]) -> None:
        """New metric types from the metadata topic: rescore the series whose counter-ness changed."""
        self.metrics.metric_types.set(len(self.metric_types))
        self.metrics.reclassified.inc(self.lanes[self.settings.samples_topic].reclassify())  # type: ignore[union-attr]
        log.info("learned the types of %d metric families (%d known)", len(families), len(self.metric_types))

    def already_sent(self, lane: str, partition: int, sent: Iterable[tuple[str, str, int]]) -> None:
        """Alert transitions, as (fingerprint, state, evaluation time), that a partition's previous owner
        wrote after the snapshot it was restored from: re-ingesting the same messages from the same
        state makes them again, and they are not written twice (:mod:`pipelines.state`)."""
        sent = set(sent)
        if sent:
            self._sent_before[(lane, partition)] = sent
        else:
            self._sent_before.pop((lane, partition), None)

    def forget(self, lane: str, partitions: Iterable[int]) -> None:
        """Drop partitions this worker no longer owns (after their last snapshot)."""
        partitions = set(partitions)
        self.lanes[lane].forget(partitions)
        self.gauges.forget(lane, partitions)
        for partition in partitions:
            self.snapshots.forget((lane, partition))
            self._sent_before.pop((lane, partition), None)
            if lane in self.combine_lanes:  # another worker reports it now
                for gauge in (self.metrics.partial_rows, self.metrics.duplicate_rows, self.metrics.pending_rows):
                    try:
                        gauge.remove(lane, str(partition))
                    except KeyError:
                        pass

    def _snapshot_due(self, lane: str, partition: int) -> bool:
        """After a partition's first message here (offsets are committed only up to a snapshot, so the
        first one should not wait), then as :mod:`pipelines.snapshot_schedule` says."""
        return self.settings.snapshot_interval_s > 0 and self.snapshots.due((lane, partition), self._held(lane, partition))

    def _held(self, lane: str, partition: int) -> int:
        """Series a partition's detectors hold (what its snapshot's cost grows with); 0 for a combine
        partition, whose state is a few ticks of partial rows."""
        store = getattr(self.lanes[lane].engines.get(partition), "store", None)
        return len(store) if store is not None else 0

    def snapshot_taken(self, lane: str, partition: int, cpu_s: float) -> None:
        """What a partition's snapshot cost (the state keeper tells), for the schedule's budget."""
        self.snapshots.taken((lane, partition), cpu_s)
        self.metrics.snapshots.labels(lane).inc()
        self.metrics.snapshot_cpu.labels(lane).inc(cpu_s)

    def _outgoing(self, lane: str, partition: int, out: PartitionOutput) -> Outgoing:
        settings, metrics = self.settings, self.metrics
        outgoing = Outgoing()
        engine = self.lanes[lane].engines.get(partition)
        if engine is not None:
            metrics.event_time.labels(f"{lane}/{partition}").set(engine.watermark / 1000)
        metrics.retired.inc(out.retired)
        self.limits.record(lane, partition, out)
        for error in out.engine.errors:
            metrics.eval_errors.inc()
            log.warning("rule evaluation failed: %s", error)
        sent = self._sent_before.get((lane, partition))
        for transition in out.transitions:
            if sent and (transition.fingerprint, transition.state, transition.eval_time) in sent:
                metrics.duplicates.inc()
                continue
            metrics.transitions.labels(transition.state).inc()
            log.warning("alert %s", transition.describe())
            outgoing.add(settings.alerts_topic, transition.fingerprint.encode(), transition.to_json())
        if sent and engine is not None and not engine.pending and engine.watermark > max(t for _, _, t in sent):
            del self._sent_before[(lane, partition)]  # evaluated past them all (no step left due): none can come again
        for score in out.scores:
            metrics.anomalies.inc()
            outgoing.add(settings.scores_topic, None, _json(score.to_dict()))
        for forecast in out.forecasts:
            outgoing.add(settings.forecasts_topic, forecast.key, _json(forecast.to_dict()))
        self.gauges.update(lane, partition, out)
        # Alertmanager judges endsAt on its own clock: a replay of old data
        # would arrive already expired, so only live partitions notify
        # (rule alerts and early warnings alike).
        if out.notifications and self.lanes[lane].is_live(partition):
            outgoing.notifications = list(out.notifications)
        return outgoing


def _json(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
