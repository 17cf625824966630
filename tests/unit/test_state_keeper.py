"""The keeper's rules, without Kafka (pipelines.state.StateKeeper over an in-memory stand-in for the topics):
offsets committed only after a snapshot, a first snapshot at once, the alerts offset kept while held back.
The Kafka side of the same is tested in tests/integration/test_state_restore.py and test_worker_faults.py."""

from __future__ import annotations

import json

from detector.wire.batch import SampleBatch
from pipelines.engines import PartitionEngines
from pipelines.settings import Settings
from pipelines.state import StateKeeper, StoredSnapshot

LANE = "headroom-samples"
T0 = 1_700_000_000_000 // 15_000 * 15_000
UP = (("__name__", "up"), ("instance", "a:1"), ("job", "api"))


def batch(step: int) -> SampleBatch:
    return SampleBatch.from_series([(UP, [(T0 + step * 15_000, 1.0)])])


class MemoryTopics:
    """The state topic, the samples partition and the alerts topic, in memory."""

    def __init__(self) -> None:
        self.snapshots: list[StoredSnapshot] = []
        self.samples: list[bytes] = []
        self.alerts: list[bytes] = []
        self.max_bytes = 1 << 26
        self.fail_save = False

    async def load_snapshot(self, lane: str, partition: int) -> StoredSnapshot | None:
        return self.snapshots[-1] if self.snapshots else None

    async def save(self, lane: str, partition: int, offset: int, data: bytes, alerts_offset: int | None = None) -> None:
        if self.fail_save:
            from aiokafka.errors import KafkaError

            raise KafkaError("broker gone")
        self.snapshots.append(StoredSnapshot(offset, data, alerts_offset))

    async def alerts_end(self) -> int:
        return len(self.alerts)

    async def alerts_since(self, offset: int) -> set:
        return {(e["fingerprint"], e["state"], e["eval_time"]) for e in map(json.loads, self.alerts[offset:])}

    async def replay(self, lane: str, partition: int, start: int, end: int):
        for at in range(start, end):
            yield at, self.samples[at]


def keeper_for(topics: MemoryTopics, holding_back=lambda lane, p: False):
    engines = PartitionEngines([], Settings())
    commits: list[tuple[str, int, int]] = []

    async def commit(lane: str, partition: int, offset: int) -> bool:
        commits.append((lane, partition, offset))
        return True

    keeper = StateKeeper(topics, {LANE: engines}, lambda lane, p, at, value: SampleBatch.decode(value),
                         commit=commit, holding_back=holding_back)
    return keeper, engines, commits


async def test_a_partition_without_snapshot_is_snapshotted_empty_at_once_and_commits_nothing_new():
    topics = MemoryTopics()
    topics.alerts = [b"{}"] * 3
    keeper, engines, commits = keeper_for(topics)
    assert await keeper.recover(LANE, 0, resume_offset=5) == set()
    assert [(s.offset, s.alerts_offset) for s in topics.snapshots] == [(4, 3)]
    assert commits == [(LANE, 0, 5)]  # where it resumes: nothing past the snapshot


async def test_offsets_are_committed_after_the_snapshot_and_only_when_it_is_written():
    topics = MemoryTopics()
    keeper, engines, commits = keeper_for(topics)
    engines.ingest(0, batch(0), offset=7)
    await keeper.save(LANE, {0})
    assert commits == [(LANE, 0, 8)] and topics.snapshots[-1].offset == 7
    engines.ingest(0, batch(1), offset=8)
    topics.fail_save = True
    await keeper.save(LANE, {0})  # logged, not raised, and nothing committed
    assert commits == [(LANE, 0, 8)]


async def test_restore_returns_what_was_written_since_and_keeps_that_mark_while_held_back():
    topics = MemoryTopics()
    previous, prev_engines, _ = keeper_for(topics)
    prev_engines.ingest(0, batch(0), offset=0)
    topics.alerts = [json.dumps({"fingerprint": "x", "state": "firing", "eval_time": 1}).encode()]
    await previous.save(LANE, {0})  # marks the alerts topic at 1
    topics.alerts.append(json.dumps({"fingerprint": "a", "state": "pending", "eval_time": T0}).encode())

    held = {"back": True}
    keeper, engines, commits = keeper_for(topics, holding_back=lambda lane, p: held["back"])
    assert await keeper.restore(LANE, 0) == {("a", "pending", T0)}
    assert engines.offsets[0] == 0
    engines.ingest(0, batch(1), offset=1)
    await keeper.save(LANE, {0})
    assert topics.snapshots[-1].alerts_offset == 1  # still held back: the mark of the snapshot restored from
    held["back"] = False
    await keeper.save(LANE, {0})
    assert topics.snapshots[-1].alerts_offset == 2  # caught up with the previous owner: the current end


