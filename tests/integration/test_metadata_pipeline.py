"""A real Prometheus's metadata reaches every worker through the compacted metadata topic."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from aiokafka import AIOKafkaConsumer

from detector.wire.metadata import decode_type
from simulator.runbook import RunbookSimulator
from pipelines.local import LocalPipeline
from simulator.serve import serve_metrics
from pipelines.stack.prometheus import PrometheusServer

pytestmark = pytest.mark.integration


async def _read_types(bootstrap: str, topic: str, until, timeout: float) -> dict[str, str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    types: dict[str, str] = {}
    try:
        async with asyncio.timeout(timeout):
            while not until(types):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    types.update({r.key.decode(): decode_type(r.value) for r in records})
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return types


def _worker_metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


async def test_prometheus_metadata_reaches_the_topic_and_the_worker(kafka, tmp_path, app_id):
    sim = RunbookSimulator(scenario="calm", start_ms=int(time.time() * 1000))
    runner, port = await serve_metrics(sim)
    pipeline = LocalPipeline(kafka.bootstrap, tmp_path / "run", rule_files=("backpressure",), app_id=app_id)
    await asyncio.to_thread(pipeline.start)
    prometheus = PrometheusServer(
        tmp_path / "prometheus", scrape_targets=[f"127.0.0.1:{port}"], remote_write_url=pipeline.write_url,
        extra_remote_write={"metadata_config": {"send": True, "send_interval": "1s"}},
    )
    await asyncio.to_thread(prometheus.start)
    try:
        types = await _read_types(kafka.bootstrap, pipeline.metadata_topic,
                                  lambda t: "pgmq_queue_depth" in t and "worker_handler_semaphore_wait_ms" in t, timeout=90)
        known = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            known = await asyncio.to_thread(_worker_metric, pipeline.worker_port, "headroom_metric_types_known")
            if known and known >= len(types):
                break
            await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(prometheus.stop)
        await asyncio.to_thread(pipeline.stop)
        await runner.cleanup()
    assert types.get("pgmq_queue_depth") == "gauge"
    assert types.get("worker_handler_semaphore_wait_ms") == "histogram"
    assert known is not None and known >= len(types) > 2
