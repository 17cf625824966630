"""A ramping queue, end to end: remote-write → Kafka → worker → Alertmanager, forecasts topic and /metrics.

The runbook simulator's ``ramp-queue-15m`` (40 minutes calm, then the orders
queue fills to its max depth in 15 minutes) is pushed faster than real time,
stamped so that its last sample is just before now: the data is live, so the
worker notifies, and Alertmanager's clock agrees with the alerts' ``endsAt``.
The push stops when the queue reaches its max depth, while the runbook's
critical rule (depth above 90% of max for 5 minutes) is still pending.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from datetime import datetime

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipelines.local import LocalPipeline
from pipelines.stack.alertmanager import AlertmanagerServer
from tests.support import push_live_scenario, read_alerts

pytestmark = pytest.mark.integration

STEP_MS = 15_000
PUSHED_MS = 55 * 60_000  # the ramp starts at 40 minutes and reaches the max depth at 55
ORDERS = {"instance": "orch-0:9100", "job": "tasker-orchestration", "queue_name": "orders"}
SUMMARY = re.compile(
    r'^pgmq_queue_depth\{instance="orch-0:9100", job="tasker-orchestration", queue_name="orders"\} '
    r"(reaches pgmq_queue_max_depth \(10000\) in about [0-9smhd]+ \([0-9smhd]+-[0-9smhd∞]+\)|has reached pgmq_queue_max_depth \(10000\)"
    r"|is at \d+, about to reach pgmq_queue_max_depth \(10000\))$"
)


async def eventually(check, timeout: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s; last result {result!r}")
        await asyncio.sleep(every)


def is_orders(labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in ORDERS.items())


def worker_gauges(port: int) -> dict[str, list[tuple[dict, float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {f.name: [(s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


async def test_a_ramping_queue_warns_in_alertmanager_before_the_critical_rule_fires(kafka, tmp_path, app_id):
    alertmanager = AlertmanagerServer(tmp_path / "alertmanager")
    await asyncio.to_thread(alertmanager.start)
    pipeline = LocalPipeline(
        kafka.bootstrap, tmp_path / "run", rule_files=("backpressure", "backpressure-levels"), app_id=app_id,
        extra_env={"HEADROOM_ALERTMANAGER_URLS": alertmanager.url},
    )
    await asyncio.to_thread(pipeline.start)
    try:
        # the last sample 15 s before now, on the 15 s grid the rules evaluate on
        await push_live_scenario(pipeline.write_url, "ramp-queue-15m", PUSHED_MS, STEP_MS)

        async with httpx.AsyncClient(timeout=10) as http:
            async def warning() -> list[dict]:
                answer = await http.get(f"{alertmanager.url}/api/v2/alerts", params={"filter": 'alertname="SaturationForecast"'})
                return [a for a in answer.json() if is_orders(a["labels"]) and a["status"]["state"] == "active"]

            (alert,) = await eventually(warning)
            critical = await http.get(f"{alertmanager.url}/api/v2/alerts",
                                      params={"filter": 'alertname="TaskerPGMQQueueDepthCritical"'})
            assert critical.json() == []
        assert alert["labels"] == {**ORDERS, "alertname": "SaturationForecast", "metric": "pgmq_queue_depth",
                                   "severity": "warning"}
        assert SUMMARY.match(alert["annotations"]["summary"]), alert["annotations"]["summary"]

        def seen(events: list[dict]) -> bool:
            rules = {(e["rule"], e["state"]) for e in events if is_orders(e["labels"])}
            return {("SaturationForecast", "firing"), ("TaskerPGMQQueueDepthCritical", "pending")} <= rules

        events = [e for e in await read_alerts(kafka.bootstrap, pipeline.alerts_topic, seen) if is_orders(e["labels"])]
        assert seen(events), [(e["rule"], e["state"]) for e in events]
        fired = next(e for e in events if e["rule"] == "SaturationForecast" and e["state"] == "firing")
        pending = next(e for e in events if e["rule"] == "TaskerPGMQQueueDepthCritical")
        assert pending["state"] == "pending"  # the critical rule has not fired: its `for` runs
        assert fired["fired_at"] + 3 * 60_000 < pending["active_at"] + 5 * 60_000  # minutes of warning
        assert datetime.fromisoformat(alert["startsAt"]).timestamp() * 1000 == pytest.approx(fired["fired_at"])

        def forecasts_seen(events: list[dict]) -> bool:
            return any(e["state"] == "firing" and is_orders(e["labels"]) for e in events)

        forecasts = await read_alerts(kafka.bootstrap, pipeline.forecasts_topic, forecasts_seen)
        orders = [e for e in forecasts if is_orders(e["labels"]) and e["labels"]["__name__"] == "pgmq_queue_depth"]
        assert orders and all(e["kind"] == "forecast" and e["bound_name"] == "pgmq_queue_max_depth" for e in orders)
        assert all(a["t"] < b["t"] for a, b in zip(orders, orders[1:]))  # one per evaluation, in event time
        assert any(e["eta_seconds"] is not None and e["eta_low_seconds"] <= e["eta_seconds"] for e in orders)

        async def firing_gauge() -> dict | None:
            metrics = await asyncio.to_thread(worker_gauges, pipeline.worker_port)
            state = [v for labels, v in metrics.get("headroom_early_warning_state", []) if is_orders(labels)]
            return metrics if state == [2.0] else None

        metrics = await eventually(firing_gauge, timeout=30)
        gauge_labels = {**ORDERS, "metric": "pgmq_queue_depth", "bound": "pgmq_queue_max_depth", "direction": "up"}
        assert [labels for labels, _ in metrics["headroom_early_warning_state"] if is_orders(labels)] == [gauge_labels]
        etas = {name: [v for labels, v in metrics.get(name, []) if labels == gauge_labels]
                for name in ("headroom_saturation_eta_seconds", "headroom_saturation_eta_lower_seconds",
                             "headroom_saturation_eta_upper_seconds")}
        low, eta, high = (etas[f"headroom_saturation_eta{s}_seconds"] for s in ("_lower", "", "_upper"))
        assert len(eta) == 1 and 0 <= low[0] <= eta[0] <= high[0]
        scores = [v for labels, v in metrics["headroom_anomaly_score"]
                  if is_orders(labels) and labels["metric"] == "pgmq_queue_depth"]
        assert len(scores) == 1 and 0.0 <= scores[0] <= 1.0
    finally:
        await asyncio.to_thread(pipeline.stop)
        await asyncio.to_thread(alertmanager.stop)
