"""Alert delivery, the pure part: payloads, the bounded queue, batching, backoff.

Delivery copies Prometheus's notifier (``notifier/notifier.go``); the I/O
(HTTP, tasks, metrics) is in :mod:`pipelines.sinks`. What is decided here:

* **One alert object** per :class:`~detector.output.alerts.AlertNotification`, as
  Alertmanager's ``POST /api/v2/alerts`` takes it: ``labels``, ``annotations``,
  ``startsAt``, ``endsAt`` (RFC 3339, UTC, milliseconds) and ``generatorURL``
  (``<external URL>/graph?g0.expr=<expr, query-escaped>&g0.tab=1``, the link
  Prometheus makes, with Go's ``url.QueryEscape``: space as ``+``, ``/`` as
  ``%2F``).
* **External labels** are added to every alert, but never override a label
  the alert already has (Prometheus sets an external label only where the
  alert's value is empty).
* **Alertmanager payload**: a JSON list of alert objects.
* **Webhook payload** (schema ``headroom.notification.v1``), for any HTTP
  endpoint that is not an Alertmanager::

      {
        "version": "headroom.notification.v1",
        "alerts": [ ...the same alert objects as the Alertmanager payload... ]
      }

  A resolved alert is one whose ``endsAt`` is not in the future (as in
  Alertmanager); a firing alert's ``endsAt`` is when it expires unless re-sent.
* **The queue** (:class:`DropOldestQueue`): bounded, 10 000 alerts by default;
  when full the *oldest* alerts are dropped (and counted), so the newest state
  of every alert is what gets through. Batches are at most 64 alerts.
* **Backoff** (:func:`backoff_delay`) between retries of a failed batch.

>>> from detector.output.alerts import AlertNotification
>>> n = AlertNotification(labels=(("alertname", "Down"), ("job", "api")), annotations=(("summary", "api is down"),),
...     starts_at=1_700_000_000_000, ends_at=1_700_000_240_000, expr="up{job='api'} == 0")
>>> alert = alertmanager_alert(n, "http://prom.example:9090/", {"cluster": "eu1", "job": "ignored"})
>>> alert["labels"], alert["startsAt"], alert["endsAt"]
({'alertname': 'Down', 'job': 'api', 'cluster': 'eu1'}, '2023-11-14T22:13:20.000Z', '2023-11-14T22:17:20.000Z')
>>> alert["generatorURL"]
'http://prom.example:9090/graph?g0.expr=up%7Bjob%3D%27api%27%7D+%3D%3D+0&g0.tab=1'
>>> webhook_payload([alert])["version"]
'headroom.notification.v1'
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar
from urllib.parse import quote_plus

from detector.output.alerts import AlertNotification, rfc3339

WEBHOOK_VERSION = "headroom.notification.v1"
DEFAULT_QUEUE_CAPACITY = 10_000
DEFAULT_MAX_BATCH = 64

T = TypeVar("T")


def generator_url(external_url: str, expr: str) -> str:
    """Prometheus's link back to the expression: ``/graph?g0.expr=...&g0.tab=1`` under the external URL.

    >>> generator_url("http://prom:9090/sub/", "rate(x[5m]) > 0.5")
    'http://prom:9090/sub/graph?g0.expr=rate%28x%5B5m%5D%29+%3E+0.5&g0.tab=1'
    >>> generator_url("", "up == 0")
    '/graph?g0.expr=up+%3D%3D+0&g0.tab=1'
    """
    # Prometheus strips the external URL's trailing slash; quote_plus with no safe
    # characters escapes exactly as Go's url.QueryEscape does.
    return f"{external_url.rstrip('/')}/graph?g0.expr={quote_plus(expr, safe='')}&g0.tab=1"


def with_external_labels(labels: Iterable[tuple[str, str]], external_labels: Mapping[str, str]) -> dict[str, str]:
    """The alert's labels plus each external label the alert does not set (or sets empty).

    >>> with_external_labels([("alertname", "A"), ("env", "")], {"env": "prod", "alertname": "B"})
    {'alertname': 'A', 'env': 'prod'}
    """
    out = dict(labels)
    for name, value in external_labels.items():
        if not out.get(name):
            out[name] = value
    return {k: v for k, v in out.items() if v != ""}


def alertmanager_alert(
    notification: AlertNotification, external_url: str = "", external_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """One notification as an Alertmanager v2 alert object (also the webhook's alert object)."""
    return {
        "labels": with_external_labels(notification.labels, external_labels or {}),
        "annotations": dict(notification.annotations),
        "startsAt": rfc3339(notification.starts_at),
        "endsAt": rfc3339(notification.ends_at),
        "generatorURL": generator_url(external_url, notification.expr),
    }


def alertmanager_payload(alerts: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The body of ``POST /api/v2/alerts``: the alert objects as a JSON list."""
    return list(alerts)


def webhook_payload(alerts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The body posted to a generic webhook (schema ``headroom.notification.v1``)."""
    return {"version": WEBHOOK_VERSION, "alerts": list(alerts)}


def encode(payload: Any) -> bytes:
    """Compact JSON, as sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class DropOldestQueue(Generic[T]):
    """A FIFO of at most ``capacity`` items; pushing into a full queue drops the oldest.

    ``push`` never blocks and never refuses: it returns how many items it
    dropped (also added to :attr:`dropped`). If one push holds more than the
    whole capacity, only its newest ``capacity`` items are kept.

    >>> q = DropOldestQueue(capacity=5)
    >>> q.push([1, 2, 3])
    0
    >>> q.push([4, 5, 6, 7])  # two too many: 1 and 2 go
    2
    >>> list(q), len(q), q.dropped
    ([3, 4, 5, 6, 7], 5, 2)
    >>> q.take(2), q.take(10), q.take(10)
    ([3, 4], [5, 6, 7], [])
    >>> q.push(range(8)), list(q), q.dropped  # a push larger than the queue keeps its newest items
    (3, [3, 4, 5, 6, 7], 5)
    """

    def __init__(self, capacity: int = DEFAULT_QUEUE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[T] = deque()

    def push(self, items: Iterable[T]) -> int:
        items = list(items)
        dropped = 0
        if len(items) > self.capacity:
            dropped += len(items) - self.capacity
            items = items[-self.capacity :]
        overflow = len(self._items) + len(items) - self.capacity
        for _ in range(max(overflow, 0)):
            self._items.popleft()
        dropped += max(overflow, 0)
        self._items.extend(items)
        self.dropped += dropped
        return dropped

    def take(self, max_items: int = DEFAULT_MAX_BATCH) -> list[T]:
        """Remove and return up to ``max_items`` of the oldest items."""
        n = min(max_items, len(self._items))
        return [self._items.popleft() for _ in range(n)]

    def clear(self) -> int:
        """Empty the queue; the number of items removed (not counted as dropped)."""
        n = len(self._items)
        self._items.clear()
        return n

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)


def batches(items: Sequence[T], size: int = DEFAULT_MAX_BATCH) -> Iterator[list[T]]:
    """``items`` in order, in lists of at most ``size``.

    >>> [len(b) for b in batches(list(range(130)))]
    [64, 64, 2]
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def backoff_delay(attempt: int, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    >>> [backoff_delay(n) for n in range(1, 9)]
    [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    """
    if attempt < 1:
        return 0.0
    return min(maximum, initial * factor ** min(attempt - 1, 64))


def retryable_status(status: int) -> bool:
    """Whether a failed send with this HTTP status is worth retrying.

    Server errors, timeouts and throttling are; other client errors mean the
    payload was refused (Alertmanager answers 400 for an invalid alert, having
    kept the valid ones of the batch), and the same payload would be refused again.

    >>> [retryable_status(s) for s in (500, 503, 429, 408, 400, 404)]
    [True, True, True, True, False, False]
    """
    return status >= 500 or status in (408, 429)
