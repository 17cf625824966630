"""Alerts from a real RuleEngine reach real Alertmanagers (and a webhook) through the Notifier.

The engine runs on event time; Alertmanager judges ``endsAt`` on its wall
clock, so the samples are stamped a couple of minutes before now: the firing
alert's ``endsAt`` (``t + 4 × max(interval, resend_delay)``) is then in the
future, the resolved alert's in the past.

Alertmanager's v2 API never lists a resolved alert (``GET /api/v2/alerts``
skips every alert whose ``endsAt`` has passed, whatever the ``active`` /
``silenced`` / ``inhibited`` filters say), so "resolved" is checked as: the
alert disappears long before the ``endsAt`` it had while firing, and the
Alertmanager counted a received resolved alert
(``alertmanager_alerts_received_total{status="resolved",version="v2"}``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from detector.wire.batch import SampleBatch
from detector.promql import compile_expr
from detector.rules.alerting import AlertingRule
from detector.rules.engine import RuleEngine
from detector.rules.group import RuleGroup
from detector.output.templates import Template
from pipelines.sinks import Notifier
from pipelines.stack.alertmanager import AlertmanagerServer
from pipelines.stack.process import LOCALHOST, free_port

pytestmark = pytest.mark.integration

INTERVAL = 15_000
EXTERNAL_URL = "http://headroom.test:6066"
EXTERNAL_LABELS = {"cluster": "it"}
UP = (("__name__", "up"), ("instance", "host-1"), ("job", "api"))
EXPECTED_LABELS = {"alertname": "InstanceDown", "instance": "host-1", "job": "api", "severity": "page", "cluster": "it"}
EXPECTED_ANNOTATIONS = {"summary": "host-1 is down"}


def engine() -> RuleEngine:
    rule = AlertingRule(
        name="InstanceDown",
        expr=compile_expr("up == 0"),
        expr_text="up == 0",
        labels=(("severity", Template.parse("page")),),
        annotations=(("summary", Template.parse("{{ $labels.instance }} is down")),),
        group="availability",
        source="inline",
    )
    return RuleEngine([RuleGroup("availability", "inline", INTERVAL, (rule,))])


def event_time_base() -> int:
    """An evaluation time two minutes or so before now."""
    return (int(time.time() * 1000) - 120_000) // INTERVAL * INTERVAL


def ms(text: str) -> int:
    return int(round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000))


async def eventually(check, timeout: float = 20.0, every: float = 0.2):
    """Call ``check()`` (awaiting it if it is a coroutine) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not met within {timeout}s; last result {result!r}")
        await asyncio.sleep(every)


async def am_alerts(http: httpx.AsyncClient, am: AlertmanagerServer) -> list[dict]:
    response = await http.get(f"{am.url}/api/v2/alerts", params={"filter": 'alertname="InstanceDown"'})
    response.raise_for_status()
    return response.json()


