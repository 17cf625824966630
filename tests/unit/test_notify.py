"""Alert delivery: payloads and queue (detector.output.notify), the Notifier (pipelines.sinks) over httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

import httpx
import pytest
from prometheus_client import CollectorRegistry

from detector.output.alerts import AlertNotification
from detector.output.notify import (
    WEBHOOK_VERSION,
    DropOldestQueue,
    alertmanager_alert,
    backoff_delay,
    batches,
    generator_url,
    webhook_payload,
)
from pipelines.settings import Settings
from pipelines.sinks import Notifier

AM1, AM2 = "http://am1:9093", "http://am2:9093"
AM1_POST, AM2_POST = f"{AM1}/api/v2/alerts", f"{AM2}/api/v2/alerts"
HOOK = "http://hooks.example/alerts"
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def notification(i: int = 0, *, resolved: bool = False, expr: str = "up == 0") -> AlertNotification:
    return AlertNotification(
        labels=(("alertname", "Down"), ("instance", f"host-{i}"), ("job", "api")),
        annotations=(("summary", f"host-{i} is down"),),
        starts_at=T0,
        ends_at=T0 + 45_000 if resolved else T0 + 240_000,
        expr=expr,
    )


def parse_time(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


class Endpoints:
    """A fake network: per-URL behaviour, every request recorded as (url, body, loop time)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object, float]] = []
        self.behaviour: dict[str, Callable[[httpx.Request], Awaitable[httpx.Response]]] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append((url, json.loads(request.content), asyncio.get_running_loop().time()))
        handler = self.behaviour.get(url)
        if handler is not None:
            return await handler(request)
        return httpx.Response(200)

    def bodies(self, url: str) -> list:
        return [body for u, body, _ in self.requests if u == url]

    def times(self, url: str) -> list[float]:
        return [t for u, _, t in self.requests if u == url]


def status(code: int) -> Callable[[httpx.Request], Awaitable[httpx.Response]]:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(code, text="nope")

    return handler


