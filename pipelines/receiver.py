"""The remote-write receiver: HTTP in, Kafka out, 2xx only after Kafka's ack.

It runs as its own process, not inside the Faust worker: decoding is the
receiver's CPU cost and it scales with request volume, while the worker's cost
scales with series and rules; a worker busy rebalancing or evaluating must not
delay Prometheus's acknowledgements; and a stateless receiver can be
replicated behind a load balancer freely.

Answers (Prometheus retries 5xx forever and drops 4xx):

* 204: every sample is in Kafka (acks=all, idempotent producer);
* 400: some series are invalid: the valid ones were still delivered, the
  message names the invalid ones; or the body cannot be read at all;
* 401/403: a bearer token is configured and missing/wrong;
* 413: body or its snappy header over the limit; 415: wrong encoding or type;
* 503 + Retry-After: Kafka did not acknowledge in time; nothing is lost,
  since Prometheus sends it again and the engine drops the duplicates.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from detector.wire.batch import SampleBatch
from detector.errors import InvalidRequest
from detector.wire.metadata import encode_type
from detector.wire.remote_write import RemoteWriteDecoder
from detector.rules.placement import Placement
from pipelines.settings import Settings

log = logging.getLogger("headroom.receiver")

RETRY_AFTER_SECONDS = "1"


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge; the client should retry."""


