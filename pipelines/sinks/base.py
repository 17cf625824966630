"""Delivering alert notifications to sinks, as Prometheus's notifier does: the part every sink shares.

A sink (:class:`Sink`) only knows how to send one batch of alert objects
somewhere, once; it says what went wrong by raising :class:`DeliveryError`
(with whether a retry may help). The :class:`Notifier` does the rest for every
sink alike. The rule engines produce
:class:`~detector.output.alerts.AlertNotification` objects on Prometheus's
send/resend schedule; :meth:`Notifier.enqueue` hands them over without ever
blocking or raising, and one task per target (a sink with its queue) delivers them:

* Alertmanager targets get ``POST <url>/api/v2/alerts`` with a JSON list of
  alerts; webhook targets get ``POST <url>`` with
  ``{"version": "headroom.notification.v1", "alerts": [...]}`` (the same alert
  objects, see :mod:`detector.output.notify`). External labels are added to every
  alert, ``generatorURL`` points under the external URL.
* Each target has its own bounded queue (10 000 alerts by default) that drops
  its *oldest* alerts when full, so a dead or slow target only ever loses its
  own backlog and never holds up the pipeline or another target. (Prometheus
  has one queue and waits for every Alertmanager before the next batch; with a
  queue per target a slow one cannot slow the others down.)
* Batches of up to 64 alerts; each send is bounded by a timeout (10 s).
* A failed batch (connection error, timeout, HTTP 5xx, 408 or 429) is
  **retried** with exponential backoff (0.5 s doubling up to 30 s) while newer
  alerts keep queueing behind it, until it is delivered or ``retry_for``
  (4 minutes) has passed since its first attempt; then it is dropped.
  Prometheus does not retry: it counts a failed batch and moves on, relying on
  the resend schedule. Retrying is safe for the same reason — Alertmanager
  merges a re-sent alert into the one it has (same labels), and every target
  receives its alerts in order, so a retried batch is never sent after a newer
  state of the same alert. The retry limit of 4 minutes is the validity of a
  firing alert with the default 15 s interval and 1 m resend delay
  (``endsAt = t + 4 × max(interval, resend_delay)``): a notification older
  than that is superseded by the resends queued behind it anyway. Any other
  HTTP 4xx means the payload was refused (Alertmanager answers 400 for an
  invalid alert after keeping the valid ones) and is not retried.
* :meth:`Notifier.stop` flushes what is queued, within a deadline; what is
  left after it is counted as dropped.

Metrics (each by ``target``, the URL posted to, without any user info):

* ``headroom_notifications_sent_total``: alerts in every send attempt,
  delivered or not (Prometheus's meaning: errors / sent is the failure ratio);
* ``headroom_notifications_errors_total``: alerts in send attempts that failed;
* ``headroom_notifications_dropped_total``: alerts given up on (queue overflow,
  retries exhausted or not retryable, left at stop);
* ``headroom_notifications_queue_length``: alerts waiting (gauge), and
  ``headroom_notifications_queue_capacity`` (gauge, no label);
* ``headroom_notifications_latency_seconds``: histogram of send durations.

All of the notifier runs on the event loop it was started on; call
:meth:`~Notifier.enqueue` from that loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from detector.output.alerts import AlertNotification
from detector.output.notify import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_CAPACITY, DropOldestQueue, alertmanager_alert, backoff_delay

if TYPE_CHECKING:
    from pipelines.settings import Settings

log = logging.getLogger("headroom.notifier")

DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRY_FOR = 240.0
DEFAULT_STOP_TIMEOUT = 10.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LOG_EVERY = 10.0  # seconds between two "queue full" warnings of one target


class DeliveryError(Exception):
    """A batch was not delivered: why, and whether sending it again may succeed.

    >>> str(DeliveryError("HTTP 503: busy", retry=True)), DeliveryError("HTTP 400", retry=False).retry
    ('HTTP 503: busy', False)
    """

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


class Sink(Protocol):
    """Somewhere alerts go. ``send`` delivers one batch once, or raises :class:`DeliveryError`;
    queueing, batching, timeout, retry and metrics are the :class:`Notifier`'s."""

    kind: str  # the name it is registered under (pipelines.sinks.registry)
    url: str  # where it sends, as used (may hold user info)
    name: str  # for logs and metric labels: no secrets

    async def send(self, batch: Sequence[Mapping[str, Any]]) -> None: ...


