"""The contract every registered sink keeps (pipelines.sinks.registry): run against each kind.

A sink delivers a batch once or raises DeliveryError saying whether a retry may
help; it names itself without secrets; its URLs come from a setting that exists;
and the shared Notifier delivers through it, retrying what is retryable.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client import CollectorRegistry

from detector.output.alerts import AlertNotification
from detector.output.notify import alertmanager_alert
from pipelines.settings import Settings
from pipelines.sinks import DeliveryError, Notifier, sink_types

KINDS = sorted(sink_types())
T0 = 1_700_000_000_000


def alert(i: int) -> dict:
    n = AlertNotification((("alertname", "Down"), ("instance", f"h{i}")), (), T0, T0 + 240_000, "up == 0")
    return alertmanager_alert(n)


def alerts_in(body: object) -> list:
    """The alert objects in a posted JSON body, wherever the sink's envelope puts them."""
    if isinstance(body, list):
        return body
    assert isinstance(body, dict)
    (found,) = [v for v in body.values() if isinstance(v, list)]
    return found


def build(kind: str, answer, url: str = "https://user:secret@sink.example:9093/x"):
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return await answer(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return sink_types()[kind].build(url, client), requests


async def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


def test_there_are_sinks_and_each_has_a_url_setting() -> None:
    assert {"alertmanager", "webhook"} <= set(KINDS)
    for kind in KINDS:
        setting = sink_types()[kind].setting
        assert setting in Settings.model_fields, f"{kind}: no setting {setting}"


@pytest.mark.parametrize("kind", KINDS)
async def test_send_delivers_the_batch_once_in_order(kind: str) -> None:
    sink, requests = build(kind, ok)
    assert sink.kind == kind
    batch = [alert(i) for i in range(3)]
    await sink.send(batch)
    (request,) = requests
    assert request.method == "POST" and "secret" not in sink.name and "sink.example" in sink.name
    assert alerts_in(json.loads(request.content)) == batch


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("status", "retry"), [(503, True), (500, True), (429, True), (400, False), (404, False)])
async def test_a_failed_send_says_whether_to_retry(kind: str, status: int, retry: bool) -> None:
    async def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="nope")

    sink, _ = build(kind, answer)
    with pytest.raises(DeliveryError) as caught:
        await sink.send([alert(0)])
    assert caught.value.retry is retry and str(status) in str(caught.value)


@pytest.mark.parametrize("kind", KINDS)
async def test_network_errors_are_retryable(kind: str) -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sink, _ = build(kind, refuse)
    with pytest.raises(DeliveryError) as caught:
        await sink.send([alert(0)])
    assert caught.value.retry


@pytest.mark.parametrize("kind", KINDS)
async def test_the_notifier_delivers_through_it_and_retries(kind: str) -> None:
    failures = 2

    async def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal failures
        if failures:
            failures -= 1
            return httpx.Response(503)
        return httpx.Response(200)

    seen: list[bytes] = []

    async def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return await flaky(request)

    registry = CollectorRegistry()
    notifier = Notifier.from_urls({kind: "http://sink.example:9093"}, registry=registry,
                                  transport=httpx.MockTransport(record), backoff_initial=0.01)
    (target,) = notifier.targets
    await notifier.start()
    notifier.enqueue([AlertNotification((("alertname", "Down"),), (), T0, T0 + 240_000, "up == 0")])
    for _ in range(500):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.005)
    await notifier.stop()
    assert len(seen) == 3 and seen[0] == seen[2]  # the same batch, re-sent
    assert registry.get_sample_value("headroom_notifications_errors_total", {"target": target.name}) == 2
    assert registry.get_sample_value("headroom_notifications_dropped_total", {"target": target.name}) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_settings_reach_the_sink(kind: str) -> None:
    settings = Settings(**{sink_types()[kind].setting: "http://a.example:1, http://b.example:2"})
    notifier = Notifier.from_settings(settings, CollectorRegistry())
    assert [t.kind for t in notifier.targets] == [kind, kind]
