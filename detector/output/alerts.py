"""What the rule engine emits: alert state changes and alert notifications.

``AlertTransition`` is one alert changing state (pending, firing, inactive);
it goes to the ``alerts`` Kafka topic and the log, one JSON object each,
schema ``headroom.alert.v1``::

    {
      "schema": "headroom.alert.v1",
      "state": "firing",              # pending | firing | inactive
      "previous": "pending",          # the state before this evaluation
      "rule": "TaskerCircuitBreakerOpen",
      "group": "tasker_backpressure",
      "source": "rules/backpressure.yml",
      "labels": {"alertname": "...", "instance": "...", "severity": "critical"},
      "annotations": {"summary": "..."},
      "value": "2",                   # the sample value, as a string (NaN and Inf survive JSON)
      "active_at": 1700000000000,     # event times, ms since the epoch
      "fired_at": 1700000030000,      # null until it fires
      "resolved_at": null,            # set when it stops firing
      "eval_time": 1700000030000,
      "expr": "api_circuit_breaker_state == 2",
      "fingerprint": "5f0c2b7e9a1d4c33"  # stable hash of the label set: the alert's identity
    }

``AlertNotification`` is one alert due to be sent, on Prometheus's send and
resend schedule; :mod:`detector.output.notify` turns it into what Alertmanager's
``POST /api/v2/alerts`` and webhooks take.

>>> t = AlertTransition(rule="Up", group="g", source="f.yml", state="firing", previous="pending",
...     labels=(("alertname", "Up"),), annotations=(), value=1.0, active_at=0, fired_at=60_000,
...     resolved_at=None, eval_time=60_000, expr="up == 1")
>>> t.to_dict()["fingerprint"] == t.to_dict()["fingerprint"], t.to_dict()["value"]
(True, '1')
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from detector.labels import Labels, canonical_bytes, stable_hash
from detector.output.templates import go_float

SCHEMA = "headroom.alert.v1"


@dataclass(frozen=True, slots=True)
class AlertTransition:
    rule: str
    group: str
    source: str
    state: str
    previous: str
    labels: Labels
    annotations: Labels
    value: float
    active_at: int
    fired_at: int | None
    resolved_at: int | None
    eval_time: int
    expr: str

    @property
    def fingerprint(self) -> str:
        return f"{stable_hash(canonical_bytes(self.labels)):016x}"

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "state": self.state,
            "previous": self.previous,
            "rule": self.rule,
            "group": self.group,
            "source": self.source,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "value": go_float(self.value),
            "active_at": self.active_at,
            "fired_at": self.fired_at,
            "resolved_at": self.resolved_at,
            "eval_time": self.eval_time,
            "expr": self.expr,
            "fingerprint": self.fingerprint,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    def describe(self) -> str:
        """One line for a log."""
        labels = ", ".join(f'{k}="{v}"' for k, v in self.labels if k != "alertname")
        return f"{self.rule}{{{labels}}} {self.previous} -> {self.state} value={go_float(self.value)}"


@dataclass(frozen=True, slots=True)
class AlertNotification:
    labels: Labels
    annotations: Labels
    starts_at: int
    ends_at: int
    expr: str


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
