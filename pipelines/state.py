"""Partition state that survives a worker restart or a partition move: snapshots plus catch-up.

Every ``HEADROOM_SNAPSHOT_INTERVAL`` (wall clock) the worker writes each
assigned partition's detectors (:meth:`PartitionDetectors.snapshot
<detector.partition.PartitionDetectors.snapshot>`: rule, model and forecast
state) to a compacted Kafka topic, ``HEADROOM_STATE_TOPIC``, with the offset of
the last sample message folded in. State partition ``p`` holds the snapshots
of samples partition ``p``; the last one holds the global lane's. So the newest
snapshot of a partition is simply the last record of its state partition, and
compaction (one key per state partition) keeps the topic at one snapshot each.

When a partition's first message reaches the agent after an assignment, and
before it is ingested, the worker loads that snapshot and catches up: it
re-reads the samples partition from the snapshot's offset + 1 up to the
message, folding those samples in with their outputs dropped, since they were
emitted before the restart. Messages at or below the snapshot's offset (not yet
committed when the worker stopped) are skipped: they are in the state already.
Doing this lazily, on the first message, gives the exact resume offset and
guarantees the order; the cost is that a partition with no new samples stays
unrestored (and unevaluated by the idle timer) until one arrives.

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

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

log = logging.getLogger("headroom.state")

OFFSET_HEADER = "samples-offset"

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
    the global lane to ``partitions``. Records are keyed by app id, lane and
    partition, so two apps that share a state topic by mistake never load each
    other's state.

    >>> topic = SnapshotTopic("127.0.0.1:9092", "headroom-state", "headroom-samples", partitions=8, max_bytes=1 << 26)
    >>> topic.state_partition("headroom-samples", 3), topic.state_partition("headroom-samples-global", 0)
    (3, 8)
    >>> topic.key("headroom-samples", 3)
    b'headroom/headroom-samples/3'
    """

    def __init__(self, bootstrap: str, topic: str, samples_topic: str, partitions: int, max_bytes: int,
                 app_id: str = "headroom") -> None:
        self.app_id = app_id
        self.bootstrap = bootstrap
        self.topic = topic
        self.samples_topic = samples_topic
        self.partitions = partitions
        self.max_bytes = max_bytes
        self._producer: AIOKafkaProducer | None = None

    def state_partition(self, lane: str, partition: int) -> int:
        return partition if lane == self.samples_topic else self.partitions

    def key(self, lane: str, partition: int) -> bytes:
        return f"{self.app_id}/{lane}/{partition}".encode()

    async def start(self) -> None:
        # Snapshots are compressed already; acks=all so a snapshot survives the broker it was written to.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", max_request_size=self.max_bytes, compression_type=None
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def save(self, lane: str, partition: int, offset: int, snapshot: bytes) -> None:
        """Write a snapshot taken after folding in ``lane[partition]`` up to ``offset``; waits for the ack."""
        if self._producer is None:  # e.g. a revoke after shutdown stopped it: the shutdown snapshot is written
            raise KafkaError("the state topic's producer is not running")
        await self._producer.send_and_wait(
            self.topic,
            snapshot,
            key=self.key(lane, partition),
            partition=self.state_partition(lane, partition),
            headers=[(OFFSET_HEADER, str(offset).encode())],
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
        return int(headers[OFFSET_HEADER]), record.value

    async def replay(self, lane: str, partition: int, start: int, end: int) -> AsyncIterator[tuple[int, bytes]]:
        """``(offset, value)`` of the messages of ``lane[partition]`` from ``start`` up to, not including, ``end``."""
        if start >= end:
            return
        tp = TopicPartition(lane, partition)
        consumer = self._consumer()
        await consumer.start()
        try:
            consumer.assign([tp])
            first = (await consumer.beginning_offsets([tp]))[tp]
            if first > start:
                log.warning("%s[%d]: offsets %d-%d are gone (retention); catching up from %d", lane, partition, start, first - 1, first)
            position = max(start, first)
            consumer.seek(tp, position)
            idle = 0
            while position < end:
                records = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                if not records:
                    idle += 1
                    if idle >= 30:  # the range was readable a moment ago: do not wait forever
                        log.error("%s[%d]: catch-up stalled at offset %d of %d; going on without the rest",
                                  lane, partition, position, end)
                        return
                    continue
                idle = 0
                for record in records:
                    if record.offset >= end:
                        return
                    yield record.offset, record.value
                    position = record.offset + 1
        finally:
            await consumer.stop()


class StateKeeper:
    """Restores, catches up and snapshots the partitions of the worker's lanes.

    ``lanes`` maps a samples topic to its :class:`~pipelines.engines.PartitionEngines`;
    ``decode`` turns a message value into a batch (None for an unreadable one);
    ``flush`` waits until the outputs already sent (alerts, scores) are acknowledged.
    When to snapshot is the worker's call (:class:`pipelines.worker.Worker`).
    """

    def __init__(self, topic: SnapshotTopic, lanes: dict, decode: Callable,
                 flush: Callable[[], Awaitable] | None = None) -> None:
        self.topic = topic
        self.lanes = lanes
        self.decode = decode
        self.flush = flush

    async def recover(self, lane: str, partition: int, resume_offset: int) -> None:
        """Before ``lane[partition]``'s message at ``resume_offset`` is ingested: restore its
        newest snapshot and fold in the messages between the two, outputs dropped."""
        engines = self.lanes[lane]
        started = time.monotonic()
        try:
            found = await self.topic.load(lane, partition)
        except KafkaError as exc:
            log.error("cannot read the snapshot of %s[%d] (%s); starting it empty", lane, partition, exc)
            found = None
        if found is None:
            engines.start_empty(partition)
            log.info("%s[%d]: no snapshot, starting empty at offset %d", lane, partition, resume_offset)
            return
        offset, snapshot = found
        if not engines.restore(partition, snapshot, offset):
            return
        caught_up = 0
        async for at, value in self.topic.replay(lane, partition, offset + 1, resume_offset):
            batch = self.decode(lane, partition, at, value)
            if batch is not None:
                engines.ingest(partition, batch, offset=at)  # outputs were emitted before the restart
                engines.catch_up(partition)  # and so were those of the steps the worker ran after it
                caught_up += 1
        log.info("%s[%d]: restored the snapshot at offset %d (%d bytes), caught up %d message(s) in %.2fs; "
                 "the agent resumes at offset %d", lane, partition, offset, len(snapshot), caught_up,
                 time.monotonic() - started, resume_offset)

    async def save(self, lane: str, partitions: set[int]) -> None:
        engines = self.lanes[lane]
        for partition in sorted(partitions):
            taken = engines.snapshot(partition)
            if taken is None:
                continue
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
                await self.topic.save(lane, partition, offset, snapshot)
            except KafkaError as exc:
                log.error("%s[%d]: cannot write its snapshot (%s); the next one will try again", lane, partition, exc)

    async def save_all(self) -> None:
        for lane, engines in self.lanes.items():
            await self.save(lane, set(engines.engines))
