"""A real Prometheus scrapes the simulator and remote-writes to Headroom; a runbook alert fires."""

from __future__ import annotations

import asyncio
import time

import pytest

from simulator.runbook import RunbookSimulator
from pipelines.local import LocalPipeline
from simulator.serve import serve_metrics
from pipelines.stack.prometheus import PrometheusServer
from tests.support import read_alerts

pytestmark = pytest.mark.integration


async def test_runbook_circuit_breaker_alert_fires_from_prometheus_traffic(kafka, tmp_path, app_id):
    # The "breaker" scenario opens the circuit breaker 5 s after start; the
    # runbook's rule (verbatim pack) needs it open for 30 s.
    sim = RunbookSimulator(scenario="breaker", start_ms=int(time.time() * 1000))
    runner, port = await serve_metrics(sim)
    pipeline = LocalPipeline(
        kafka.bootstrap, tmp_path / "run", rule_files=("backpressure",), app_id=app_id,
        extra_env={"HEADROOM_EVALUATION_INTERVAL": "1s"},
    )
    await asyncio.to_thread(pipeline.start)
    prometheus = PrometheusServer(tmp_path / "prometheus", scrape_targets=[f"127.0.0.1:{port}"], remote_write_url=pipeline.write_url)
    await asyncio.to_thread(prometheus.start)
    try:
        events = await read_alerts(
            kafka.bootstrap, pipeline.alerts_topic,
            lambda ev: any(e["rule"] == "TaskerCircuitBreakerOpen" and e["state"] == "firing" for e in ev),
            timeout=120,
        )
    finally:
        # Prometheus first: it can hang on shutdown while its receiver is gone.
        await asyncio.to_thread(prometheus.stop)
        await asyncio.to_thread(pipeline.stop)
        await runner.cleanup()
    breaker = [e for e in events if e["rule"] == "TaskerCircuitBreakerOpen"]
    assert [e["state"] for e in breaker] == ["pending", "firing"]
    pending, firing = breaker
    assert firing["fired_at"] - pending["active_at"] >= 30_000
    assert firing["labels"]["severity"] == "critical"
    assert firing["labels"]["instance"] == pending["labels"]["instance"]
    assert firing["annotations"]["description"] == f"Circuit breaker {firing['labels']['instance']} has been open for > 30s"
    assert not [e for e in events if e["state"] == "firing" and e["rule"] != "TaskerCircuitBreakerOpen"]