async def hang(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(3600)
    return httpx.Response(200)


def make_notifier(endpoints: Endpoints, ams=(AM1,), hooks=(), **options) -> tuple[Notifier, CollectorRegistry]:
    registry = CollectorRegistry()
    notifier = Notifier.from_urls({"alertmanager": list(ams), "webhook": list(hooks)}, registry=registry,
                                  transport=httpx.MockTransport(endpoints), **options)
    return notifier, registry


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def metric(registry: CollectorRegistry, name: str, target: str | None = None) -> float | None:
    return registry.get_sample_value(name, {"target": target} if target else {})


# --- the pure part ---------------------------------------------------------------------------


def test_alert_object_is_what_alertmanager_v2_takes() -> None:
    alert = alertmanager_alert(notification(3), "http://headroom.example:6066/", {"cluster": "eu1", "job": "not-this"})
    assert alert == {
        "labels": {"alertname": "Down", "instance": "host-3", "job": "api", "cluster": "eu1"},
        "annotations": {"summary": "host-3 is down"},
        "startsAt": "2023-11-14T22:13:20.000Z",
        "endsAt": "2023-11-14T22:17:20.000Z",
        "generatorURL": "http://headroom.example:6066/graph?g0.expr=up+%3D%3D+0&g0.tab=1",
    }
    resolved = alertmanager_alert(notification(3, resolved=True))
    assert parse_time(resolved["endsAt"]) == T0 + 45_000 and parse_time(resolved["startsAt"]) == T0


def test_rfc3339_keeps_milliseconds_and_utc() -> None:
    n = AlertNotification((("alertname", "A"),), (), starts_at=T0 + 7, ends_at=T0 + 1_234, expr="x")
    alert = alertmanager_alert(n)
    assert alert["startsAt"] == "2023-11-14T22:13:20.007Z"
    assert alert["endsAt"] == "2023-11-14T22:13:21.234Z"


def test_external_labels_fill_in_but_never_override() -> None:
    n = AlertNotification((("alertname", "A"), ("region", "us")), (), T0, T0, "x")
    labels = alertmanager_alert(n, "", {"region": "eu", "replica": "r1", "alertname": "Other"})["labels"]
    assert labels == {"alertname": "A", "region": "us", "replica": "r1"}


def test_generator_url_escapes_like_go_query_escape() -> None:
    expr = 'sum(rate(http_requests_total{code=~"5.."}[5m])) / 2 > 0.1'
    url = generator_url("http://prom:9090/", expr)
    assert url == (
        "http://prom:9090/graph?g0.expr=sum%28rate%28http_requests_total%7Bcode%3D~%225..%22%7D%5B5m%5D%29%29"
        "+%2F+2+%3E+0.1&g0.tab=1"
    )
    assert httpx.URL(url).params["g0.expr"] == expr


def test_webhook_envelope() -> None:
    alert = alertmanager_alert(notification())
    assert webhook_payload([alert]) == {"version": WEBHOOK_VERSION, "alerts": [alert]}
    assert WEBHOOK_VERSION == "headroom.notification.v1"


def test_queue_drops_oldest_and_counts() -> None:
    q: DropOldestQueue[int] = DropOldestQueue(capacity=3)
    assert q.push([1, 2]) == 0
    assert q.push([3, 4]) == 1
    assert list(q) == [2, 3, 4] and q.dropped == 1
    assert q.take(2) == [2, 3]
    assert q.push([5, 6, 7, 8, 9]) == 3  # 2 of the push itself, then the queued 4
    assert list(q) == [7, 8, 9] and q.dropped == 4
    with pytest.raises(ValueError):
        DropOldestQueue(0)


def test_batches_and_backoff() -> None:
    assert [b[0] for b in batches(list(range(200)), 64)] == [0, 64, 128, 192]
    assert backoff_delay(1, 0.1, 1.0) == 0.1 and backoff_delay(3, 0.1, 1.0) == pytest.approx(0.4)
    assert backoff_delay(100, 0.1, 1.0) == 1.0 and backoff_delay(10_000) == 30.0


# --- the Notifier -------------------------------------------------------------------------------


async def test_batches_of_64_to_every_alertmanager_and_webhook_in_order() -> None:
    net = Endpoints()
    notifier, registry = make_notifier(
        net, ams=(AM1, AM2 + "/"), hooks=(HOOK,), external_url="http://headroom:6066", external_labels={"dc": "x"}
    )
    await notifier.start()
    notifier.enqueue([notification(i) for i in range(130)])
    await eventually(lambda: sum(len(b["alerts"]) for b in net.bodies(HOOK)) == 130)
    await eventually(lambda: sum(map(len, net.bodies(AM1_POST))) == 130 and sum(map(len, net.bodies(AM2_POST))) == 130)
    for url in (AM1_POST, AM2_POST):
        bodies = net.bodies(url)
        assert [len(b) for b in bodies] == [64, 64, 2]
        assert [a["labels"]["instance"] for b in bodies for a in b] == [f"host-{i}" for i in range(130)]
        assert all(a["labels"]["dc"] == "x" and a["generatorURL"].startswith("http://headroom:6066/graph?") for b in bodies for a in b)
        assert metric(registry, "headroom_notifications_sent_total", url) == 130
        assert metric(registry, "headroom_notifications_errors_total", url) == 0
        assert metric(registry, "headroom_notifications_latency_seconds_count", url) == 3
    hook_bodies = net.bodies(HOOK)
    assert [b["version"] for b in hook_bodies] == [WEBHOOK_VERSION] * 3
    assert hook_bodies[0]["alerts"][0] == net.bodies(AM1_POST)[0][0]
    assert metric(registry, "headroom_notifications_queue_capacity") == 10_000
    await notifier.stop()
    assert metric(registry, "headroom_notifications_queue_length", AM1_POST) == 0


async def test_request_is_json_post() -> None:
    seen: list[httpx.Request] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    notifier = Notifier.from_urls({"alertmanager": [AM1]}, transport=httpx.MockTransport(record))
    await notifier.start()
    notifier.enqueue([notification()])
    await eventually(lambda: len(seen) == 1)
    await notifier.stop()
    assert seen[0].method == "POST" and seen[0].url == AM1_POST
    assert seen[0].headers["content-type"] == "application/json"
    body = json.loads(seen[0].content)
    assert isinstance(body, list) and set(body[0]) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}


