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

With ``HEADROOM_STAGED_RULES`` (off by default) such groups are evaluated in two
stages instead (:mod:`detector.stages`, :mod:`pipelines.stages`): each samples
partition sends partial aggregates to a partials topic of
``HEADROOM_COMBINE_PARTITIONS`` partitions, whose combine partitions, spread over
the workers like the samples partitions, evaluate the rest of the rules; only
what the stages cannot separate stays in the global lane.

A partition that stops receiving samples evaluates on wall-clock time once it
has been quiet for ``HEADROOM_IDLE_ADVANCE`` (live data only), so its alerts
still resolve when a sender dies.

Engine state (store, alert states and ``for`` clocks, anomaly models,
forecasts) lives with its partition: it is snapshotted to a compacted Kafka
topic after a partition's first message, then on the schedule of
:mod:`pipelines.snapshot_schedule` (at most every ``HEADROOM_SNAPSHOT_INTERVAL``, at least
every ``HEADROOM_SNAPSHOT_MAX_INTERVAL``, on a CPU budget in between) and on revoke and shutdown; the group's offsets are committed only up to what a
snapshot covers. After a worker restart, a crash or a rebalance the partition is
restored before its next message is ingested, and the alert transitions the
previous owner wrote since the snapshot are not written again
(:mod:`pipelines.state`). A dead worker's partitions move after
``HEADROOM_SESSION_TIMEOUT`` (10 s). With ``HEADROOM_SNAPSHOT_INTERVAL=0s`` Faust
commits offsets itself and a partition starts empty from the committed offset,
as a Prometheus without state restore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

import faust
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from detector.rules import RuleGroup
from detector.wire.metadata import MetricTypes
from pipelines import faust_transport
from pipelines.faust_commit import commit_offset
from pipelines.gauges import DetectorGauges, Learned
from pipelines.heap import TRIM_INTERVAL_S, release_free_memory
from pipelines.metadata_feed import MetadataFeed
from pipelines.settings import Settings
from pipelines.sinks import Notifier
from pipelines.state import SnapshotTopic, StateKeeper
from pipelines.worker import Outgoing, Worker

log = logging.getLogger("headroom.worker")
# How many bytes of a backlog the agent holds before folding them in (and at most
# HEADROOM_FOLD_MAX_MESSAGES messages of one partition): enough for long numpy passes (a few 10k
# samples per partition), little enough that timers wait briefly.
FOLD_MAX_BYTES = 16 << 20