class KafkaGate:
    """One idempotent producer, (re)connected in the background.

    After a failed or timed-out produce the producer is replaced, so a broker
    restart never leaves the receiver holding a producer in a bad state.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float, producer_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task | None = None
        self._closed = False

    @property
    def ready(self) -> bool:
        return self._producer is not None

    def start(self) -> None:
        self._reconnect()

    async def close(self) -> None:
        self._closed = True
        if self._connecting:
            self._connecting.cancel()
        if self._producer:
            await self._producer.stop()

    async def send(self, messages: list[tuple[str, int, SampleBatch]]) -> None:
        """Produce (topic, partition, batch) messages; returns once Kafka acknowledged all."""
        await self.send_records([(topic, partition, None, batch.encode()) for topic, partition, batch in messages])

    async def send_records(self, records: list[tuple[str, int | None, bytes | None, bytes]]) -> None:
        """Produce (topic, partition, key, value) records; returns once Kafka acknowledged all."""
        producer = self._producer
        if producer is None:
            raise KafkaUnavailable("not connected to Kafka yet")
        try:
            async with asyncio.timeout(self.timeout_s):
                pending = [
                    await producer.send(topic, value=value, key=key, partition=partition)
                    for topic, partition, key, value in records
                ]
                await asyncio.gather(*pending)
        except Exception as exc:  # any failure to get an ack means: not accepted
            log.warning("produce failed (%s: %s); reconnecting", type(exc).__name__, exc)
            if self._producer is producer:
                self._producer = None
                asyncio.get_running_loop().create_task(_stop_quietly(producer))
                self._reconnect()
            raise KafkaUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc

    def _reconnect(self) -> None:
        if self._closed or (self._connecting and not self._connecting.done()):
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect_forever())

    async def _connect_forever(self) -> None:
        delay = 0.2
        while not self._closed:
            producer = self._factory(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                max_request_size=8 * 1024 * 1024,
                request_timeout_ms=max(1000, int(self.timeout_s * 1000)),
                linger_ms=0,
            )
            try:
                await producer.start()
            except Exception as exc:
                log.warning("Kafka at %s unavailable (%s); retrying in %.1fs", self.bootstrap, exc, delay)
                await _stop_quietly(producer)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._producer = producer
            log.info("connected to Kafka at %s", self.bootstrap)
            return


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except Exception:  # already broken; nothing left to deliver through it
        pass


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter("headroom_receiver_requests", "Remote-write requests by HTTP status", ["code"], registry=registry)
        self.samples = Counter("headroom_receiver_samples", "Samples acknowledged (in Kafka)", registry=registry)
        self.refused_series = Counter("headroom_receiver_refused_series", "Series refused as invalid", registry=registry)
        self.new_series = Counter("headroom_receiver_new_series", "Series decoded for the first time", registry=registry)
        self.latency = Histogram(
            "headroom_receiver_request_seconds",
            "Time from request to answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


def create_receiver_app(
    settings: Settings,
    gate: KafkaGate,
    registry: CollectorRegistry | None = None,
    *,
    bearer_token: str | None = None,
    placement: Placement | None = None,
) -> web.Application:
    """The aiohttp application; the caller owns the gate's lifecycle.

    With a ``placement`` (from the same rule files as the worker's), the inputs
    of global rule groups are also produced to the global-lane topic.
    """
    decoder = RemoteWriteDecoder(
        settings.partitions,
        limits=settings.write_limits(),
        partition_by=settings.partition_by,
        feeds_global_lane=placement.feeds_global_lane if placement and placement.global_ else None,
    )
    metrics = ReceiverMetrics(registry or CollectorRegistry())
    sent_types: dict[str, str] = {}  # metric family -> type this receiver has produced

    def answer(status: int, text: str = "", **headers: str) -> web.Response:
        metrics.requests.labels(str(status)).inc()
        return web.Response(status=status, text=text or None, headers=headers)

    async def write(request: web.Request) -> web.Response:
        started = time.perf_counter()
        try:
            if bearer_token is not None:
                _check_token(request, bearer_token)
            decoder.check_headers(request.headers)
            if (request.content_length or 0) > settings.max_body_bytes:
                raise InvalidRequest(413, f"body of {request.content_length} bytes is over the limit of {settings.max_body_bytes}")
            body = await request.read()
            decoded = decoder.decode(body)
        except InvalidRequest as exc:
            return answer(exc.status, str(exc))
        except web.HTTPRequestEntityTooLarge:
            return answer(413, f"body over the limit of {settings.max_body_bytes} bytes")
        metrics.new_series.inc(decoded.new_series)
        records = [(settings.samples_topic, p, None, batch.encode()) for p, batches in decoded.batches.items() for batch in batches]
        records += [(settings.global_samples_topic, 0, None, batch.encode()) for batch in decoded.global_batches]
        # Types go to a compacted topic every worker reads whole; Prometheus
        # repeats them every minute, so only news is produced.
        news = {family: kind for family, kind in decoded.metadata.items() if sent_types.get(family) != kind}
        records += [(settings.metadata_topic, 0, family.encode(), encode_type(kind)) for family, kind in news.items()]
        if records:
            try:
                await gate.send_records(records)
            except KafkaUnavailable as exc:
                return answer(503, f"{exc}; retry", **{"Retry-After": RETRY_AFTER_SECONDS})
        sent_types.update(news)
        metrics.samples.inc(decoded.samples)
        metrics.latency.observe(time.perf_counter() - started)
        if decoded.problems:
            metrics.refused_series.inc(decoded.refused_series)
            return answer(400, decoded.problem_summary())
        return answer(204)

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=200 if gate.ready else 503, text="ready" if gate.ready else "Kafka not connected")

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="healthy")

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_post("/api/v1/write", write)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/metrics", metrics_page)
    return app


def _check_token(request: web.Request, token: str) -> None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        raise InvalidRequest(401, "missing bearer token (Authorization: Bearer ...)")
    if not hmac.compare_digest(header[7:].encode(), token.encode()):
        raise InvalidRequest(403, "wrong bearer token")


async def run_receiver(
    settings: Settings, *, bearer_token: str | None = None, placement: Placement | None = None, stop: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set (or forever)."""
    gate = KafkaGate(settings.kafka_bootstrap, timeout_s=settings.produce_timeout_s)
    gate.start()
    app = create_receiver_app(settings, gate, bearer_token=bearer_token, placement=placement)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.receiver_host, settings.receiver_port)
    await site.start()
    log.info("receiver listening on http://%s:%d/api/v1/write", settings.receiver_host, settings.receiver_port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        await gate.close()
