"""State that survives: a worker restart keeps models and ``for`` clocks (real Kafka, real worker)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from detector.wire.batch import SampleBatch
from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.engines import PartitionEngines
from pipelines.local import LocalPipeline
from pipelines.settings import Settings
from pipelines.stack.process import is_alive
from pipelines.stack.kafka import create_topics
from pipelines.state import SnapshotTopic, StateKeeper, state_topic_config
from tests.support import OLD_TIMESTAMPS_ENV, STAGING_OFF_ENV, read_alerts, write_rules

pytestmark = pytest.mark.integration

BASE = 1_700_000_000_000 // 15_000 * 15_000
UP = (("__name__", "up"), ("instance", "a:1"), ("job", "api"))
WAIT = (("__name__", "queue_wait_seconds"), ("instance", "a:1"), ("job", "api"))
SPIKE = 125  # a step posted while the worker is down


def wait_value(step: int) -> float:
    return 1000.0 if step == SPIKE else 10 + 0.5 * math.sin(step * 0.7) + 0.2 * math.cos(step * 1.3)


def series(steps: range) -> list:
    return [
        (UP, [(BASE + k * 15_000, 1.0 if k < 100 else 0.0) for k in steps]),  # down from step 100 (1500 s)
        (WAIT, [(BASE + k * 15_000, wait_value(k)) for k in steps]),
    ]


async def post_steps(session: aiohttp.ClientSession, url: str, steps: range) -> None:
    for start in range(steps.start, steps.stop, 10):
        body = encode_write_request(series(range(start, min(start + 10, steps.stop))))
        async with session.post(url, data=body, headers=REMOTE_WRITE_HEADERS) as answer:
            assert answer.status == 204  # acknowledged: must not be lost


async def wait_until_consumed(session: aiohttp.ClientSession, pipeline: LocalPipeline, messages: int) -> None:
    """Until the worker's /metrics counts ``messages`` sample batches."""
    url = f"http://127.0.0.1:{pipeline.worker_port}/metrics"
    async with asyncio.timeout(60):
        while True:
            async with session.get(url) as answer:
                text = await answer.text()
            counted = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("headroom_worker_batches_total")]
            if counted and counted[0] >= messages:
                return
            await asyncio.sleep(0.1)


async def wait_for_a_snapshot(bootstrap: str, topic: str, partitions: int = 3) -> None:
    """Until the state topic (2 samples partitions + the global lane's) holds a snapshot."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partitions)]
        async with asyncio.timeout(60):
            while not any((await consumer.end_offsets(partitions)).values()):
                await asyncio.sleep(0.1)
    finally:
        await consumer.stop()


def kill_worker(pipeline: LocalPipeline) -> None:
    """SIGKILL, no shutdown: the worker's last snapshot is the periodic one, its last commit whatever it was."""
    pid = pipeline._pids.pop("worker")
    os.killpg(pid, signal.SIGKILL)
    while is_alive(pid):
        time.sleep(0.05)