async def test_full_queue_drops_the_oldest() -> None:
    net = Endpoints()
    notifier, registry = make_notifier(net, queue_capacity=10, max_batch=4)
    for i in range(25):  # before start: nothing is sent yet
        notifier.enqueue([notification(i)])
    assert metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 15
    assert metric(registry, "headroom_notifications_queue_length", AM1_POST) == 10
    await notifier.start()
    await notifier.stop()
    delivered = [a["labels"]["instance"] for b in net.bodies(AM1_POST) for a in b]
    assert delivered == [f"host-{i}" for i in range(15, 25)]
    assert [len(b) for b in net.bodies(AM1_POST)] == [4, 4, 2]
    assert metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 15


async def test_failing_alertmanager_blocks_neither_the_caller_nor_the_others() -> None:
    net = Endpoints()
    net.behaviour[AM1_POST] = hang
    net.behaviour[HOOK] = status(503)
    notifier, registry = make_notifier(net, ams=(AM1, AM2), hooks=(HOOK,), timeout=30, backoff_initial=0.01)
    await notifier.start()
    began = time.monotonic()
    for i in range(200):
        notifier.enqueue([notification(i)])
    assert time.monotonic() - began < 0.5  # enqueue never waits for the network
    await eventually(lambda: sum(map(len, net.bodies(AM2_POST))) == 200, timeout=3)
    assert len(net.bodies(AM1_POST)) == 1  # still hanging on its first batch
    assert metric(registry, "headroom_notifications_errors_total", HOOK) > 0
    assert metric(registry, "headroom_notifications_queue_length", AM1_POST) == 200
    assert metric(registry, "headroom_notifications_queue_length", AM2_POST) == 0
    began = time.monotonic()
    await notifier.stop(timeout=0.2)
    assert time.monotonic() - began < 2
    assert metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 200
    assert metric(registry, "headroom_notifications_dropped_total", AM2_POST) == 0


async def test_failed_batch_is_retried_with_backoff_while_newer_alerts_queue() -> None:
    net = Endpoints()
    failures = 3

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal failures
        if failures:
            failures -= 1
            return httpx.Response(503)
        return httpx.Response(200)

    net.behaviour[AM1_POST] = flaky
    notifier, registry = make_notifier(net, backoff_initial=0.02, backoff_max=1.0)
    await notifier.start()
    notifier.enqueue([notification(0), notification(1)])
    await eventually(lambda: len(net.requests) >= 1)
    notifier.enqueue([notification(2)])  # queued behind the batch being retried
    await eventually(lambda: len(net.bodies(AM1_POST)) == 5)
    bodies, times = net.bodies(AM1_POST), net.times(AM1_POST)
    assert bodies[0] == bodies[1] == bodies[2] == bodies[3]  # the same batch, re-sent as is
    assert [a["labels"]["instance"] for a in bodies[4]] == ["host-2"]
    gaps = [b - a for a, b in zip(times, times[1:4])]
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08  # doubling
    assert metric(registry, "headroom_notifications_errors_total", AM1_POST) == 6
    assert metric(registry, "headroom_notifications_sent_total", AM1_POST) == 9  # 4 attempts of 2, then 1
    assert metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 0
    await notifier.stop()


async def test_timeout_then_recovery() -> None:
    net = Endpoints()
    slow = True

    async def sometimes_slow(request: httpx.Request) -> httpx.Response:
        if slow:
            await asyncio.sleep(10)
        return httpx.Response(200)

    net.behaviour[AM1_POST] = sometimes_slow
    notifier, registry = make_notifier(net, timeout=0.05, backoff_initial=0.02)
    await notifier.start()
    notifier.enqueue([notification()])
    await eventually(lambda: metric(registry, "headroom_notifications_errors_total", AM1_POST) >= 2)
    slow = False
    await eventually(lambda: metric(registry, "headroom_notifications_queue_length", AM1_POST) == 0)
    assert metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 0
    assert registry.get_sample_value(
        "headroom_notifications_latency_seconds_bucket", {"target": AM1_POST, "le": "0.1"}
    ) >= 2  # the timed-out sends took ~0.05s, not 10
    await notifier.stop()