@dataclass(eq=False)
class Target:
    """One sink with its own queue and sender task."""

    sink: Sink
    queue: DropOldestQueue[dict[str, Any]]
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    inflight: list[dict[str, Any]] = field(default_factory=list)
    last_overflow_log: float = float("-inf")

    @property
    def kind(self) -> str:
        return self.sink.kind

    @property
    def url(self) -> str:
        return self.sink.url

    @property
    def name(self) -> str:
        return self.sink.name


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry, capacity: int) -> None:
        self.sent = Counter("headroom_notifications_sent", "Alerts in send attempts, delivered or not", ["target"], registry=registry)
        self.errors = Counter("headroom_notifications_errors", "Alerts in send attempts that failed", ["target"], registry=registry)
        self.dropped = Counter(
            "headroom_notifications_dropped",
            "Alerts given up on: queue full, retries exhausted or refused, left at shutdown",
            ["target"],
            registry=registry,
        )
        self.queue_length = Gauge("headroom_notifications_queue_length", "Alerts waiting to be sent", ["target"], registry=registry)
        self.capacity = Gauge("headroom_notifications_queue_capacity", "Capacity of each target's alert queue", registry=registry)
        self.capacity.set(capacity)
        self.latency = Histogram(
            "headroom_notifications_latency_seconds", "Duration of one send", ["target"], buckets=LATENCY_BUCKETS, registry=registry
        )

    def add_target(self, target: Target) -> None:
        for metric in (self.sent, self.errors, self.dropped, self.latency):
            metric.labels(target.name)
        self.queue_length.labels(target.name).set_function(lambda: len(target.queue) + len(target.inflight))


