"""An anomaly rule with a direction, end to end: remote-write → Kafka → worker → alerts topic.

The runbook simulator's ``ramp-queue-15m`` (40 minutes calm, then the orders queue fills in 15 minutes) is pushed
to the worker with a rule file that splits the queue's anomalies by ``headroom_anomaly_deviation``: only the
rule asking for "above its expected level by 20% or more" may fire for the filling queue.
"""

from __future__ import annotations

import asyncio

import pytest

from pipelines.local import LocalPipeline
from tests.support import push_live_scenario, read_alerts

pytestmark = pytest.mark.integration

STEP_MS = 15_000
PUSHED_MS = 55 * 60_000  # the ramp starts at 40 minutes and reaches the max depth at 55
RULES = """
groups:
  - name: queue anomalies with a direction
    interval: 15s
    rules:
      - alert: QueueDepthAnomalouslyHigh
        expr: headroom_anomaly_score{metric="pgmq_queue_depth"} > 0.301 and headroom_anomaly_deviation > 0.2
      - alert: QueueDepthAnomalouslyLow
        expr: headroom_anomaly_score{metric="pgmq_queue_depth"} > 0.301 and headroom_anomaly_deviation < -0.2
"""


async def test_a_filling_queue_fires_the_rule_for_anomalously_high_and_not_the_one_for_low(kafka, tmp_path, app_id):
    rules = tmp_path / "direction.yml"
    rules.write_text(RULES)
    pipeline = LocalPipeline(kafka.bootstrap, tmp_path / "run", rule_files=(str(rules),), app_id=app_id)
    await asyncio.to_thread(pipeline.start)
    try:
        start_ms = await push_live_scenario(pipeline.write_url, "ramp-queue-15m", PUSHED_MS, STEP_MS)

        def orders_fired(events: list[dict]) -> bool:
            return any(e["rule"] == "QueueDepthAnomalouslyHigh" and e["state"] == "firing"
                       and e["labels"].get("queue_name") == "orders" for e in events)

        events = await read_alerts(kafka.bootstrap, pipeline.alerts_topic, orders_fired)
        assert orders_fired(events), [(e["rule"], e["state"], e["labels"].get("queue_name")) for e in events]
        high = next(e for e in events if e["rule"] == "QueueDepthAnomalouslyHigh" and e["state"] == "firing")
        # it fires once the ramp has begun (40 minutes in), not during the calm
        assert high["fired_at"] >= start_ms + 40 * 60_000
        assert not [e for e in events if e["rule"] == "QueueDepthAnomalouslyLow"]
    finally:
        await asyncio.to_thread(pipeline.stop)
