"""The whole pipeline delivers to a real Alertmanager: POST → Kafka → worker → Alertmanager."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from pipelines.local import LocalPipeline
from pipelines.stack.alertmanager import AlertmanagerServer
from tests.support import write_rules

pytestmark = pytest.mark.integration

DOWN = (("__name__", "up"), ("instance", "api-0:9100"), ("job", "api"))


async def test_a_firing_alert_reaches_alertmanager_with_its_labels_and_annotations(kafka, tmp_path, app_id):
    alertmanager = AlertmanagerServer(tmp_path / "alertmanager")
    await asyncio.to_thread(alertmanager.start)
    rules = write_rules(tmp_path, [{
        "alert": "TargetDown",
        "expr": "up == 0",
        "labels": {"severity": "page"},
        "annotations": {"summary": "{{ $labels.instance }} is down"},
    }], interval="1s")
    pipeline = LocalPipeline(
        kafka.bootstrap, tmp_path / "run", rule_files=(str(rules),), app_id=app_id,
        extra_env={"HEADROOM_ALERTMANAGER_URLS": alertmanager.url, "HEADROOM_EXTERNAL_URL": "http://headroom.example"},
    )
    await asyncio.to_thread(pipeline.start)
    try:
        async with aiohttp.ClientSession() as session:
            now = int(time.time() * 1000) // 1000 * 1000  # live data, on a tick
            body = encode_write_request([(DOWN, [(now - 2000, 0.0), (now - 1000, 0.0), (now, 0.0)])])
            async with session.post(pipeline.write_url, data=body, headers=REMOTE_WRITE_HEADERS) as answer:
                assert answer.status == 204
        alerts = []
        for _ in range(100):
            alerts = await asyncio.to_thread(alertmanager.alerts)
            if alerts:
                break
            await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(pipeline.stop)
        await asyncio.to_thread(alertmanager.stop)
    (alert,) = alerts
    assert alert["labels"] == {"alertname": "TargetDown", "instance": "api-0:9100", "job": "api", "severity": "page"}
    assert alert["annotations"] == {"summary": "api-0:9100 is down"}
    assert alert["status"]["state"] == "active"
    assert alert["generatorURL"].startswith("http://headroom.example/graph?g0.expr=up+%3D%3D+0")
