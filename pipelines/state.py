"""Partition state that survives a worker restart or a partition move: snapshots plus catch-up.

On the schedule of :mod:`pipelines.snapshot_schedule` (at most every
``HEADROOM_SNAPSHOT_INTERVAL`` of wall clock, at least every
``HEADROOM_SNAPSHOT_MAX_INTERVAL``) the worker writes each
assigned partition's detectors (:meth:`PartitionDetectors.snapshot
<detector.partition.PartitionDetectors.snapshot>`: rule, model and forecast
state) to a compacted Kafka topic, ``HEADROOM_STATE_TOPIC``, with the offset of
the last sample message folded in. State partition ``p`` holds the snapshots
of samples partition ``p``; the last one holds the global lane's. So the newest
snapshot of a partition is simply the last record of its state partition, and
compaction (one key per state partition) keeps the topic at one snapshot each.

**Offsets are committed only up to what a snapshot covers**, so no kill at any
moment loses alert state: Faust commits nothing of the samples topics (their
acks are off), and after a snapshot at offset ``o`` is acknowledged the worker
commits ``o + 1`` (:mod:`pipelines.faust_commit`). A partition's first snapshot
is taken at once: when it starts empty (no snapshot yet), before its first
message is ingested, and again right after that message; then on the schedule.
A new owner therefore resumes at the message after the newest snapshot, and
re-ingests what the old owner had done since, from the same state, on event
time: the same alert transitions, at the same evaluation times. So that
these reach the alerts topic once, every snapshot also records where the alerts
topic ended when it was taken (after the producer's flush), and the new owner
reads the transitions written since then and suppresses the ones it would write
again (same fingerprint, state and evaluation time; :meth:`StateKeeper.recover`,
:meth:`pipelines.worker.Worker.already_sent`). Scores and forecasts are not
held back: after a takeover those since the snapshot may appear twice, the same
(each carries its series' labels and event time ``t``, so a consumer that needs
them once keeps the first of each).

When a partition is assigned, the worker loads its snapshot at once (so the
idle timer evaluates it even if no sample comes). Before its first message is
ingested, the worker catches up if the message is not the one after the
snapshot: it re-reads the samples partition from the snapshot's offset + 1 up
to the message, folding those samples in with their outputs dropped (this
range is empty unless a commit failed after its snapshot was written, or
offsets were committed by an older version). Messages at or below the
snapshot's offset are skipped: they are in the state already. A partition
without a snapshot starts empty at its first message, and that empty state is
snapshotted at once. While transitions of the previous owner are still held
back, a new snapshot keeps the restored one's alerts offset, so that a third
owner still holds them back too.

Why snapshots and not a changelog (``python -m bench.run state``, bench/README.md,
10k series in one partition): with live data both cost about 0.25 s of CPU per
30 s, but a changelog's cost grows with the samples, so a backlog is ingested at
0.25x the speed (snapshots: 0.99x), and it writes 40 MB per 30 s against one
6.5 MB snapshot. Recovery (read, restore, catch up 30 s) takes 1.2 s; a
changelog would restore in about 0.2 s, but restores are rare.

Reading and writing use plain aiokafka clients: the snapshot record is far
bigger than Faust's producer allows, and the catch-up is a bounded read of one
partition, outside the consumer group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger("headroom.state")

OFFSET_HEADER = "samples-offset"
OUTPUTS_HEADER = "alerts-offset"  # where the alerts topic ended when the snapshot was taken

SentKey = tuple[str, str, int]
"""An alert transition's identity on the alerts topic: (fingerprint, state, evaluation time)."""


class StoredSnapshot(NamedTuple):
    offset: int  # the last samples offset folded in
    data: bytes
    alerts_offset: int | None  # the alerts topic's end when it was taken; None from older versions

STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # Roll segments often so compaction (which never touches the active segment)
    # can drop superseded snapshots within minutes, not the default week.
    "segment.ms": 10 * 60_000,
    "min.cleanable.dirty.ratio": 0.1,
}


def state_topic_config(max_bytes: int) -> dict[str, str | int]:
    """Topic configuration of the state topic: compacted, records up to ``max_bytes``.

    >>> state_topic_config(1024)["max.message.bytes"]
    1024
    """
    return {**STATE_TOPIC_CONFIG, "max.message.bytes": max_bytes}