async def test_gives_up_after_retry_for_and_on_refused_payloads(caplog: pytest.LogCaptureFixture) -> None:
    net = Endpoints()
    net.behaviour[AM1_POST] = status(500)
    net.behaviour[AM2_POST] = status(400)
    notifier, registry = make_notifier(net, ams=(AM1, AM2), backoff_initial=0.02, retry_for=0.1)
    await notifier.start()
    with caplog.at_level(logging.ERROR, logger="headroom.notifier"):
        notifier.enqueue([notification(0), notification(1)])
        await eventually(lambda: metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 2)
        await eventually(lambda: metric(registry, "headroom_notifications_dropped_total", AM2_POST) == 2)
    assert 2 <= len(net.bodies(AM1_POST)) <= 4  # 0, 0.02, 0.06 (next would be at 0.14 > 0.1)
    assert len(net.bodies(AM2_POST)) == 1  # a 400 is not retried
    assert any("not retryable" in r.getMessage() for r in caplog.records)
    await notifier.stop()


async def test_stop_flushes_what_is_queued() -> None:
    net = Endpoints()
    notifier, registry = make_notifier(net, ams=(AM1,), hooks=(HOOK,))
    await notifier.start()
    notifier.enqueue([notification(i) for i in range(100)])
    await notifier.stop(timeout=5)
    assert sum(map(len, net.bodies(AM1_POST))) == 100
    assert sum(len(b["alerts"]) for b in net.bodies(HOOK)) == 100
    notifier.enqueue([notification()])  # after stop: counted as dropped, not raised
    assert metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 1


async def test_enqueue_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    notifier, _ = make_notifier(Endpoints())
    with caplog.at_level(logging.ERROR, logger="headroom.notifier"):
        notifier.enqueue([None])  # type: ignore[list-item]
        notifier.enqueue([])
    assert "could not queue" in caplog.text
    await notifier.stop()


async def test_connection_errors_are_retried() -> None:
    attempts = 0

    async def refuse_once(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200)

    registry = CollectorRegistry()
    notifier = Notifier.from_urls({"alertmanager": [AM1]}, registry=registry, transport=httpx.MockTransport(refuse_once),
                                  backoff_initial=0.01)
    await notifier.start()
    notifier.enqueue([notification()])
    await eventually(lambda: attempts == 2)
    await notifier.stop()
    assert metric(registry, "headroom_notifications_errors_total", AM1_POST) == 1
    assert metric(registry, "headroom_notifications_dropped_total", AM1_POST) == 0


def test_from_urls_accepts_lists_or_comma_strings_and_checks_urls() -> None:
    registry = CollectorRegistry()
    notifier = Notifier.from_urls(
        {"alertmanager": f" {AM1}, {AM2}/ ,", "webhook": [HOOK, "https://user:pw@hooks.example/x"]},
        external_url="http://headroom:6066", external_labels={"dc": "x"}, registry=registry,
    )
    assert [(t.kind, t.url) for t in notifier.targets] == [
        ("alertmanager", AM1_POST),
        ("alertmanager", AM2_POST),
        ("webhook", HOOK),
        ("webhook", "https://user:pw@hooks.example/x"),
    ]
    assert notifier.targets[3].name == "https://hooks.example/x"  # no password in metric labels
    assert registry.get_sample_value("headroom_notifications_sent_total", {"target": "https://hooks.example/x"}) == 0
    with pytest.raises(ValueError, match="alertmanager_urls"):
        Notifier.from_urls({"alertmanager": "am1:9093"}, registry=CollectorRegistry())
    with pytest.raises(ValueError, match="unknown sink"):
        Notifier.from_urls({"pager": "http://x"})
    assert Notifier.from_urls({"alertmanager": "", "webhook": ""}).targets == []


def test_from_settings_reads_every_sinks_setting() -> None:
    settings = Settings(alertmanager_urls=f"{AM1},{AM1}/", webhook_urls=HOOK, external_url=" http://headroom:6066 ")
    notifier = Notifier.from_settings(settings, CollectorRegistry())
    assert [(t.kind, t.url) for t in notifier.targets] == [("alertmanager", AM1_POST), ("webhook", HOOK)]
    assert notifier.external_url == "http://headroom:6066"
    assert Notifier.from_settings(Settings(), None).targets == []
