"""The Faust app: the samples topic in; the alerts, scores and forecasts topics out.

Alert notifications (rules and early warnings) go to Alertmanager for live
data only; the latest score and forecast of every series are gauges on
``/metrics`` (:mod:`pipelines.gauges`).

Partitioning (the choice DESIGN.md asks to write down): the receiver puts a
series in the partition of its scrape target (``job``, ``instance``), see
:func:`detector.labels.partition_key`. Each partition has its own
:class:`~detector.rules.RuleEngine` (store, watermark, alert state), so every
expression over the series of one target, such as a queue's depth over its
max depth or a histogram's buckets, is evaluated where all its inputs are.
Groups with expressions across targets run in the global lane: a
one-partition topic that receives a copy of their input series
(:mod:`detector.rules.placement`).

A partition that stops receiving samples evaluates on wall-clock time once it
has been quiet for ``HEADROOM_IDLE_ADVANCE`` (live data only), so its alerts
still resolve when a sender dies.

Engine state (store, alert states and ``for`` clocks, anomaly models,
forecasts) lives with its partition: it is snapshotted to a compacted Kafka
topic every ``HEADROOM_SNAPSHOT_INTERVAL`` and on revoke and shutdown, and
after a worker restart or a rebalance it is restored, then caught up from the
samples topic, before the partition's next message is ingested
(:mod:`pipelines.state`). With ``HEADROOM_SNAPSHOT_INTERVAL=0s`` a partition
starts empty from the committed offset, as a Prometheus without state restore.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import faust
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from detector.wire.batch import SampleBatch
from detector.errors import BatchFormatError
from detector.wire.metadata import MetricTypes
from detector.partition import PartitionDetectors, PartitionOutput
from detector.snapshot import SnapshotError
from detector.rules import RuleGroup
from detector.rules.engine import idle_watermark, is_live
from detector.rules.placement import place_groups
from pipelines import faust_transport
from pipelines.gauges import DetectorGauges
from pipelines.limits import LimitReport
from pipelines.metadata_feed import MetadataFeed
from pipelines.notifier import Notifier
from pipelines.settings import Settings
from pipelines.state import SnapshotTopic, StateKeeper

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

    def _options(self) -> dict:
        options = {
            "lookback_ms": self.settings.lookback_ms,
            "lateness_ms": self.settings.lateness_ms,
            "resend_delay_ms": self.settings.resend_delay_ms,
            **self.settings.engine_limits(),  # pipelines/limits.py
        }
        return {
            "engine_options": options,
            "scores": self.detectors and self.settings.anomaly_scores,
            "forecasts": self.detectors and self.settings.forecasts,
            "metric_types": self.metric_types,
            "models": self.models,
        }

    def start_empty(self, partition: int) -> PartitionDetectors:
        self._last_ingest_ms[partition] = int(self.clock() * 1000)
        engine = self.engines[partition] = PartitionDetectors(self.groups, **self._options())
        return engine

    def restore(self, partition: int, snapshot: bytes, offset: int) -> bool:
        """Restore a partition from a snapshot taken at ``offset``; one that cannot be
        loaded is logged and the partition starts empty (never a crash)."""
        try:
            self.engines[partition] = PartitionDetectors.restore(snapshot, self.groups, **self._options())
        except SnapshotError as exc:
            log.error("partition %d: cannot load its snapshot at offset %d, starting empty: %s", partition, offset, exc)
            self.start_empty(partition)
            return False
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
        self._last_ingest_ms[partition] = int(self.clock() * 1000)
        out = engine.ingest(batch)
        if offset is not None:
            # Set before any await: a snapshot taken meanwhile (revoke, shutdown) pairs
            # this state with this offset.
            self.offsets[partition] = offset
        return out

    def advance_idle(self) -> dict[int, PartitionOutput]:
        """Evaluate quiet partitions on wall-clock time (see :func:`idle_watermark`)."""
        now_ms = int(self.clock() * 1000)
        outputs = {}
        for partition, engine in self.engines.items():
            rules = engine.rules
            watermark = idle_watermark(rules.newest, self._last_ingest_ms[partition], now_ms, self.settings.idle_advance_ms)
            if watermark is not None:
                outputs[partition] = engine.advance_to(watermark)
        return outputs

    def is_live(self, partition: int) -> bool:
        engine = self.engines.get(partition)
        return engine is not None and is_live(engine.rules.newest, int(self.clock() * 1000))

    def reclassify(self) -> int:
        """Apply newly learned metric types in every partition; returns how many series changed."""
        return sum(engine.reclassify() for engine in self.engines.values())

    def forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.engines.pop(partition, None)
            self.offsets.pop(partition, None)
            self._last_ingest_ms.pop(partition, None)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.samples = Counter("headroom_worker_samples", "Samples consumed from Kafka", registry=registry)
        self.messages = Counter("headroom_worker_batches", "Sample batches consumed", registry=registry)
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


def create_app(settings: Settings, groups: list[RuleGroup], registry: CollectorRegistry | None = None) -> faust.App:
    app = faust.App(
        settings.app_id,
        broker=f"{faust_transport.SCHEME}://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_port=settings.worker_web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
    )
    alerts = app.topic(settings.alerts_topic, partitions=1, value_serializer="raw", key_serializer="raw")
    scores_topic = app.topic(settings.scores_topic, partitions=1, value_serializer="raw")
    forecasts_topic = app.topic(settings.forecasts_topic, partitions=1, value_serializer="raw", key_serializer="raw")
    placement = place_groups(groups, settings.partition_by)
    metrics = WorkerMetrics(registry or CollectorRegistry())
    limits = LimitReport(metrics.registry, settings)
    gauges = DetectorGauges()  # latest score and forecast per series, for dashboards (appended to /metrics)
    notifier = Notifier.from_settings(
        settings.alertmanager_urls, settings.webhook_urls, settings.external_url, settings.external_labels, metrics.registry
    )
    metric_types = MetricTypes()
    lanes = {
        settings.samples_topic: PartitionEngines(placement.local, settings, metric_types=metric_types),
        settings.global_samples_topic: PartitionEngines(placement.global_, settings, detectors=False),
    }

    def decode(topic: str, partition: int, offset: int, value: bytes) -> SampleBatch | None:
        try:
            return SampleBatch.decode(value)
        except BatchFormatError as exc:
            metrics.bad_messages.inc()
            log.error("skipping unreadable message at %s[%d]@%d: %s", topic, partition, offset, exc)
            return None

    keeper = None
    if settings.snapshot_interval_s > 0:
        state_topic = SnapshotTopic(settings.kafka_bootstrap, settings.state_topic, settings.samples_topic,
                                    settings.partitions, settings.snapshot_max_bytes, settings.app_id)
        keeper = StateKeeper(state_topic, lanes, decode, settings.snapshot_interval_s, flush=lambda: app.producer.flush())

    async def evaluate(stream: faust.StreamT) -> None:
        async for event in stream.events():
            topic, partition, offset = event.message.topic, event.message.partition, event.message.offset
            engines = lanes[topic]
            if keeper is not None and partition not in engines.engines:
                await keeper.recover(topic, partition, offset)  # before this message is ingested
            if engines.folded(partition, offset):
                continue  # delivered again after a restart, already in the restored state
            batch = decode(topic, partition, offset, event.value)
            if batch is None:
                continue
            out = engines.ingest(partition, batch, offset=offset)
            metrics.messages.inc()
            metrics.samples.inc(len(batch))
            metrics.dropped.labels("duplicate").inc(out.engine.duplicates)
            metrics.dropped.labels("out_of_order").inc(out.engine.out_of_order)
            metrics.late.inc(out.engine.late)
            await publish(topic, partition, out)
            await limits.after_message(topic, partition, engines, out, publish)  # counts; runs what is still due, yielding
            if keeper is not None:
                await keeper.maybe_save(topic, partition)

    # One agent per lane: target partitions, and the one-partition global lane
    # for groups that combine series across targets (detector.rules.placement).
    app.agent(app.topic(settings.samples_topic, partitions=settings.partitions, value_serializer="raw"), name="headroom.rules")(evaluate)
    if placement.global_:
        app.agent(app.topic(settings.global_samples_topic, partitions=1, value_serializer="raw"), name="headroom.global-rules")(evaluate)

    @app.timer(interval=1.0)
    async def evaluate_quiet_partitions() -> None:
        for topic, engines in lanes.items():
            for partition, out in engines.advance_idle().items():
                await publish(topic, partition, out)

    async def publish(topic: str, partition: int, out: PartitionOutput) -> None:
        engine = lanes[topic].engines.get(partition)
        if engine is not None:
            metrics.event_time.labels(f"{topic}/{partition}").set(engine.rules.watermark / 1000)
        metrics.retired.inc(out.retired)
        for error in out.engine.errors:
            metrics.eval_errors.inc()
            log.warning("rule evaluation failed: %s", error)
        for transition in out.transitions:
            metrics.transitions.labels(transition.state).inc()
            log.warning("alert %s", transition.describe())
            await alerts.send(key=transition.fingerprint.encode(), value=transition.to_json())
        for score in out.scores:
            metrics.anomalies.inc()
            await scores_topic.send(value=json.dumps(score.to_dict(), separators=(",", ":")).encode())
        for forecast in out.forecasts:
            await forecasts_topic.send(key=forecast.key, value=json.dumps(forecast.to_dict(), separators=(",", ":")).encode())
        gauges.update(topic, partition, out)
        # Alertmanager judges endsAt on its own clock: a replay of old data
        # would arrive already expired, so only live partitions notify
        # (rule alerts and early warnings alike).
        if out.notifications and lanes[topic].is_live(partition):
            notifier.enqueue(out.notifications)

    def types_changed(families: set[str]) -> None:
        metrics.metric_types.set(len(metric_types))
        metrics.reclassified.inc(lanes[settings.samples_topic].reclassify())
        log.info("learned the types of %d metric families (%d known)", len(families), len(metric_types))

    metadata_feed = MetadataFeed(settings.kafka_bootstrap, settings.metadata_topic, metric_types, types_changed)

    @app.task
    async def follow_metadata() -> None:
        await metadata_feed.run()

    @app.task
    async def start_notifier() -> None:
        await notifier.start()

    @app.task
    async def start_state() -> None:
        if keeper is not None:
            await keeper.topic.start()

    @app.on_before_shutdown.connect
    async def stop_notifier(app: faust.App, **_: object) -> None:
        await notifier.stop()

    @app.on_before_shutdown.connect
    async def save_state(app: faust.App, **_: object) -> None:
        if keeper is not None:
            await keeper.save_all()
            await keeper.topic.stop()

    @app.on_partitions_revoked.connect
    async def drop_revoked(app: faust.App, revoked: set, **_: object) -> None:
        for topic, engines in lanes.items():
            partitions = {tp.partition for tp in revoked if tp.topic == topic}
            if keeper is not None and partitions:
                await keeper.save(topic, partitions)  # so the next owner resumes from here
            engines.forget(partitions)
            gauges.forget(topic, partitions)

    @app.page("/metrics")
    async def metrics_page(web, request):  # noqa: ANN001 - Faust's view signature
        # ?name[]=... restricts the families, as prometheus-client's own handler
        # does: a poller of the worker's counters need not render 10k series.
        names = request.query.getall("name[]", [])
        registry = metrics.registry.restricted_registry(names) if names else metrics.registry
        body = generate_latest(registry) + gauges.exposition(names or None).encode()
        # aiohttp refuses a charset inside content_type; the text format's content type is enough.
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4")

    return app