class SnapshotTopic:
    """The state topic and the catch-up reads of the samples topic, over plain aiokafka clients.

    Samples partition ``p`` maps to state partition ``p``, the one partition of
    the global lane to ``partitions``, and partition ``p`` of another lane (a combine
    level of staged rules) to ``lanes[lane] + p``. Records are keyed by app id, lane and
    partition, so two apps that share a state topic by mistake never load each
    other's state.

    >>> topic = SnapshotTopic("127.0.0.1:9092", "headroom-state", "headroom-samples", partitions=8, max_bytes=1 << 26)
    >>> topic.state_partition("headroom-samples", 3), topic.state_partition("headroom-samples-global", 0)
    (3, 8)
    >>> topic.key("headroom-samples", 3)
    b'headroom/headroom-samples/3'
    """

    def __init__(self, bootstrap: str, topic: str, samples_topic: str, partitions: int, max_bytes: int,
                 app_id: str = "headroom", alerts_topic: str | None = None, lanes: dict[str, int] | None = None) -> None:
        self.app_id = app_id
        self.lanes = lanes or {}  # first state partition of each lane but the samples topic and the global lane
        self.bootstrap = bootstrap
        self.topic = topic
        self.samples_topic = samples_topic
        self.partitions = partitions
        self.max_bytes = max_bytes
        self.alerts_topic = alerts_topic  # one partition (Settings.topics)
        self._producer: AIOKafkaProducer | None = None
        self._offsets: AIOKafkaConsumer | None = None  # asks where the alerts topic ends
        self._offsets_ready: asyncio.Event | None = None  # set once that consumer has started

    def state_partition(self, lane: str, partition: int) -> int:
        if lane in self.lanes:
            return self.lanes[lane] + partition
        return partition if lane == self.samples_topic else self.partitions

    def key(self, lane: str, partition: int) -> bytes:
        return f"{self.app_id}/{lane}/{partition}".encode()

    async def start(self) -> None:
        # Snapshots are compressed already; acks=all so a snapshot survives the broker it was written to.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", max_request_size=self.max_bytes, compression_type=None
        )
        await self._producer.start()
        if self.alerts_topic is not None:
            self._offsets_ready = asyncio.Event()
            self._offsets = self._consumer()
            await self._offsets.start()
            self._offsets_ready.set()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None

    async def alerts_end(self) -> int | None:
        """The offset the next alert transition will get (None without an alerts topic)."""
        if self._offsets is None:
            return None
        if self._offsets_ready is not None:
            # The agent's first message can come while start() is still connecting this consumer
            # (a partition with no snapshot is snapshotted at once, without a read to wait on).
            await self._offsets_ready.wait()
        tp = TopicPartition(self.alerts_topic, 0)
        return (await self._offsets.end_offsets([tp]))[tp]

    async def alerts_since(self, offset: int) -> set[SentKey]:
        """The transitions on the alerts topic from ``offset`` to its current end."""
        if self.alerts_topic is None:
            return set()
        sent: set[SentKey] = set()
        tp = TopicPartition(self.alerts_topic, 0)
        consumer = self._consumer()
        await consumer.start()
        try:
            end = (await consumer.end_offsets([tp]))[tp]
            async for _, value in self._read(consumer, tp, offset, end):
                try:
                    event = json.loads(value)
                    sent.add((event["fingerprint"], event["state"], int(event["eval_time"])))
                except (ValueError, KeyError, TypeError):
                    continue  # not a transition of ours: nothing to suppress
        finally:
            await consumer.stop()
        return sent

    async def save(self, lane: str, partition: int, offset: int, snapshot: bytes, alerts_offset: int | None = None) -> None:
        """Write a snapshot taken after folding in ``lane[partition]`` up to ``offset``; waits for the ack."""
        if self._producer is None:  # e.g. a revoke after shutdown stopped it: the shutdown snapshot is written
            raise KafkaError("the state topic's producer is not running")
        headers = [(OFFSET_HEADER, str(offset).encode())]
        if alerts_offset is not None:
            headers.append((OUTPUTS_HEADER, str(alerts_offset).encode()))
        await self._producer.send_and_wait(
            self.topic,
            snapshot,
            key=self.key(lane, partition),
            partition=self.state_partition(lane, partition),
            headers=headers,
        )

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=self.max_bytes,
            fetch_max_bytes=self.max_bytes,
            fetch_max_wait_ms=100,
        )

    async def load(self, lane: str, partition: int) -> tuple[int, bytes] | None:
        """The newest snapshot of a partition, with its samples offset; None if there is none."""
        found = await self.load_snapshot(lane, partition)
        return None if found is None else (found.offset, found.data)

    async def load_snapshot(self, lane: str, partition: int) -> StoredSnapshot | None:
        """The newest snapshot of a partition, with its offsets; None if there is none."""
        tp = TopicPartition(self.topic, self.state_partition(lane, partition))
        consumer = self._consumer()
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            begin = (await consumer.beginning_offsets([tp]))[tp]
            if end <= begin:
                return None
            consumer.seek(tp, end - 1)
            record = await consumer.getone()
        finally:
            await consumer.stop()
        headers = dict(record.headers or ())
        if record.key != self.key(lane, partition) or OFFSET_HEADER not in headers:
            log.error("state record at %s[%d]@%d is not a snapshot of %s[%d]; starting it empty",
                      self.topic, tp.partition, record.offset, lane, partition)
            return None
        alerts_offset = headers.get(OUTPUTS_HEADER)
        return StoredSnapshot(int(headers[OFFSET_HEADER]), record.value,
                              int(alerts_offset) if alerts_offset is not None else None)

    async def replay(self, lane: str, partition: int, start: int, end: int) -> AsyncIterator[tuple[int, bytes]]:
        """``(offset, value)`` of the messages of ``lane[partition]`` from ``start`` up to, not including, ``end``."""
        if start >= end:
            return
        consumer = self._consumer()
        await consumer.start()
        try:
            async for item in self._read(consumer, TopicPartition(lane, partition), start, end):
                yield item
        finally:
            await consumer.stop()

    async def _read(self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int
                    ) -> AsyncIterator[tuple[int, bytes]]:
        if start >= end:
            return
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        if first > start:
            log.warning("%s[%d]: offsets %d-%d are gone (retention); reading from %d", tp.topic, tp.partition,
                        start, first - 1, first)
        position = max(start, first)
        consumer.seek(tp, position)
        idle = 0
        while position < end:
            records = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
            if not records:
                idle += 1
                if idle >= 30:  # the range was readable a moment ago: do not wait forever
                    log.error("%s[%d]: read stalled at offset %d of %d; going on without the rest",
                              tp.topic, tp.partition, position, end)
                    return
                continue
            idle = 0
            for record in records:
                if record.offset >= end:
                    return
                yield record.offset, record.value
                position = record.offset + 1


