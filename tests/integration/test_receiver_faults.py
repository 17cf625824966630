"""The receiver under hostile input and faults (issue 9), over real HTTP against a real Kafka.

Each test states what main did wrong: a sample a year ahead answered 204, no
bound on what is in flight, a big decode holding small requests behind it, one
slow acknowledgement failing every request in flight, a bad gzip body logged
as a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import cramjam
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from detector.wire.proto import remote_pb2
from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.receiver import SERVER_OPTIONS, KafkaGate, create_receiver_app, run_receiver
from pipelines.settings import Settings
from pipelines.stack.kafka import create_topics
from pipelines.stack.process import free_port
from tests.integration.test_receiver import consume_batches

pytestmark = pytest.mark.integration

UP = (("__name__", "up"), ("instance", "a:1"), ("job", "api"))
HOUR = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def fleet(series: int, stamp: int, name: str = "flood") -> list:
    return [(((("__name__", name), ("instance", f"i{i % 500}"), ("job", "api"), ("n", str(i)))), [(stamp, float(i))])
            for i in range(series)]


async def start(settings: Settings, **app_options) -> tuple[TestClient, KafkaGate]:
    gate = KafkaGate(settings.kafka_bootstrap, timeout_s=settings.produce_timeout_s)
    gate.start()
    app = create_receiver_app(settings, gate, CollectorRegistry(), **app_options)
    client = TestClient(TestServer(app, **SERVER_OPTIONS))
    await client.start_server()
    for _ in range(200):
        if gate.ready:
            break
        await asyncio.sleep(0.05)
    return client, gate


async def post(client: TestClient, body: bytes) -> tuple[int, str, float]:
    t = time.perf_counter()
    answer = await client.post("/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS)
    return answer.status, await answer.text(), time.perf_counter() - t


@pytest.fixture
async def topic(kafka, app_id) -> str:
    name = f"{app_id}-samples"
    await create_topics(kafka.bootstrap, {name: 4})
    return name


async def test_samples_outside_the_window_are_refused_alone_or_dropped_beside_good_ones(kafka, topic):
    client, gate = await start(Settings(kafka_bootstrap=kafka.bootstrap, samples_topic=topic, partitions=4))
    now = now_ms()
    try:
        year_ahead = await post(client, encode_write_request([(UP, [(now + 365 * 24 * HOUR, 1.0)])]))
        at_zero = await post(client, encode_write_request([(UP, [(0, 1.0)])]))
        mixed = await post(client, encode_write_request([(UP, [(0, 1.0), (now - 1000, 7.0), (now + 24 * HOUR, 1.0)])]))
        page = await (await client.get("/metrics")).text()
    finally:
        await client.close()
        await gate.close()
    for status, text, _ in (year_ahead, at_zero):
        assert status == 400
        assert 'series {__name__="up", instance="a:1", job="api"}: 1 samples outside the accepted window' in text
        assert "HEADROOM_MAX_SAMPLE_AHEAD=5m" in text
    assert mixed[0] == 204
    (batch,) = await consume_batches(kafka.bootstrap, topic, 1)
    assert batch.timestamps.tolist() == [now - 1000] and batch.values.tolist() == [7.0]
    assert 'headroom_receiver_dropped_samples_total{reason="too_old"} 2.0' in page
    assert 'headroom_receiver_dropped_samples_total{reason="too_new"} 2.0' in page


@pytest.mark.parametrize("bound", ["bytes", "big decodes"])
async def test_overload_is_shed_at_once_with_503_and_retry_after_and_nothing_acknowledged_is_lost(kafka, topic, bound):
    now = now_ms()
    big = [encode_write_request(fleet(30_000, now, name=f"flood_{k}")) for k in range(6)]
    limit = {"max_bytes_in_flight": int(len(big[0]) * 1.5)} if bound == "bytes" else {"big_decodes_queued": 1}
    settings = Settings(kafka_bootstrap=kafka.bootstrap, samples_topic=topic, partitions=4, **limit)
    client, gate = await start(settings)
    try:
        answers = await asyncio.gather(*(post(client, body) for body in big))
    finally:
        await client.close()
        await gate.close()
    shed = [a for a in answers if a[0] == 503]
    accepted = [k for k, a in enumerate(answers) if a[0] == 204]
    assert shed and accepted and len(shed) + len(accepted) == len(big), [a[:2] for a in answers]
    assert all(f"too many {bound} in flight" in text and seconds < 1.0 for _, text, seconds in shed), shed
    # Every acknowledged request is in Kafka, whole.
    batches = await consume_batches(kafka.bootstrap, topic, 30_000 * len(accepted))
    names = {batch.series_labels(0)[0][1] for batch in batches}
    assert names == {f"flood_{k}" for k in accepted}
    assert sum(len(b) for b in batches) == 30_000 * len(accepted)


async def test_a_sustained_flood_of_new_series_is_shed_when_the_event_loop_falls_behind(kafka, topic):
    # Each body is small (decoded inline) but all its series are new: the
    # cost is CPU, which the request and byte bounds do not see.
    now = now_ms()
    bodies = [encode_write_request(fleet(3000, now, name=f"fresh_{k}")) for k in range(60)]
    assert max(map(len, bodies)) < Settings().inline_decode_max_bytes
    settings = Settings(kafka_bootstrap=kafka.bootstrap, samples_topic=topic, partitions=4, max_event_loop_lag="300ms")
    client, gate = await start(settings)
    answers: dict[int, tuple[int, str, float]] = {}

    async def sender() -> None:
        while bodies:
            k = len(bodies) - 1
            answers[k] = await post(client, bodies.pop())

    try:
        await asyncio.gather(*(sender() for _ in range(16)))
    finally:
        await client.close()
        await gate.close()
    shed = [a for a in answers.values() if a[0] == 503]
    accepted = [k for k, a in answers.items() if a[0] == 204]
    assert shed and len(shed) + len(accepted) == 60, sorted({a[0] for a in answers.values()})
    assert all(text.startswith("receiver busy: ") and text.endswith("; retry") for _, text, _ in shed), shed[:3]
    batches = await consume_batches(kafka.bootstrap, topic, 3000 * len(accepted))
    assert {batch.series_labels(0)[0][1] for batch in batches} == {f"fresh_{k}" for k in accepted}
    assert sum(len(b) for b in batches) == 3000 * len(accepted)


async def test_a_big_decode_does_not_hold_small_requests_or_metrics_behind_it(kafka, topic):
    now = now_ms()
    big = encode_write_request(fleet(200_000, now))
    small = encode_write_request([(UP, [(now, 1.0)])])
    settings = Settings(kafka_bootstrap=kafka.bootstrap, samples_topic=topic, partitions=4, max_series_per_request=250_000)
    client, gate = await start(settings)
    try:
        assert (await post(client, small))[0] == 204  # connections and producer warm
        flood = asyncio.create_task(post(client, big))
        await asyncio.sleep(0.3)  # the big body is being decoded
        small_latencies, metric_latencies = [], []
        while not flood.done():
            status, _, seconds = await post(client, small)
            assert status == 204
            small_latencies.append(seconds)
            t = time.perf_counter()
            assert (await client.get("/metrics")).status == 200
            metric_latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)
        big_status, _, big_seconds = await flood
    finally:
        await client.close()
        await gate.close()
    assert big_status == 204
    assert big_seconds > 1.5, "the big request must take long enough for the test to mean something"
    assert len(small_latencies) >= 5, small_latencies  # on the event loop, none could complete meanwhile
    assert max(small_latencies) < 0.75 and max(metric_latencies) < 0.75, (small_latencies, metric_latencies)


async def test_one_slow_acknowledgement_fails_its_request_only(kafka, app_id, topic):
    # The metadata topic does not exist: a request carrying metadata waits for
    # that topic's metadata and times out, while requests of samples keep
    # being acknowledged through the same producer.
    settings = Settings(kafka_bootstrap=kafka.bootstrap, samples_topic=topic, partitions=4, produce_timeout="2s",
                        metadata_topic=f"{app_id}-missing")
    client, gate = await start(settings)
    others = []

    async def keep_writing(stop: asyncio.Event) -> None:
        k = 0
        while not stop.is_set():
            k += 1
            body = encode_write_request([((("__name__", "queue_depth"), ("job", "api")), [(now_ms(), float(k))])])
            others.append((await post(client, body))[0])
            await asyncio.sleep(0.02)

    metadata = remote_pb2.WriteRequest()
    entry = metadata.metadata.add()
    entry.type, entry.metric_family_name = 2, "queue_depth"  # a gauge
    try:
        assert (await post(client, encode_write_request([(UP, [(now_ms(), 1.0)])])))[0] == 204
        stop = asyncio.Event()
        writer = asyncio.create_task(keep_writing(stop))
        slow = await post(client, bytes(cramjam.snappy.compress_raw(metadata.SerializeToString())))
        await asyncio.sleep(1.0)  # main replaced the producer here: every request in flight or soon after failed
        stop.set()
        await writer
    finally:
        await client.close()
        await gate.close()
    assert slow[0] == 503 and "Kafka did not acknowledge" in slow[1]
    assert len(others) > 20 and set(others) == {204}, others


async def test_a_bad_gzip_body_is_415_and_one_log_line_without_a_traceback(kafka, topic, caplog):
    port = free_port()
    settings = Settings(kafka_bootstrap=kafka.bootstrap, samples_topic=topic, partitions=4, receiver_port=port)
    stop = asyncio.Event()
    server = asyncio.create_task(run_receiver(settings, stop=stop))
    caplog.set_level(logging.INFO)
    statuses = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/-/ready") as ready:
                        if ready.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            for _ in range(3):
                async with session.post(f"http://127.0.0.1:{port}/api/v1/write", data=b"not gzip at all" * 1000,
                                        headers={**REMOTE_WRITE_HEADERS, "Content-Encoding": "gzip"}) as answer:
                    statuses.append((answer.status, await answer.text()))
    finally:
        stop.set()
        await server
    assert statuses == [(415, "Content-Encoding must be 'snappy' (remote-write 1.0), got 'gzip'")] * 3
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    mistakes = [r.getMessage() for r in caplog.records if r.name == "headroom.receiver" and "415" in r.getMessage()]
    assert len(mistakes) == 1 and "Content-Encoding must be 'snappy'" in mistakes[0]

