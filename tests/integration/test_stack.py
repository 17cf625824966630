"""The local services are real: a Kafka broker that keeps data across a restart,
a Prometheus that answers queries, an Alertmanager that stores posted alerts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from pipelines.stack import AlertmanagerServer, KafkaBroker, PrometheusServer, create_topics
from pipelines.stack.process import http_ready, port_answers

pytestmark = pytest.mark.integration

TOPIC = "stack-test"


async def read_partition(bootstrap: str, partition: int) -> list[tuple[bytes | None, bytes | None]]:
    """Every (key, value) in ``TOPIC``'s ``partition``, from the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = TopicPartition(TOPIC, partition)
        consumer.assign([assigned])
        await consumer.seek_to_beginning(assigned)
        end = (await consumer.end_offsets([assigned]))[assigned]
        records = []
        async with asyncio.timeout(30):
            while await consumer.position(assigned) < end:
                batches = await consumer.getmany(assigned, timeout_ms=1000)
                records += [(record.key, record.value) for record in batches.get(assigned, [])]
        return records
    finally:
        await consumer.stop()


async def test_kafka_broker_keeps_messages_across_restart(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka")
    broker.start()
    try:
        await create_topics(broker.bootstrap, {TOPIC: 4})
        await create_topics(broker.bootstrap, {TOPIC: 4})  # idempotent

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            assert len(await producer.partitions_for(TOPIC)) == 4
            await producer.send_and_wait(TOPIC, b"sample", key=b"series-1", partition=2)
        finally:
            await producer.stop()
        assert await read_partition(broker.bootstrap, 2) == [(b"series-1", b"sample")]

        # Another process would find the running broker through the data dir.
        assert KafkaBroker(tmp_path / "kafka").bootstrap == broker.bootstrap
        assert KafkaBroker(tmp_path / "kafka").is_running()

        bootstrap = broker.bootstrap
        broker.stop()
        assert not broker.is_running()
        assert not port_answers(broker.port)

        broker.start()
        assert broker.bootstrap == bootstrap
        assert await read_partition(broker.bootstrap, 2) == [(b"series-1", b"sample")]
    finally:
        broker.stop()
    assert not port_answers(broker.port)


def test_prometheus_answers_queries(tmp_path: Path) -> None:
    with PrometheusServer(tmp_path / "prometheus") as prometheus:
        assert http_ready(f"{prometheus.url}/-/ready")
        [sample] = prometheus.query("vector(1)")
        assert sample["value"][1] == "1"
    assert not prometheus.is_running()


def test_alertmanager_keeps_posted_alert(tmp_path: Path) -> None:
    with AlertmanagerServer(tmp_path / "alertmanager") as alertmanager:
        alertmanager.post_alerts([{
            "labels": {"alertname": "StackTest", "severity": "page"},
            "annotations": {"summary": "posted by test_stack"},
        }])
        [alert] = alertmanager.alerts()
        assert alert["labels"] == {"alertname": "StackTest", "severity": "page"}
        assert alert["annotations"]["summary"] == "posted by test_stack"
        assert alert["status"]["state"] == "active"
    assert not alertmanager.is_running()