class StateKeeper:
    """Restores, catches up and snapshots the partitions of the worker's lanes.

    ``lanes`` maps a samples topic to its :class:`~pipelines.engines.PartitionEngines`;
    ``decode`` turns a message value into a batch (None for an unreadable one);
    ``flush`` waits until the outputs already sent (alerts, scores) are acknowledged;
    ``commit(lane, partition, next_offset)`` commits the consumer group's offset once a
    snapshot covers everything before it; ``snapshot_cost(lane, partition, cpu_s)`` hears
    what each snapshot took to encode (the worker's schedule budgets on it);
    ``holding_back(lane, partition)`` says whether
    the worker still holds back transitions the previous owner wrote (then a new
    snapshot keeps the restored one's alerts offset, so a successor still knows them).
    When to snapshot is the worker's call (:class:`pipelines.worker.Worker`).
    """

    def __init__(self, topic: SnapshotTopic, lanes: dict, decode: Callable,
                 flush: Callable[[], Awaitable] | None = None,
                 commit: Callable[[str, int, int], Awaitable[bool]] | None = None,
                 holding_back: Callable[[str, int], bool] | None = None,
                 snapshot_cost: Callable[[str, int, float], None] | None = None) -> None:
        self.topic = topic
        self.lanes = lanes
        self.decode = decode
        self.flush = flush
        self.commit = commit
        self.holding_back = holding_back
        self.snapshot_cost = snapshot_cost
        self._alerts_marks: dict[tuple[str, int], int] = {}  # alerts offset of the snapshot restored from
        # Partitions whose state partition held no snapshot when read at their assignment: recover()
        # does not read it again at the first message (about 5 ms of CPU a partition, 2026-12-07).
        self._found_none: set[tuple[str, int]] = set()

    async def restore(self, lane: str, partition: int) -> set[SentKey] | None:
        """Restore a partition from its newest snapshot (at assignment, before any message): the
        alert transitions written since it, which the worker must not write again; None when
        there is no snapshot that loads (the partition is then left to :meth:`recover`)."""
        engines = self.lanes[lane]
        started = time.monotonic()
        try:
            found = await self.topic.load_snapshot(lane, partition)
        except KafkaError as exc:
            log.error("cannot read the snapshot of %s[%d] (%s); starting it empty", lane, partition, exc)
            return None
        if found is None:
            self._found_none.add((lane, partition))
            return None
        self._found_none.discard((lane, partition))
        sent: set[SentKey] = set()
        if found.alerts_offset is not None:
            try:
                sent = await self.topic.alerts_since(found.alerts_offset)
            except KafkaError as exc:
                log.error("%s[%d]: cannot read the alerts written since its snapshot (%s); some may be written twice",
                          lane, partition, exc)
        # No await from here to the caller's already_sent: the idle timer never sees the
        # restored partition without the transitions to hold back.
        if not engines.restore(partition, found.data, found.offset):
            engines.forget({partition})
            return None
        if found.alerts_offset is not None:
            self._alerts_marks[(lane, partition)] = found.alerts_offset
        log.info("%s[%d]: restored the snapshot at offset %d (%d bytes) and read %d alert transition(s) written "
                 "since, in %.2fs", lane, partition, found.offset, len(found.data), len(sent), time.monotonic() - started)
        return sent

    async def catch_up(self, lane: str, partition: int, resume_offset: int) -> int:
        """Fold in the messages between the partition's state and ``resume_offset``, outputs dropped:
        the previous owner processed them and committed past them. Returns how many."""
        engines = self.lanes[lane]
        caught_up = 0
        start = engines.offsets.get(partition, resume_offset - 1) + 1
        async for at, value in self.topic.replay(lane, partition, start, resume_offset):
            batch = self.decode(lane, partition, at, value)
            if batch is not None:
                engines.ingest(partition, batch, offset=at)
                engines.catch_up(partition)  # the steps the worker ran after it: outputs dropped too
                caught_up += 1
        if caught_up:
            log.info("%s[%d]: caught up %d message(s) from offset %d; the agent resumes at offset %d",
                     lane, partition, caught_up, start, resume_offset)
        return caught_up

    async def recover(self, lane: str, partition: int, resume_offset: int) -> set[SentKey]:
        """Before ``lane[partition]``'s message at ``resume_offset`` is ingested, if not restored yet:
        restore its newest snapshot and catch up to the message; or start it empty and snapshot that
        at once. Returns what :meth:`restore` does (an empty set when starting empty)."""
        # Read again unless the read at this assignment found no snapshot (a read that failed, or a
        # snapshot that did not load, is tried again). Until its revoke, only this worker writes one.
        none_found = (lane, partition) in self._found_none
        sent = None if none_found else await self.restore(lane, partition)
        self._found_none.discard((lane, partition))
        if sent is None:
            self.lanes[lane].start_empty(partition, offset=resume_offset - 1)
            log.info("%s[%d]: no snapshot, starting empty at offset %d", lane, partition, resume_offset)
            # A first snapshot at once: it marks where the alerts topic stood, so a successor
            # that takes over before the next one knows what this worker wrote meanwhile.
            await self.save(lane, {partition})
            return set()
        await self.catch_up(lane, partition, resume_offset)
        return sent

    def forget(self, lane: str, partitions: set[int]) -> None:
        for partition in partitions:
            self._alerts_marks.pop((lane, partition), None)
            self._found_none.discard((lane, partition))

    async def _alerts_mark(self, lane: str, partition: int) -> int | None:
        """The alerts offset a new snapshot records: the restored one's while transitions are held back."""
        mark = self._alerts_marks.get((lane, partition))
        if mark is not None and self.holding_back is not None and self.holding_back(lane, partition):
            return mark
        self._alerts_marks.pop((lane, partition), None)
        return await self.topic.alerts_end()

    async def save(self, lane: str, partitions: set[int]) -> None:
        """Snapshot partitions (after flushing the outputs sent so far), then commit the offset after each."""
        engines = self.lanes[lane]
        for partition in sorted(partitions):
            started = time.thread_time()
            taken = engines.snapshot(partition)
            if taken is None:
                continue
            if self.snapshot_cost is not None:
                self.snapshot_cost(lane, partition, time.thread_time() - started)
            offset, snapshot = taken
            if len(snapshot) > self.topic.max_bytes:
                log.error("%s[%d]: snapshot of %d bytes exceeds HEADROOM_SNAPSHOT_MAX_BYTES (%d); not saved",
                          lane, partition, len(snapshot), self.topic.max_bytes)
                continue
            try:
                if self.flush is not None:
                    # A snapshot says "the messages up to here are done": their outputs must
                    # be in Kafka first, or a crash right after would lose them for good.
                    await self.flush()
                await self.topic.save(lane, partition, offset, snapshot, await self._alerts_mark(lane, partition))
            except KafkaError as exc:
                log.error("%s[%d]: cannot write its snapshot (%s); the next one will try again", lane, partition, exc)
                continue
            if self.commit is not None and offset >= 0:
                try:
                    await self.commit(lane, partition, offset + 1)
                except Exception as exc:  # noqa: BLE001 - an uncommitted offset only means more to re-read
                    log.error("%s[%d]: cannot commit offset %d after its snapshot (%s)", lane, partition, offset + 1, exc)

    async def save_all(self) -> None:
        for lane, engines in self.lanes.items():
            await self.save(lane, set(engines.engines))
