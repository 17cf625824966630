"""Any HTTP endpoint: ``POST <url>`` with ``{"version": "headroom.notification.v1", "alerts": [...]}``.

The alert objects are the Alertmanager ones (:mod:`detector.output.notify`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from detector.output.notify import webhook_payload
from pipelines.sinks.http_sink import HttpSink
from pipelines.sinks.registry import register


@register("webhook", setting="webhook_urls")
class WebhookSink(HttpSink):
    """A generic webhook, posted to at its URL as given."""

    def payload(self, batch: Sequence[Mapping[str, Any]]) -> Any:
        return webhook_payload(batch)
