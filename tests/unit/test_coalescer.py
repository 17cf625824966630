"""The receiver's coalescer: one message per partition for concurrent requests, acked per request."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from detector.wire.batch import SampleBatch
from pipelines.coalescer import Coalescer


def batch(instance: str, stamps) -> SampleBatch:
    return SampleBatch.from_series([((("__name__", "up"), ("instance", instance)), [(t, 1.0) for t in stamps])])


class Broker:
    """Records what was produced; can be told to fail or to be slow."""

    def __init__(self) -> None:
        self.records = []
        self.fail: Exception | None = None
        self.delay = 0.0

    async def send(self, records) -> None:
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        self.records += records


async def test_concurrent_requests_for_one_partition_become_one_message():
    broker = Broker()
    coalescer = Coalescer(broker.send, linger_ms=20)
    await asyncio.gather(*(coalescer.submit([("s", 0, batch(str(i), [1000]))]) for i in range(10)))
    assert len(broker.records) == 1
    assert len(SampleBatch.decode(broker.records[0][3])) == 10


async def test_no_request_returns_before_its_message_is_acknowledged():
    broker = Broker()
    broker.delay = 0.05
    coalescer = Coalescer(broker.send, linger_ms=5)
    task = asyncio.create_task(coalescer.submit([("s", 0, batch("a", [1000]))]))
    await asyncio.sleep(0.03)
    assert not task.done() and broker.records == []
    await task
    assert len(broker.records) == 1


async def test_partitions_and_topics_stay_apart():
    broker = Broker()
    coalescer = Coalescer(broker.send, linger_ms=5)
    await asyncio.gather(
        coalescer.submit([("s", 0, batch("a", [1000])), ("s", 1, batch("b", [1000]))]),
        coalescer.submit([("s", 1, batch("c", [1000])), ("g", 0, batch("d", [1000]))]),
    )
    sizes = sorted((topic, partition, len(SampleBatch.decode(value))) for topic, partition, _, value in broker.records)
    assert sizes == [("g", 0, 1), ("s", 0, 1), ("s", 1, 2)]


async def test_a_full_message_goes_without_waiting_for_the_linger():
    broker = Broker()
    coalescer = Coalescer(broker.send, linger_ms=10_000, max_samples=100)
    started = time.monotonic()
    await coalescer.submit([("s", 0, batch("a", range(0, 100_000, 1000)))])
    assert time.monotonic() - started < 5
    assert len(SampleBatch.decode(broker.records[0][3])) == 100


async def test_a_failed_produce_fails_every_request_in_it_and_the_next_ones_go_through():
    broker = Broker()
    broker.fail = ConnectionError("broker gone")
    coalescer = Coalescer(broker.send, linger_ms=10)
    results = await asyncio.gather(
        *(coalescer.submit([("s", 0, batch(str(i), [1000]))]) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)
    broker.fail = None
    await coalescer.submit([("s", 0, batch("a", [2000]))])
    assert len(broker.records) == 1


async def test_drain_produces_what_is_pending():
    broker = Broker()
    coalescer = Coalescer(broker.send, linger_ms=60_000)
    task = asyncio.create_task(coalescer.submit([("s", 0, batch("a", [1000]))]))
    await asyncio.sleep(0)
    await coalescer.drain()
    await asyncio.wait_for(task, 1)
    assert len(broker.records) == 1


def test_merge_keeps_each_series_samples_in_order():
    merged = SampleBatch.concat([batch("a", [1000, 2000]), batch("b", [1000]), batch("a", [3000])])
    a_key = batch("a", [0]).series_keys[0]
    rows = [i for i, key in enumerate(merged.series_keys) if key == a_key]
    stamps = merged.timestamps[np.isin(merged.series_index, rows)]
    assert stamps.tolist() == [1000, 2000, 3000]
    assert SampleBatch.decode(merged.encode()).timestamps.tolist() == merged.timestamps.tolist()


@pytest.mark.parametrize("count", [1, 3])
def test_merge_of_one_or_more_batches_has_all_samples(count):
    merged = SampleBatch.concat([batch(str(i), [1000, 2000]) for i in range(count)])
    assert len(merged) == 2 * count