async def test_catch_up_folds_in_what_was_committed_past_the_snapshot_without_outputs():
    topics = MemoryTopics()
    topics.samples = [batch(k).encode() for k in range(6)]
    previous, prev_engines, _ = keeper_for(topics)
    prev_engines.ingest(0, batch(0), offset=0)
    await previous.save(LANE, {0})
    keeper, engines, _ = keeper_for(topics)
    await keeper.restore(LANE, 0)
    assert engines.gap_before(0, 4) and not engines.gap_before(0, 1)
    assert await keeper.catch_up(LANE, 0, 4) == 3
    assert engines.offsets[0] == 3 and engines.engines[0].newest == T0 + 3 * 15_000


async def test_each_snapshot_reports_what_it_cost_to_the_schedule():
    topics = MemoryTopics()
    keeper, engines, _ = keeper_for(topics)
    costs: list[tuple[str, int, float]] = []
    keeper.snapshot_cost = lambda lane, partition, cpu_s: costs.append((lane, partition, cpu_s))
    engines.ingest(0, batch(0), offset=7)
    await keeper.save(LANE, {0, 1})  # partition 1 holds nothing here: no snapshot, no cost
    assert [(lane, partition) for lane, partition, _ in costs] == [(LANE, 0)] and costs[0][2] >= 0


async def test_a_partition_found_without_snapshot_at_assignment_is_not_read_again_at_its_first_message():
    """Reading a snapshot costs a consumer's start (about 5 ms of CPU): the read at assignment that found
    none serves the first message too; after a revoke, or when the read failed, the next one reads again."""
    topics = MemoryTopics()
    reads = []
    load = topics.load_snapshot

    async def counted(lane: str, partition: int):
        reads.append(partition)
        if topics.fail_save == "read":
            from aiokafka.errors import KafkaError

            raise KafkaError("broker gone")
        return await load(lane, partition)

    topics.load_snapshot = counted
    keeper, engines, commits = keeper_for(topics)
    assert await keeper.restore(LANE, 0) is None  # at assignment: none
    assert await keeper.recover(LANE, 0, resume_offset=0) == set()
    assert reads == [0] and 0 in engines.engines and len(topics.snapshots) == 1  # started empty, snapshotted
    engines.forget({0})
    keeper.forget(LANE, {0})  # revoked: the next owner (here, this worker again) reads what was saved
    topics.samples = [batch(0).encode()]
    assert await keeper.recover(LANE, 0, resume_offset=1) == set()
    assert reads == [0, 0] and engines.offsets[0] == 0  # restored from the snapshot above, message 0 caught up
    topics.fail_save = "read"
    assert await keeper.restore(LANE, 1) is None  # the read failed: not taken for "no snapshot"
    topics.fail_save = False
    assert await keeper.recover(LANE, 1, resume_offset=0) == set()
    assert reads == [0, 0, 1, 1]


async def test_the_alerts_end_asked_while_the_topic_is_still_starting_waits_for_its_consumer(monkeypatch):
    """A partition with no snapshot is snapshotted at its first message, which can come while the
    state topic's start() is still connecting the consumer that reads the alerts topic's end."""
    import asyncio

    import pipelines.state as state

    connected = asyncio.Event()

    class SlowConsumer:
        started = False

        async def start(self) -> None:
            await connected.wait()
            self.started = True

        async def end_offsets(self, partitions):
            assert self.started, "asked before the consumer started"
            return {tp: 7 for tp in partitions}

    class Producer:
        def __init__(self, **_) -> None: ...

        async def start(self) -> None: ...

    monkeypatch.setattr(state, "AIOKafkaProducer", Producer)
    topic = state.SnapshotTopic("127.0.0.1:1", "s", "samples", partitions=1, max_bytes=1 << 20, alerts_topic="alerts")
    monkeypatch.setattr(topic, "_consumer", SlowConsumer)
    starting = asyncio.ensure_future(topic.start())
    await asyncio.sleep(0)
    asked = asyncio.ensure_future(topic.alerts_end())
    await asyncio.sleep(0.01)
    assert not asked.done()  # waits for the consumer, does not fail on it
    connected.set()
    await starting
    assert await asked == 7