class Notifier:
    """Delivers alert notifications to sinks (see the module doc); a sink given twice (same URL) gets them once.

    ``on_stop`` is awaited last in :meth:`stop` (closing what the sinks share).
    """

    def __init__(
        self,
        sinks: Sequence[Sink] = (),
        *,
        external_url: str = "",
        external_labels: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
        max_batch: int = DEFAULT_MAX_BATCH,
        timeout: float = DEFAULT_TIMEOUT,
        retry_for: float = DEFAULT_RETRY_FOR,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.external_url = external_url
        self.external_labels = dict(external_labels or {})
        self.max_batch = max_batch
        self.timeout = timeout
        self.retry_for = retry_for
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.metrics = NotifierMetrics(registry if registry is not None else CollectorRegistry(), queue_capacity)
        self.targets: list[Target] = []
        seen: set[str] = set()
        for sink in sinks:
            if sink.url in seen:
                continue
            seen.add(sink.url)
            target = Target(sink, DropOldestQueue(queue_capacity))
            self.targets.append(target)
            self.metrics.add_target(target)
        self._on_stop = on_stop
        self._started = False
        self._closing = False

    @classmethod
    def from_urls(
        cls,
        urls: Mapping[str, Sequence[str] | str],
        *,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **options: Any,
    ) -> Notifier:
        """A notifier for URLs by kind of sink (``{"alertmanager": "http://am:9093", ...}``); URL lists may
        also be comma-separated strings. The HTTP sinks share ``client`` (or one made here, with ``transport``).

        Raises :class:`ValueError` for an unknown kind, or a URL that is not absolute ``http(s)://host...``
        (naming its setting).
        """
        from pipelines.sinks.registry import parse_urls, sink_types

        types = sink_types()
        unknown = set(urls) - set(types)
        if unknown:
            raise ValueError(f"unknown sink kind(s) {sorted(unknown)}; known: {sorted(types)}")
        parsed = {kind: parse_urls(value, types[kind].setting) for kind, value in urls.items()}
        on_stop = None
        if client is None:
            client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout))
            on_stop = client.aclose
        sinks = [types[kind].build(url, client) for kind, kind_urls in parsed.items() for url in kind_urls]
        return cls(sinks, timeout=timeout, on_stop=on_stop, **options)

    @classmethod
    def from_settings(cls, settings: Settings, registry: CollectorRegistry | None, **options: Any) -> Notifier:
        """A notifier for every registered kind of sink, to the URLs its setting lists."""
        from pipelines.sinks.registry import sink_types

        urls = {kind: getattr(settings, t.setting) for kind, t in sink_types().items()}
        return cls.from_urls(urls, external_url=settings.external_url.strip(), external_labels=settings.external_labels,
                             registry=registry, **options)

    async def start(self) -> None:
        """Start one sender task per target (on the running loop)."""
        if self._started:
            return
        self._started = True
        for target in self.targets:
            target.task = asyncio.create_task(self._run(target), name=f"notifier {target.name}")

    async def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
        """Send what is queued, for at most ``timeout`` seconds; count what is left as dropped."""
        if self._closing:
            return
        self._closing = True
        tasks = [t.task for t in self.targets if t.task is not None]
        for target in self.targets:
            target.wakeup.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for target in self.targets:
            left = len(target.queue) + len(target.inflight)
            target.queue.clear()
            target.inflight = []
            target.task = None
            if left:
                self.metrics.dropped.labels(target.name).inc(left)
                log.warning("notifier stopped with %d alert(s) not delivered to %s", left, target.name)
        if self._on_stop is not None:
            await self._on_stop()

    def enqueue(self, notifications: Sequence[AlertNotification]) -> None:
        """Queue notifications for every target; never blocks, never raises."""
        try:
            if not notifications or not self.targets:
                return
            alerts = [alertmanager_alert(n, self.external_url, self.external_labels) for n in notifications]
            for target in self.targets:
                if self._closing:
                    self.metrics.dropped.labels(target.name).inc(len(alerts))
                    continue
                dropped = target.queue.push(alerts)
                if dropped:
                    self.metrics.dropped.labels(target.name).inc(dropped)
                    now = time.monotonic()
                    if now - target.last_overflow_log >= _LOG_EVERY:
                        target.last_overflow_log = now
                        log.warning("alert queue of %s is full: dropped its %d oldest alert(s)", target.name, dropped)
                target.wakeup.set()
        except Exception:  # noqa: BLE001 - the pipeline must never fail on notification
            log.exception("could not queue %d alert notification(s)", len(notifications))

    async def _run(self, target: Target) -> None:
        while True:
            if not target.queue:
                if self._closing:
                    return
                target.wakeup.clear()
                await target.wakeup.wait()
                continue
            target.inflight = target.queue.take(self.max_batch)
            try:
                await self._deliver(target, target.inflight)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a sender task must outlive any surprise
                log.exception("unexpected error delivering to %s; %d alert(s) dropped", target.name, len(target.inflight))
                self.metrics.dropped.labels(target.name).inc(len(target.inflight))
            target.inflight = []

    async def _deliver(self, target: Target, batch: list[dict[str, Any]]) -> None:
        """Send one batch, retrying with backoff; returns when delivered or given up."""
        loop = asyncio.get_running_loop()
        first = loop.time()
        attempt = 0
        while True:
            error, retry = await self._send_once(target, batch)
            if error is None:
                if attempt:
                    log.info("delivered %d alert(s) to %s after %d retr%s", len(batch), target.name, attempt, "y" if attempt == 1 else "ies")
                return
            attempt += 1
            delay = backoff_delay(attempt, self.backoff_initial, self.backoff_max)
            if not retry or loop.time() + delay - first > self.retry_for:
                why = "not retryable" if not retry else f"still failing after {attempt} attempt(s)"
                log.error("dropping %d alert(s) for %s (%s): %s", len(batch), target.name, why, error)
                self.metrics.dropped.labels(target.name).inc(len(batch))
                return
            log.warning("sending %d alert(s) to %s failed (%s); retry %d in %.1fs", len(batch), target.name, error, attempt, delay)
            await asyncio.sleep(delay)

    async def _send_once(self, target: Target, batch: list[dict[str, Any]]) -> tuple[str | None, bool]:
        """One send: (None, _) when delivered, else (what went wrong, whether to retry)."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        error: str | None = None
        retry = False
        try:
            async with asyncio.timeout(self.timeout):
                await target.sink.send(batch)
        except TimeoutError:
            error, retry = f"no answer within {self.timeout:g}s", True
        except DeliveryError as exc:
            error, retry = str(exc), exc.retry
        self.metrics.latency.labels(target.name).observe(loop.time() - began)
        self.metrics.sent.labels(target.name).inc(len(batch))
        if error is not None:
            self.metrics.errors.labels(target.name).inc(len(batch))
        return error, retry
