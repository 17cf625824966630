"""POST remote-write → receiver → real Kafka → Faust worker → alert on the alerts topic."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.local import LocalPipeline
from tests.support import OLD_TIMESTAMPS_ENV, STAGING_OFF_ENV, read_alerts, write_rules

pytestmark = pytest.mark.integration

BREAKER = (("__name__", "api_circuit_breaker_state"), ("instance", "api-0:9100"), ("job", "tasker"))
BASE = 1_700_000_000_000 // 15_000 * 15_000  # a multiple of 15 s: evaluation ticks fall on sample times


async def post(session: aiohttp.ClientSession, url: str, series) -> int:
    async with session.post(url, data=encode_write_request(series), headers=REMOTE_WRITE_HEADERS) as answer:
        return answer.status


async def test_alert_goes_pending_then_fires_on_event_time(kafka, tmp_path, app_id):
    rules = write_rules(tmp_path, [{
        "alert": "TaskerCircuitBreakerOpen",
        "expr": "api_circuit_breaker_state == 2",
        "for": "30s",
        "labels": {"severity": "critical"},
        "annotations": {"description": "Circuit breaker {{ $labels.instance }} has been open for > 30s"},
    }], interval="15s")
    pipeline = LocalPipeline(kafka.bootstrap, tmp_path / "run", rule_files=(str(rules),), app_id=app_id, partitions=3,
                             extra_env=OLD_TIMESTAMPS_ENV)
    await asyncio.to_thread(pipeline.start)
    try:
        async with aiohttp.ClientSession() as session:
            # Closed for a minute, open for a minute, closed again: one request per scrape.
            values = [0.0] * 4 + [2.0] * 5 + [0.0] * 3
            for i, value in enumerate(values):
                assert await post(session, pipeline.write_url, [(BREAKER, [(BASE + i * 15_000, value)])]) == 204
        events = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: any(e["state"] == "inactive" for e in ev))
    finally:
        await asyncio.to_thread(pipeline.stop)
    steps = [(e["previous"], e["state"], (e["eval_time"] - BASE) // 1000) for e in events]
    # Open from t=60s: pending at 60, firing 30s later at 90, resolved at the first closed sample (135).
    assert steps == [("inactive", "pending", 60), ("pending", "firing", 90), ("firing", "inactive", 135)]
    firing = events[1]
    assert firing["labels"] == {"alertname": "TaskerCircuitBreakerOpen", "instance": "api-0:9100", "job": "tasker", "severity": "critical"}
    assert firing["annotations"]["description"] == "Circuit breaker api-0:9100 has been open for > 30s"
    assert firing["value"] == "2" and firing["active_at"] == BASE + 60_000 and firing["fired_at"] == BASE + 90_000


async def test_ratio_of_two_metrics_of_one_target_is_evaluated_in_one_partition(kafka, tmp_path, app_id):
    """pgmq_queue_depth / pgmq_queue_max_depth needs both series in one place, over many partitions."""
    rules = write_rules(tmp_path, [{
        "alert": "TaskerPGMQQueueDepthHigh",
        "expr": "pgmq_queue_depth / pgmq_queue_max_depth > 0.8",
        "annotations": {"description": "Queue {{ $labels.queue_name }} at {{ $value | printf \"%.0f\" }}% capacity"},
    }], interval="15s")
    pipeline = LocalPipeline(kafka.bootstrap, tmp_path / "run", rule_files=(str(rules),), app_id=app_id, partitions=8,
                             extra_env=OLD_TIMESTAMPS_ENV)
    await asyncio.to_thread(pipeline.start)
    targets = [f"orch-{i}:9100" for i in range(12)]  # spread over the 8 partitions
    try:
        async with aiohttp.ClientSession() as session:
            for step in range(3):
                series = []
                for i, instance in enumerate(targets):
                    labels = (("instance", instance), ("job", "tasker"), ("queue_name", "orders"))
                    depth = 9000.0 if i % 3 == 0 else 1000.0  # every third target's queue is 90% full
                    t = BASE + step * 15_000
                    series.append(((("__name__", "pgmq_queue_depth"),) + labels, [(t, depth)]))
                    series.append(((("__name__", "pgmq_queue_max_depth"),) + labels, [(t, 10_000.0)]))
                assert await post(session, pipeline.write_url, series) == 204
        events = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: len(ev) >= 4)
    finally:
        await asyncio.to_thread(pipeline.stop)
    firing = sorted(e["labels"]["instance"] for e in events if e["state"] == "firing")
    assert firing == sorted(targets[::3])
    assert {e["annotations"]["description"] for e in events} == {"Queue orders at 1% capacity"}


async def test_rule_across_targets_runs_in_the_global_lane_and_sees_every_partition(kafka, tmp_path, app_id):
    """Depths of six targets (spread over 8 partitions) over limits published by another job."""
    rules = write_rules(tmp_path, [{
        "alert": "QueueNearLimit",
        "expr": "pgmq_queue_depth / on(queue_name) group_left pgmq_queue_limit > 0.8",
    }], interval="15s")
    pipeline = LocalPipeline(kafka.bootstrap, tmp_path / "run", rule_files=(str(rules),), app_id=app_id, partitions=8,
                             extra_env={**OLD_TIMESTAMPS_ENV, **STAGING_OFF_ENV})
    await asyncio.to_thread(pipeline.start)
    queues = [f"q{i}" for i in range(6)]
    try:
        async with aiohttp.ClientSession() as session:
            for step in range(3):
                t = BASE + step * 15_000
                series = []
                for i, queue in enumerate(queues):
                    target = (("instance", f"orch-{i}:9100"), ("job", "tasker"), ("queue_name", queue))
                    series.append(((("__name__", "pgmq_queue_depth"),) + target, [(t, 9000.0 if i % 2 else 100.0)]))
                    limit = (("__name__", "pgmq_queue_limit"), ("instance", "config:80"), ("job", "config"), ("queue_name", queue))
                    series.append((limit, [(t, 10_000.0)]))
                assert await post(session, pipeline.write_url, series) == 204
        events = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, lambda ev: len(ev) >= 3)
    finally:
        await asyncio.to_thread(pipeline.stop)
    assert sorted(e["labels"]["queue_name"] for e in events if e["state"] == "firing") == ["q1", "q3", "q5"]
    assert {e["labels"]["instance"] for e in events} == {"orch-1:9100", "orch-3:9100", "orch-5:9100"}


async def test_aggregation_across_targets_and_absent_run_in_the_global_lane(kafka, tmp_path, app_id):
    """No single target's rejection rate crosses 0.2/s, their sum does; and absent() fires once."""
    rules = write_rules(tmp_path, [
        {"alert": "RejectionsHigh", "expr": "sum by (reason) (rate(api_requests_rejected_total[5m])) > 0.2"},
        {"alert": "ExporterMissing", "expr": 'absent(pgmq_queue_depth{job="pgmq-exporter"})'},
    ], interval="15s")
    pipeline = LocalPipeline(kafka.bootstrap, tmp_path / "run", rule_files=(str(rules),), app_id=app_id, partitions=8,
                             extra_env={**OLD_TIMESTAMPS_ENV, **STAGING_OFF_ENV})
    await asyncio.to_thread(pipeline.start)
    try:
        async with aiohttp.ClientSession() as session:
            for step in range(10):
                t = BASE + step * 15_000
                series = [
                    ((("__name__", "api_requests_rejected_total"), ("instance", f"api-{i}:9100"), ("job", "api"), ("reason", "rate_limit")),
                     [(t, 1000.0 + 1.5 * step)])
                    for i in range(6)
                ]
                assert await post(session, pipeline.write_url, series) == 204
        events = await read_alerts(
            kafka.bootstrap, pipeline.alerts_topic,
            lambda ev: {e["rule"] for e in ev if e["state"] == "firing"} == {"RejectionsHigh", "ExporterMissing"},
        )
    finally:
        await asyncio.to_thread(pipeline.stop)
    firing = [e for e in events if e["state"] == "firing"]
    assert sorted((e["rule"], tuple(sorted(e["labels"].items()))) for e in firing) == [
        ("ExporterMissing", (("alertname", "ExporterMissing"), ("job", "pgmq-exporter"))),
        ("RejectionsHigh", (("alertname", "RejectionsHigh"), ("reason", "rate_limit"))),
    ]