def create_app(settings: Settings, groups: list[RuleGroup], registry: CollectorRegistry | None = None) -> faust.App:
    """The Faust wiring around a :class:`~pipelines.worker.Worker`: topics in and out, timers, rebalances."""
    # Faust creates its data dir without parents: a worker started where var/ does not exist would die.
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        web_port=settings.worker_web_port,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
    )
    outputs = {
        settings.alerts_topic: app.topic(settings.alerts_topic, partitions=1, value_serializer="raw", key_serializer="raw"),
        settings.scores_topic: app.topic(settings.scores_topic, partitions=1, value_serializer="raw"),
        settings.forecasts_topic: app.topic(settings.forecasts_topic, partitions=1, value_serializer="raw", key_serializer="raw"),
    }
    metric_types = MetricTypes()
    worker = Worker(settings, groups, registry=registry, metric_types=metric_types)
    for topic in worker.combine_lanes:  # partials frames, produced to the combine partition they are for
        outputs[topic] = app.topic(topic, partitions=settings.combiners, value_serializer="raw", key_serializer="raw")
    notifier = Notifier.from_settings(settings, worker.metrics.registry)

    keeper = None
    if settings.snapshot_interval_s > 0:
        state_topic = SnapshotTopic(settings.kafka_bootstrap, settings.state_topic, settings.samples_topic,
                                    settings.partitions, settings.snapshot_max_bytes, settings.app_id, settings.alerts_topic,
                                    lanes=settings.state_lanes())
        keeper = StateKeeper(state_topic, worker.lanes, worker.decode, flush=lambda: app.producer.flush(),
                             commit=lambda lane, partition, offset: commit_offset(app, lane, partition, offset),
                             holding_back=worker.holding_back, snapshot_cost=worker.snapshot_taken)
    restoring: dict[tuple[str, int], asyncio.Task] = {}  # restores started at assignment, by (lane, partition)

    async def restore(lane: str, partition: int) -> None:
        sent = await keeper.restore(lane, partition)
        if sent is not None:
            worker.already_sent(lane, partition, sent)

    async def send(out: Outgoing) -> None:
        for topic, partition, value in out.to_partitions:
            await outputs[topic].send(value=value, partition=partition)
        for topic, records in out.records.items():
            for key, value in records:
                await outputs[topic].send(key=key, value=value)
        if out.notifications:
            notifier.enqueue(out.notifications)
        if keeper is not None and out.snapshots:
            for lane, partition in out.snapshots:
                await keeper.save(lane, {partition})
            release_free_memory()  # a snapshot's buffers are the biggest temporaries (pipelines/heap.py)

    async def fold(topic: str, partition: int, messages: list[tuple[int, bytes]]) -> None:
        """Fold in consecutive messages of one partition (see :meth:`Worker.handle_many`)."""
        offset = messages[0][0]
        if keeper is not None:
            started = restoring.pop((topic, partition), None)
            if started is not None:
                await asyncio.gather(started, return_exceptions=True)  # its failure was logged; recover below
            if not worker.assigned(topic, partition):
                sent = await keeper.recover(topic, partition, offset)  # before these messages are ingested
                worker.already_sent(topic, partition, sent)
            elif worker.gap_before(topic, partition, offset):
                await keeper.catch_up(topic, partition, offset)  # committed past the snapshot (e.g. by an older version)
        await send(worker.handle_many(topic, partition, messages))
        await worker.catch_up(topic, partition, send)  # what the messages left due, in steps that yield

    async def evaluate(stream: faust.StreamT) -> None:
        # A backlog's messages are folded in by partition: what the stream already holds (never
        # waiting for more) is grouped by partition, each partition's messages in offset order, and
        # each group goes in as one batch. Faust hands out records partition by partition in turn, so
        # a partition's messages are seldom next to each other; partitions are independent, so their
        # order does not matter. Only while Faust does not ack: with acks on (no snapshots), moving on
        # to the next message would commit one not yet folded in. Not partials frames: a combine
        # partition runs the evaluations one frame left due before it reads the next (a frame's rows
        # replace the slot's previous ones).
        queue = stream.channel.queue if keeper is not None and isinstance(stream.channel, faust.ChannelT) else None
        combine = set(worker.combine_lanes)
        runs: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
        held_bytes = 0
        async for event in stream.events():
            message = event.message
            run = runs.setdefault((message.topic, message.partition), [])
            run.append((message.offset, event.value))
            held_bytes += len(event.value) if isinstance(event.value, bytes) else 0
            if (queue is None or queue.empty() or message.topic in combine or len(run) >= settings.fold_max_messages
                    or held_bytes >= FOLD_MAX_BYTES):
                for (topic, partition), messages in runs.items():
                    await fold(topic, partition, messages)
                runs, held_bytes = {}, 0

    # One agent per lane: target partitions, and the one-partition global lane
    # for groups that combine series across targets (detector.rules.placement).
    # With snapshots, Faust commits nothing of these topics (acks off): the keeper
    # commits after each snapshot, so the committed offset never passes the state
    # a successor can restore (pipelines.state).
    acks = keeper is None
    app.agent(app.topic(settings.samples_topic, partitions=settings.partitions, value_serializer="raw", acks=acks),
              name="headroom.rules")(evaluate)
    if worker.has_global_lane:
        app.agent(app.topic(settings.global_samples_topic, partitions=1, value_serializer="raw", acks=acks),
                  name="headroom.global-rules")(evaluate)
    # Staged rules (pipelines.stages): one agent per combine level, over the partials topics.
    for level, topic in enumerate(worker.combine_lanes, start=1):
        app.agent(app.topic(topic, partitions=settings.combiners, value_serializer="raw", acks=acks),
                  name=f"headroom.combine-{level}")(evaluate)

    @app.timer(interval=1.0)
    async def evaluate_quiet_partitions() -> None:
        await send(worker.advance_idle())

    @app.timer(interval=TRIM_INTERVAL_S)
    async def trim_heap() -> None:
        release_free_memory()  # freed temporaries between the partitions' state (pipelines/heap.py)

    metadata_feed = MetadataFeed(settings.kafka_bootstrap, settings.metadata_topic, metric_types, worker.learned_types)

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

    @app.on_partitions_assigned.connect
    async def restore_assigned(app: faust.App, assigned: set, **_: object) -> None:
        # Restored now, not at the partition's next message: a partition whose
        # sender died is evaluated by the idle timer and its alerts resolve.
        for topic in worker.lanes:
            worker.assign(topic, {tp.partition for tp in assigned if tp.topic == topic})
        if keeper is None:
            return
        for tp in sorted(assigned):
            key = (tp.topic, tp.partition)
            if tp.topic in worker.lanes and not worker.assigned(*key) and key not in restoring:
                restoring[key] = asyncio.create_task(restore(*key), name=f"restore {tp.topic}[{tp.partition}]")

    @app.on_partitions_revoked.connect
    async def drop_revoked(app: faust.App, revoked: set, **_: object) -> None:
        for topic in worker.lanes:
            partitions = {tp.partition for tp in revoked if tp.topic == topic}
            unfinished = set()
            for partition in partitions:
                started = restoring.pop((topic, partition), None)
                if started is not None and not started.done():
                    started.cancel()  # half restored: nothing to save, the next owner starts from the same snapshot
                    unfinished.add(partition)
                if started is not None:
                    await asyncio.gather(started, return_exceptions=True)
            if keeper is not None and partitions - unfinished:
                await keeper.save(topic, partitions - unfinished)  # so the next owner resumes from here
            if keeper is not None:
                keeper.forget(topic, partitions)
            worker.forget(topic, partitions)

    @app.page("/metrics")
    async def metrics_page(web, request):  # noqa: ANN001 - Faust's view signature
        # ?name[]=... restricts the families, as prometheus-client's own handler
        # does: a poller of the worker's counters need not render 10k series.
        names = request.query.getall("name[]", [])
        registry = worker.metrics.registry.restricted_registry(names) if names else worker.metrics.registry
        # The per-series gauges off the event loop: at 100k scored series a page is 25 MB and about
        # 150 ms of CPU, which would hold back every message and alert that long at each scrape.
        page, learned = await asyncio.to_thread(_render_gauges, worker.gauges, names or None)
        worker.gauges.learn(learned)
        body = generate_latest(registry) + page
        # aiohttp refuses a charset inside content_type; the text format's content type is enough.
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4")

    return app


def _render_gauges(gauges: DetectorGauges, names: Collection[str] | None) -> tuple[bytes, Learned]:
    """The per-series gauges' page, encoded, and the label text to keep (on a worker thread)."""
    page, learned = gauges.render(names)
    return page.encode(), learned