@pytest.mark.parametrize("stop", ["graceful", "crash"])
async def test_worker_restart_keeps_the_models_and_the_for_clock(kafka, tmp_path, app_id, stop):
    rules = write_rules(tmp_path, [{"alert": "Down", "expr": "up == 0", "for": "5m"}], interval="15s")
    pipeline = LocalPipeline(kafka.bootstrap, tmp_path / "run", rule_files=(str(rules),), app_id=app_id, partitions=2,
                             extra_env={"HEADROOM_SNAPSHOT_INTERVAL": "1s", "HEADROOM_SNAPSHOT_CPU_SHARE": "0",  # every second
                                        **OLD_TIMESTAMPS_ENV, **STAGING_OFF_ENV})
    await asyncio.to_thread(pipeline.start)
    try:
        async with aiohttp.ClientSession() as session:
            await post_steps(session, pipeline.write_url, range(0, 100))
            await wait_until_consumed(session, pipeline, 10)
            await asyncio.sleep(1.5)
            await post_steps(session, pipeline.write_url, range(100, 110))  # due for a snapshot: taken after this
            pending = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: len(ev) >= 1)
            assert [(e["state"], (e["eval_time"] - BASE) // 1000) for e in pending] == [("pending", 1500)]
            if stop == "graceful":  # snapshots everything on the way out
                await asyncio.to_thread(pipeline.stop_one, "worker")
            else:  # restarts from the periodic snapshot, then catches up or skips what it already holds
                await wait_for_a_snapshot(kafka.bootstrap, f"{app_id}-state")
                await asyncio.to_thread(kill_worker, pipeline)
            await post_steps(session, pipeline.write_url, range(110, 130))  # while the worker is down
            await asyncio.to_thread(pipeline.start_one, "worker")
            await post_steps(session, pipeline.write_url, range(130, 140))
        # After a crash the group waits for the dead member's session to time out (HEADROOM_SESSION_TIMEOUT, 10 s).
        alerts = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: len(ev) >= 2, timeout=150)
        scores = await read_alerts(kafka.bootstrap, f"{app_id}-scores", lambda ev: len(ev) >= 2, timeout=30)
        await asyncio.sleep(3)  # anything more would be a duplicate: let it arrive
        alerts = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: False, timeout=2)
        scores = await read_alerts(kafka.bootstrap, f"{app_id}-scores", lambda ev: False, timeout=2)
    finally:
        await asyncio.to_thread(pipeline.stop)
    # The for clock kept running: pending at 1500 s, firing 5 m later; without the
    # state the restarted worker would go pending again and fire 5 m after that.
    assert [(e["previous"], e["state"], (e["eval_time"] - BASE) // 1000) for e in alerts] == [
        ("inactive", "pending", 1500), ("pending", "firing", 1800)]
    # The models were past their 100-sample warm-up before the restart and still
    # are: refit from scratch they would score the spike 0. ``up`` leaving its
    # constant 1 is scored before the restart, once.
    assert [(e["labels"]["__name__"], (e["t"] - BASE) // 15_000) for e in scores] == [("up", 100), ("queue_wait_seconds", SPIKE)]
    assert scores[1]["score"] > 0.5
    assert "restored the snapshot" in (tmp_path / "run" / "worker.log").read_text()


async def test_recover_restores_the_snapshot_and_catches_up_to_the_resume_offset(kafka, app_id):
    """The catch-up path alone, deterministic: a snapshot at offset 39 of 70 messages, resume at 60."""
    settings = Settings(kafka_bootstrap=kafka.bootstrap, samples_topic=f"{app_id}-samples", state_topic=f"{app_id}-state",
                        partitions=1, snapshot_max_bytes=8 * 1024 * 1024, staged_rules=False)
    await create_topics(kafka.bootstrap, {settings.samples_topic: 1})
    await create_topics(kafka.bootstrap, settings.state_topics(), config=state_topic_config(settings.snapshot_max_bytes))
    batches = [SampleBatch.from_series(series(range(2 * k, 2 * k + 2))) for k in range(70)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        for batch in batches:
            await producer.send_and_wait(settings.samples_topic, batch.encode(), partition=0)
    finally:
        await producer.stop()

    uninterrupted = PartitionEngines([], settings).start_empty(0)  # the worker's detectors, same options
    for batch in batches[:40]:
        uninterrupted.ingest(batch)
    topic = SnapshotTopic(kafka.bootstrap, settings.state_topic, settings.samples_topic, 1, settings.snapshot_max_bytes)
    await topic.start()
    try:
        await topic.save(settings.samples_topic, 0, 39, b"an older, unreadable snapshot")
        await topic.save(settings.samples_topic, 0, 39, uninterrupted.snapshot())
        engines = PartitionEngines([], settings)
        keeper = StateKeeper(topic, {settings.samples_topic: engines}, lambda lane, p, at, value: SampleBatch.decode(value))
        await keeper.recover(settings.samples_topic, 0, resume_offset=60)
    finally:
        await topic.stop()
    for batch in batches[40:60]:
        uninterrupted.ingest(batch)
    assert engines.offsets[0] == 59 and engines.folded(0, 59) and not engines.folded(0, 60)
    restored = engines.engines[0]
    assert restored.rules.store.newest_timestamp(0) == uninterrupted.rules.store.newest_timestamp(0) == BASE + 119 * 15_000
    after = [(restored.ingest(b).scores, uninterrupted.ingest(b).scores) for b in batches[60:]]
    assert all(a == b for a, b in after) and any(a for a, _ in after)  # the spike at step 125, scored alike
