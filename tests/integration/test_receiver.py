"""The receiver over real HTTP against a real Kafka: answers, delivery, outages."""

from __future__ import annotations

import asyncio
import struct

import cramjam
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from detector.wire.batch import SampleBatch
from detector.wire.proto import remote_pb2
from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.receiver import KafkaGate, create_receiver_app
from pipelines.settings import Settings
from pipelines.stack.kafka import KafkaBroker, create_topics

pytestmark = pytest.mark.integration

STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
UP = (("__name__", "up"), ("instance", "a:1"), ("job", "api"))


async def receiver_client(bootstrap: str, topic: str, *, timeout: str = "10s", token: str | None = None) -> tuple[TestClient, KafkaGate]:
    # These tests send fixed timestamps from 1970: the accepted window is opened wide for them.
    settings = Settings(kafka_bootstrap=bootstrap, samples_topic=topic, partitions=4, max_body_bytes=1_000_000, produce_timeout=timeout,
                        catch_up_window="100y")
    gate = KafkaGate(bootstrap, timeout_s=settings.produce_timeout_s)
    gate.start()
    client = TestClient(TestServer(create_receiver_app(settings, gate, CollectorRegistry(), bearer_token=token)))
    await client.start_server()
    for _ in range(200):
        if gate.ready:
            break
        await asyncio.sleep(0.05)
    return client, gate


async def consume_batches(bootstrap: str, topic: str, samples: int, timeout: float = 30.0) -> list[SampleBatch]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    batches: list[SampleBatch] = []
    try:
        async with asyncio.timeout(timeout):
            while sum(len(b) for b in batches) < samples:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    batches += [SampleBatch.decode(r.value) for r in records]
    finally:
        await consumer.stop()
    return batches


@pytest.fixture
async def topic(kafka, app_id) -> str:
    name = f"{app_id}-samples"
    await create_topics(kafka.bootstrap, {name: 4})
    return name


async def test_samples_reach_kafka_bit_exact_including_the_stale_marker(kafka, topic):
    client, gate = await receiver_client(kafka.bootstrap, topic)
    values = [1.5, float("nan"), float("inf"), -float("inf"), STALE_NAN, -0.0]
    body = encode_write_request([(UP, [(1000 + i, v) for i, v in enumerate(values)])])
    try:
        answer = await client.post("/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS)
        assert answer.status == 204
    finally:
        await client.close()
        await gate.close()
    (batch,) = await consume_batches(kafka.bootstrap, topic, len(values))
    assert batch.series_labels(0) == UP
    assert batch.timestamps.tolist() == [1000 + i for i in range(len(values))]
    sent_bits = np.array(values, dtype=np.float64).view(np.uint64)
    assert batch.values.view(np.uint64).tolist() == sent_bits.tolist()
    assert int(batch.values.view(np.uint64)[4]) == 0x7FF0000000000002


async def test_invalid_series_get_400_naming_them_while_valid_ones_are_delivered(kafka, topic):
    client, gate = await receiver_client(kafka.bootstrap, topic)
    unsorted = (("__name__", "bad"), ("zone", "z"), ("job", "x"))
    body = encode_write_request([(UP, [(1000, 1.0)]), (unsorted, [(1000, 2.0)])])
    try:
        answer = await client.post("/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS)
        text = await answer.text()
    finally:
        await client.close()
        await gate.close()
    assert answer.status == 400
    assert '__name__="bad"' in text and "out of order" in text
    (batch,) = await consume_batches(kafka.bootstrap, topic, 1)
    assert batch.series_labels(0) == UP and batch.values.tolist() == [1.0]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({**REMOTE_WRITE_HEADERS, "Content-Encoding": "gzip"}, b"x", 415),
        ({**REMOTE_WRITE_HEADERS, "Content-Type": "application/json"}, b"x", 415),
        (REMOTE_WRITE_HEADERS, b"\xff\xff\xff\xff\x0fnot snappy", 413),
        (REMOTE_WRITE_HEADERS, b"\x10garbage", 400),
        (REMOTE_WRITE_HEADERS, bytes(cramjam.snappy.compress_raw(b"\x0a\x05\x0a\x03")), 400),
        (REMOTE_WRITE_HEADERS, b"\0" * 1_000_001, 413),
    ],
    ids=["gzip", "json", "snappy-header-too-big", "corrupt-snappy", "truncated-protobuf", "body-too-big"],
)
async def test_bad_requests_get_4xx_never_5xx(kafka, topic, headers, body, status):
    client, gate = await receiver_client(kafka.bootstrap, topic)
    try:
        answer = await client.post("/api/v1/write", data=body, headers=headers)
        assert answer.status == status, await answer.text()
    finally:
        await client.close()
        await gate.close()


async def test_bearer_token_is_checked_when_configured(kafka, topic):
    client, gate = await receiver_client(kafka.bootstrap, topic, token="s3cret")
    body = encode_write_request([(UP, [(1000, 1.0)])])
    try:
        missing = await client.post("/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS)
        wrong = await client.post("/api/v1/write", data=body, headers={**REMOTE_WRITE_HEADERS, "Authorization": "Bearer nope"})
        right = await client.post("/api/v1/write", data=body, headers={**REMOTE_WRITE_HEADERS, "Authorization": "Bearer s3cret"})
    finally:
        await client.close()
        await gate.close()
    assert (missing.status, wrong.status, right.status) == (401, 403, 204)


async def test_kafka_down_gives_503_with_retry_after_then_recovers(tmp_path):
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    try:
        await create_topics(broker.bootstrap, {"outage-samples": 4})
        client, gate = await receiver_client(broker.bootstrap, "outage-samples", timeout="3s")
        try:
            first = encode_write_request([(UP, [(1000, 1.0)])])
            assert (await client.post("/api/v1/write", data=first, headers=REMOTE_WRITE_HEADERS)).status == 204
            await asyncio.to_thread(broker.stop)
            during = await client.post("/api/v1/write", data=encode_write_request([(UP, [(2000, 2.0)])]), headers=REMOTE_WRITE_HEADERS)
            assert during.status == 503
            assert during.headers["Retry-After"] == "1"
            await asyncio.to_thread(broker.start)
            # Like Prometheus: resend the refused request until it is accepted.
            retry = encode_write_request([(UP, [(2000, 2.0)])])
            statuses = []
            for _ in range(120):
                statuses.append((await client.post("/api/v1/write", data=retry, headers=REMOTE_WRITE_HEADERS)).status)
                if statuses[-1] == 204:
                    break
                await asyncio.sleep(0.5)
            assert statuses[-1] == 204, statuses
            assert set(statuses[:-1]) <= {503}
        finally:
            await client.close()
            await gate.close()
        batches = await consume_batches(broker.bootstrap, "outage-samples", 2)
        # Both acknowledged samples are in Kafka; the 503'd attempt may also be
        # there (a produce can land after its timeout): the engine drops such
        # duplicates, so only presence is asserted.
        stamps = sorted(set(np.concatenate([b.timestamps for b in batches]).tolist()))
        assert stamps == [1000, 2000]
    finally:
        broker.stop()


def test_proto_view_of_labels_as_raw_bytes_matches_the_ordinary_message():
    body = remote_pb2.WriteRequest()
    series = body.timeseries.add()
    label = series.labels.add()
    label.name, label.value = b"__name__", b"up"
    raw = remote_pb2.RawWriteRequest.FromString(body.SerializeToString())
    assert remote_pb2.Label.FromString(raw.timeseries[0].labels[0]) == label
