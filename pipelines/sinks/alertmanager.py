"""Alertmanager: ``POST <base URL>/api/v2/alerts`` with a JSON list of alert objects.

>>> alertmanager_post_url("http://am:9093/"), alertmanager_post_url("http://x/am/api/v2/alerts")
('http://am:9093/api/v2/alerts', 'http://x/am/api/v2/alerts')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from detector.output.notify import alertmanager_payload
from pipelines.sinks.http_sink import HttpSink
from pipelines.sinks.registry import register

ALERTMANAGER_PATH = "/api/v2/alerts"


@register("alertmanager", setting="alertmanager_urls")
class AlertmanagerSink(HttpSink):
    """One Alertmanager, given by its base URL (with any path prefix)."""

    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        super().__init__(alertmanager_post_url(url), client)

    def payload(self, batch: Sequence[Mapping[str, Any]]) -> Any:
        return alertmanager_payload(batch)


def alertmanager_post_url(base: str) -> str:
    """Where alerts are posted on an Alertmanager given by its base URL (with any path prefix)."""
    base = base.rstrip("/")
    return base if base.endswith(ALERTMANAGER_PATH) else base + ALERTMANAGER_PATH