async def am_received(http: httpx.AsyncClient, am: AlertmanagerServer, status: str) -> float:
    text = (await http.get(f"{am.url}/metrics")).text
    for line in text.splitlines():
        if line.startswith(f'alertmanager_alerts_received_total{{status="{status}",version="v2"}}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture
async def alertmanagers(tmp_path: Path) -> AsyncIterator[list[AlertmanagerServer]]:
    servers = [AlertmanagerServer(tmp_path / "am1"), AlertmanagerServer(tmp_path / "am2")]
    try:
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
        yield servers
    finally:
        for server in servers:
            server.stop()


async def test_alert_fires_and_resolves_on_two_real_alertmanagers(alertmanagers: list[AlertmanagerServer]) -> None:
    dead = f"http://{LOCALHOST}:{free_port()}"  # nothing listens: must not hold up the others
    registry = CollectorRegistry()
    notifier = Notifier.from_urls(
        {"alertmanager": [am.url for am in alertmanagers] + [dead]}, external_url=EXTERNAL_URL,
        external_labels=EXTERNAL_LABELS, registry=registry, backoff_initial=0.2
    )
    rules = engine()
    t0 = event_time_base()
    await notifier.start()
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            # up == 0 at t0, t0+15s, t0+30s: fires at t0 (for: 0s), sent once (resend delay 1m).
            out = rules.ingest(SampleBatch.from_series([(UP, [(t0 + i * INTERVAL, 0.0) for i in range(3)])]))
            assert [(n.starts_at, n.ends_at) for n in out.notifications] == [(t0, t0 + 4 * 60_000)]
            notifier.enqueue(out.notifications)

            for am in alertmanagers:
                alerts = await eventually(lambda am=am: am_alerts(http, am))
                assert len(alerts) == 1
                alert = alerts[0]
                assert alert["labels"] == EXPECTED_LABELS
                assert alert["annotations"] == EXPECTED_ANNOTATIONS
                assert ms(alert["startsAt"]) == t0
                assert ms(alert["endsAt"]) == t0 + 240_000
                assert alert["generatorURL"] == f"{EXTERNAL_URL}/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
                assert alert["status"]["state"] == "active"

            # up == 1 at t0+45s: resolved there, sent at once with endsAt = t0+45s (in the past).
            out = rules.ingest(SampleBatch.from_series([(UP, [(t0 + 3 * INTERVAL, 1.0)])]))
            assert [(t.previous, t.state) for t in out.transitions] == [("firing", "inactive")]
            assert [(n.starts_at, n.ends_at) for n in out.notifications] == [(t0, t0 + 3 * INTERVAL)]
            notifier.enqueue(out.notifications)

            for am in alertmanagers:
                await eventually(lambda am=am: am_received(http, am, "resolved"))
                assert await am_alerts(http, am) == []  # gone ~2 minutes before the firing endsAt
                assert await am_received(http, am, "firing") == 1
        finally:
            await notifier.stop(timeout=1)

    for am in alertmanagers:
        url = f"{am.url}/api/v2/alerts"
        assert registry.get_sample_value("headroom_notifications_sent_total", {"target": url}) == 2
        assert registry.get_sample_value("headroom_notifications_errors_total", {"target": url}) == 0
    dead_url = f"{dead}/api/v2/alerts"
    assert registry.get_sample_value("headroom_notifications_errors_total", {"target": dead_url}) >= 1
    assert registry.get_sample_value("headroom_notifications_dropped_total", {"target": dead_url}) == 2


async def test_alertmanager_restart_is_retried(tmp_path: Path) -> None:
    """An Alertmanager that is down when the alert fires gets it once it is back."""
    am = AlertmanagerServer(tmp_path / "am")
    registry = CollectorRegistry()
    notifier = Notifier.from_urls({"alertmanager": [am.url]}, external_url=EXTERNAL_URL, external_labels=EXTERNAL_LABELS,
                                  registry=registry, backoff_initial=0.2, backoff_max=0.5)
    rules = engine()
    t0 = event_time_base()
    await notifier.start()
    try:
        out = rules.ingest(SampleBatch.from_series([(UP, [(t0, 0.0)])]))
        notifier.enqueue(out.notifications)
        target = f"{am.url}/api/v2/alerts"
        await eventually(lambda: registry.get_sample_value("headroom_notifications_errors_total", {"target": target}))
        await asyncio.to_thread(am.start)
        async with httpx.AsyncClient(timeout=10) as http:
            alerts = await eventually(lambda: am_alerts(http, am))
        assert alerts[0]["labels"] == EXPECTED_LABELS and ms(alerts[0]["startsAt"]) == t0
        assert registry.get_sample_value("headroom_notifications_dropped_total", {"target": target}) == 0
    finally:
        await notifier.stop(timeout=1)
        am.stop()


async def test_webhook_receives_the_documented_envelope() -> None:
    posts: list[dict] = []

    async def record(request: web.Request) -> web.Response:
        posts.append({"path": request.path, "content_type": request.content_type, "body": await request.json()})
        return web.Response(status=200)

    server = web.Application()
    server.router.add_post("/hook", record)
    runner = web.AppRunner(server)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, LOCALHOST, port).start()
    notifier = Notifier.from_urls({"webhook": f"http://{LOCALHOST}:{port}/hook"}, external_url=EXTERNAL_URL,
                                  external_labels=EXTERNAL_LABELS, registry=CollectorRegistry())
    rules = engine()
    t0 = event_time_base()
    await notifier.start()
    try:
        notifier.enqueue(rules.ingest(SampleBatch.from_series([(UP, [(t0, 0.0), (t0 + INTERVAL, 0.0)])])).notifications)
        notifier.enqueue(rules.ingest(SampleBatch.from_series([(UP, [(t0 + 2 * INTERVAL, 1.0)])])).notifications)
        await eventually(lambda: sum(len(p["body"]["alerts"]) for p in posts) == 2, timeout=10, every=0.05)
    finally:
        await notifier.stop(timeout=5)
        await runner.cleanup()

    assert all(p["path"] == "/hook" and p["content_type"] == "application/json" for p in posts)
    assert all(set(p["body"]) == {"version", "alerts"} and p["body"]["version"] == "headroom.notification.v1" for p in posts)
    firing, resolved = [a for p in posts for a in p["body"]["alerts"]]
    for alert in (firing, resolved):
        assert alert["labels"] == EXPECTED_LABELS
        assert alert["annotations"] == EXPECTED_ANNOTATIONS
        assert ms(alert["startsAt"]) == t0
        assert alert["generatorURL"] == f"{EXTERNAL_URL}/graph?g0.expr=up+%3D%3D+0&g0.tab=1"
    assert ms(firing["endsAt"]) == t0 + 240_000
    assert ms(resolved["endsAt"]) == t0 + 2 * INTERVAL
