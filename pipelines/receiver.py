"""The remote-write receiver: HTTP in, Kafka out, 2xx only after Kafka's ack.

It runs as its own process, not inside the Faust worker: decoding is the
receiver's CPU cost and it scales with request volume, while the worker's cost
scales with series and rules; a worker busy rebalancing or evaluating must not
delay Prometheus's acknowledgements; and a stateless receiver can be
replicated behind a load balancer freely.

Answers (Prometheus retries 5xx forever and drops 4xx):

* 204: every sample in the accepted time window is in Kafka (acks=all,
  idempotent producer); samples outside it were dropped and counted
  (``headroom_receiver_dropped_samples{reason="too_old"|"too_new"}``);
* 400: some series are invalid, or no sample of the request is inside the
  window: the valid ones were still delivered, the message names the invalid
  ones; or the body cannot be read at all;
* 401/403: credentials (bearer token or basic auth) are configured and missing/wrong;
* 413: body, its snappy header or its series count over the limit;
  415: wrong encoding or type;
* 503 + Retry-After: Kafka did not acknowledge in time, or more requests or
  bytes are in flight than the receiver's bounds, or its event loop runs
  late (answered at once, before the body is read); nothing is lost, since Prometheus sends it again and the
  engine drops the duplicates. 503 and not 429: Prometheus 2.42 retries every
  5xx but drops a 429 unless ``retry_on_http_429`` is set.

Big bodies are decoded on a thread of their own, so a 200k-series request
does not hold small requests and ``/metrics`` behind it; a client's mistake
is one rate-limited log line, never a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from detector.wire.batch import SampleBatch
from detector.errors import HeadroomError, InvalidRequest
from detector.wire.metadata import encode_type
from detector.wire.remote_write import DecodedWrite, RemoteWriteDecoder
from detector.rules.placement import Placement
from pipelines.coalescer import Coalescer
from pipelines.settings import Settings

log = logging.getLogger("headroom.receiver")

RETRY_AFTER_SECONDS = "1"

#: How the receiver's HTTP server runs: no access log (Prometheus sends many
#: requests a second), and bodies read as sent, so a gzip body is refused by the
#: header check (415) instead of failing in aiohttp's decompressor with a traceback.
SERVER_OPTIONS = {"access_log": None, "auto_decompress": False}


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge; the client should retry."""


class KafkaGate:
    """One idempotent producer, (re)connected in the background.

    A failed or timed-out produce fails its own request (503). The producer is
    replaced only when nothing was acknowledged through it since that request
    began, so a broker restart never leaves the receiver holding a producer in
    a bad state, while one slow acknowledgement among healthy ones replaces
    nothing. A replaced producer is stopped only after ``timeout_s``: the
    requests still waiting on it get their own answer, not ProducerClosed.
    """

    def __init__(self, bootstrap: str, *, timeout_s: float, producer_factory: Callable[..., AIOKafkaProducer] = AIOKafkaProducer) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self._factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task | None = None
        self._closed = False
        self._last_ack = 0.0  # monotonic time of the newest acknowledgement
        self._retiring: set[asyncio.Task] = set()

    @property
    def ready(self) -> bool:
        return self._producer is not None

    def start(self) -> None:
        self._reconnect()

    async def close(self) -> None:
        self._closed = True
        if self._connecting:
            self._connecting.cancel()
        for task in list(self._retiring):
            task.cancel()
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
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                pending = [
                    await producer.send(topic, value=value, key=key, partition=partition)
                    for topic, partition, key, value in records
                ]
                await asyncio.gather(*pending)
        except Exception as exc:  # any failure to get an ack means: not accepted
            healthy = self._last_ack > started  # others got acks meanwhile: this request alone was slow
            log.warning("produce failed (%s: %s)%s", type(exc).__name__, exc,
                        "" if healthy or self._producer is not producer else "; reconnecting")
            if not healthy and self._producer is producer:
                self._producer = None
                self._retire(producer)
                self._reconnect()
            raise KafkaUnavailable(f"Kafka did not acknowledge: {type(exc).__name__}") from exc
        self._last_ack = time.monotonic()

    def _retire(self, producer: AIOKafkaProducer) -> None:
        async def later() -> None:
            await asyncio.sleep(self.timeout_s)  # requests already waiting on it time out on their own
            await _stop_quietly(producer)

        task = asyncio.get_running_loop().create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

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
                # Label sets repeat within a message: with coalescing, zstd stores a sample in
                # about 22 bytes on the broker instead of 263 (bench/README, peers).
                compression_type="zstd",
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
        self.dropped_samples = Counter(
            "headroom_receiver_dropped_samples", "Samples dropped outside the accepted time window, by reason",
            ["reason"], registry=registry)
        self.shed = Counter("headroom_receiver_shed_requests",
                            "Requests answered 503 at once because a bound on what is in flight was reached",
                            ["bound"], registry=registry)
        self.in_flight_requests = Gauge("headroom_receiver_in_flight_requests", "Requests being served", registry=registry)
        self.in_flight_bytes = Gauge("headroom_receiver_in_flight_bytes", "Body bytes of the requests being served",
                                     registry=registry)
        self.new_series = Counter("headroom_receiver_new_series", "Series decoded for the first time", registry=registry)
        self.produce_latency = Histogram(
            "headroom_receiver_produce_seconds", "Time from a request's produce to Kafka's acknowledgement of all of it",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=registry)
        self.decode_latency = Histogram(
            "headroom_receiver_decode_seconds", "Time from a request's body read to its records ready (waiting and decoding)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=registry)
        self.latency = Histogram(
            "headroom_receiver_request_seconds",
            "Time from request to answer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


class InFlight:
    """Bounds on the requests and body bytes being served; over either, a request is shed at once.

    >>> bound = InFlight(max_requests=2, max_bytes=100)
    >>> bound.admit(60), bound.admit(60), bound.admit(10), bound.admit(10)
    (None, 'bytes', None, 'requests')
    >>> bound.release(60); bound.requests, bound.bytes
    (1, 10)
    """

    def __init__(self, *, max_requests: int, max_bytes: int) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.requests = 0
        self.bytes = 0

    def admit(self, size: int) -> str | None:
        """Take a slot for a body of ``size`` bytes; returns the bound that refuses it, or None."""
        if self.requests >= self.max_requests:
            return "requests"
        if self.bytes + size > self.max_bytes:
            return "bytes"
        self.requests += 1
        self.bytes += size
        return None

    def release(self, size: int) -> None:
        self.requests -= 1
        self.bytes -= size


class RateLimitedLog:
    """At most one line per ``interval_s``; the lines held back are counted in the next one.

    A client that keeps sending the same mistake must not fill the log.

    >>> lines = []
    >>> clock = iter([0.0, 1.0, 2.0, 11.0]).__next__
    >>> limited = RateLimitedLog(lines.append, interval_s=10, clock=clock)
    >>> for n in range(4):
    ...     limited(f"mistake {n}")
    >>> lines
    ['mistake 0', 'mistake 3 (and 2 more like it since the last line)']
    """

    def __init__(self, emit: Callable[[str], None], *, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self.clock = clock
        self._next = float("-inf")
        self._held = 0

    def __call__(self, line: str) -> None:
        now = self.clock()
        if now < self._next:
            self._held += 1
            return
        if self._held:
            line += f" (and {self._held} more like it since the last line)"
        self.emit(line)
        self._next, self._held = now + self.interval_s, 0


class LoopLag:
    """How late the event loop runs what is due: what a request arriving now waits before any of its code runs.

    A task sleeps ``interval_s`` again and again and keeps how much later than
    that it woke up; :attr:`worst_recent_s` is the worst of the last
    ``memory_s``, so one quick wake-up between two stalls does not hide them.

    >>> async def demo():
    ...     lag = LoopLag(interval_s=0.01, memory_s=1.0)
    ...     task = asyncio.create_task(lag.watch())
    ...     await asyncio.sleep(0.05)
    ...     calm = lag.worst_recent_s
    ...     time.sleep(0.3)  # the loop blocked, as by a long decode
    ...     await asyncio.sleep(0.05)
    ...     task.cancel()
    ...     return calm < 0.2 <= lag.worst_recent_s
    >>> asyncio.run(demo())
    True
    """

    def __init__(self, interval_s: float = 0.25, memory_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._recent: deque[float] = deque(maxlen=max(1, round(memory_s / interval_s)))

    @property
    def worst_recent_s(self) -> float:
        return max(self._recent, default=0.0)

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self._recent.append(max(0.0, loop.time() - due))


@dataclass(frozen=True)
class Credentials:
    """What a request must present when auth is on: a bearer token, or basic auth, either accepted.

    >>> creds = Credentials(basic=("prom", "s3cret"))
    >>> creds.check("Basic " + base64.b64encode(b"prom:s3cret").decode())
    >>> creds.check("Basic " + base64.b64encode(b"prom:wrong").decode())
    Traceback (most recent call last):
    ...
    detector.errors.InvalidRequest: wrong credentials
    """

    bearer: str | None = None
    basic: tuple[str, str] | None = None

    @property
    def required(self) -> bool:
        return self.bearer is not None or self.basic is not None

    def check(self, header: str) -> None:
        """Raise 401 for missing credentials, 403 for wrong ones."""
        scheme, _, given = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.bearer is not None:
            if hmac.compare_digest(given.strip().encode(), self.bearer.encode()):
                return
            raise InvalidRequest(403, "wrong bearer token")
        if scheme == "basic" and self.basic is not None:
            try:
                user, _, password = base64.b64decode(given.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise InvalidRequest(401, "malformed basic auth header") from None
            # Both compared, always: the time taken says nothing about which was wrong.
            ok = hmac.compare_digest(user.encode(), self.basic[0].encode()) & hmac.compare_digest(
                password.encode(), self.basic[1].encode())
            if ok:
                return
            raise InvalidRequest(403, "wrong credentials")
        wanted = " or ".join(name for name, on in (("Bearer", self.bearer), ("Basic", self.basic)) if on is not None)
        raise InvalidRequest(401, f"missing credentials (Authorization: {wanted} ...)")


Message = tuple[str, int, SampleBatch]


def _prepare(
    decoder: RemoteWriteDecoder, body: bytes, settings: Settings, coalesce: bool
) -> tuple[DecodedWrite, list[tuple[str, int | None, bytes | None, bytes]], list[Message]]:
    """Decode a body; the CPU part of a request, run on or off the event loop.

    Returns the Kafka records to produce as they are (encoded here, so a big
    request's encoding runs where its decoding did) and the batches small
    enough to wait in the coalescer for other requests' samples.
    """
    decoded = decoder.decode(body)
    messages = [(settings.samples_topic, p, batch) for p, batches in decoded.batches.items() for batch in batches]
    messages += [(settings.global_samples_topic, 0, batch) for batch in decoded.global_batches]
    if coalesce:
        alone = [m for m in messages if len(m[2]) >= settings.coalesce_max_samples]
        together = [m for m in messages if len(m[2]) < settings.coalesce_max_samples]
    else:
        alone, together = messages, []
    return decoded, [(topic, p, None, batch.encode()) for topic, p, batch in alone], together


def create_receiver_app(
    settings: Settings,
    gate: KafkaGate,
    registry: CollectorRegistry | None = None,
    *,
    bearer_token: str | None = None,
    credentials: Credentials | None = None,
    placement: Placement | None = None,
    clock: Callable[[], int] | None = None,
) -> web.Application:
    """The aiohttp application; the caller owns the gate's lifecycle.

    With a ``placement`` (from the same rule files as the worker's), the inputs
    of global rule groups are also produced to the global-lane topic, and the
    accepted time window reaches back as far as its rules read. ``clock``
    (ms) is the receiver's clock for that window.
    """
    groups = (placement.local + placement.global_) if placement else []
    reach = max((g.reach_ms() + g.interval_ms for g in groups), default=0)
    decoder = RemoteWriteDecoder(
        settings.partitions,
        limits=settings.write_limits(),
        partition_by=settings.series_partition_by,
        feeds_global_lane=placement.feeds_global_lane if placement and placement.global_ else None,
        window=settings.sample_window(reach),
        **({"clock": clock} if clock is not None else {}),
    )
    credentials = credentials or Credentials(bearer=bearer_token)
    metrics = ReceiverMetrics(registry or CollectorRegistry())
    in_flight = InFlight(max_requests=settings.max_requests_in_flight, max_bytes=settings.max_bytes_in_flight)
    # One thread for big bodies: they wait for each other, not small requests for them.
    big_lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="receiver-decode")
    big_lane_load = [0]  # big requests being served: read, waiting for the thread, decoding or producing
    loop_lag = LoopLag()
    max_lag_s = settings.max_event_loop_lag_s
    client_mistake = RateLimitedLog(log.warning)
    dropped_note = RateLimitedLog(log.warning)
    sent_types: dict[str, str] = {}  # metric family -> type this receiver has produced
    coalescer = (Coalescer(gate.send_records, linger_ms=settings.coalesce_linger_ms, max_samples=settings.coalesce_max_samples)
                 if settings.coalesce_linger_ms > 0 else None)
    window_hint = (f"accepted: samples at most HEADROOM_CATCH_UP_WINDOW={settings.catch_up_window} plus what the rules "
                   f"read back old, at most HEADROOM_MAX_SAMPLE_AHEAD={settings.max_sample_ahead} ahead of the "
                   f"receiver's clock")

    def answer(status: int, text: str = "", **headers: str) -> web.Response:
        metrics.requests.labels(str(status)).inc()
        return web.Response(status=status, text=text or None, headers=headers)

    async def write(request: web.Request) -> web.Response:
        started = time.perf_counter()
        # A client's mistake is told as such even when the receiver is busy:
        # these checks cost nothing and come before the body is read.
        size = request.content_length if request.content_length is not None else settings.max_body_bytes
        try:
            if credentials.required:
                credentials.check(request.headers.get("Authorization", ""))
            decoder.check_headers(request.headers)
            if size > settings.max_body_bytes:
                raise InvalidRequest(413, f"body of {size} bytes is over the limit of {settings.max_body_bytes}")
        except InvalidRequest as exc:
            return refuse(request, exc)
        bound = in_flight.admit(size)
        if bound is None and max_lag_s and loop_lag.worst_recent_s > max_lag_s:
            in_flight.release(size)
            bound = "event loop lag"
        big = size > settings.inline_decode_max_bytes
        if bound is None and big and big_lane_load[0] >= settings.big_decodes_queued:
            in_flight.release(size)
            bound = "big decodes"
        if bound is not None:
            metrics.shed.labels(bound).inc()
            busy = (f"event loop {loop_lag.worst_recent_s:.1f}s behind" if bound == "event loop lag"
                    else f"too many {bound} in flight")
            return answer(503, f"receiver busy: {busy}; retry", **{"Retry-After": RETRY_AFTER_SECONDS})
        metrics.in_flight_requests.set(in_flight.requests)
        metrics.in_flight_bytes.set(in_flight.bytes)
        big_lane_load[0] += big
        try:
            response = await serve_write(request)
        finally:
            big_lane_load[0] -= big
            in_flight.release(size)
            metrics.in_flight_requests.set(in_flight.requests)
            metrics.in_flight_bytes.set(in_flight.bytes)
        metrics.latency.observe(time.perf_counter() - started)
        return response

    async def serve_write(request: web.Request) -> web.Response:
        try:
            body = await request.read()
            read = time.perf_counter()
            if len(body) > settings.inline_decode_max_bytes:
                decoded, records, together = await asyncio.get_running_loop().run_in_executor(
                    big_lane, _prepare, decoder, body, settings, coalescer is not None)
            else:
                # Yield once before decoding: the requests whose bodies came in
                # together all note their time first, then decode one after
                # the other, so each sees how long the decodes before it took.
                # One that waited too long (a burst of requests full of new
                # series) is shed rather than answered after its sender gave up.
                await asyncio.sleep(0)
                waited = time.perf_counter() - read
                if max_lag_s and waited > max_lag_s:
                    metrics.shed.labels("decode wait").inc()
                    return answer(503, f"receiver busy: waited {waited:.1f}s behind other decodes; retry",
                                  **{"Retry-After": RETRY_AFTER_SECONDS})
                decoded, records, together = _prepare(decoder, body, settings, coalescer is not None)
        except InvalidRequest as exc:
            return refuse(request, exc)
        except web.HTTPRequestEntityTooLarge:
            return refuse(request, InvalidRequest(413, f"body over the limit of {settings.max_body_bytes} bytes"))
        metrics.decode_latency.observe(time.perf_counter() - read)
        metrics.new_series.inc(decoded.new_series)
        for reason, count in decoded.out_of_window.items():
            metrics.dropped_samples.labels(reason).inc(count)
        # Types go to a compacted topic every worker reads whole; Prometheus
        # repeats them every minute, so only news is produced.
        news = {family: kind for family, kind in decoded.metadata.items() if sent_types.get(family) != kind}
        records += [(settings.metadata_topic, 0, family.encode(), encode_type(kind)) for family, kind in news.items()]
        if records or together:
            producing = time.perf_counter()
            try:
                if together:
                    done = await asyncio.gather(gate.send_records(records), coalescer.submit(together),
                                                return_exceptions=True)
                    failed = next((r for r in done if isinstance(r, BaseException)), None)
                    if failed is not None:
                        raise failed
                else:
                    await gate.send_records(records)
            except KafkaUnavailable as exc:
                return answer(503, f"{exc}; retry", **{"Retry-After": RETRY_AFTER_SECONDS})
            metrics.produce_latency.observe(time.perf_counter() - producing)
        sent_types.update(news)
        metrics.samples.inc(decoded.samples)
        if decoded.problems:
            metrics.refused_series.inc(decoded.refused_series)
            text = decoded.problem_summary()
            if decoded.out_of_window:
                text += f" ({window_hint})"
            return refuse(request, InvalidRequest(400, text))
        if decoded.out_of_window:
            dropped_note(f"dropped {sum(decoded.out_of_window.values())} samples outside the accepted window from "
                         f"{request.remote}, e.g. {decoded.out_of_window_example}")
        return answer(204)

    def refuse(request: web.Request, error: InvalidRequest) -> web.Response:
        client_mistake(f"{error.status} to {request.remote}: {_first_line(str(error))}")
        return answer(error.status, str(error))

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=200 if gate.ready else 503, text="ready" if gate.ready else "Kafka not connected")

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="healthy")

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def watch_loop(_: web.Application):
        watcher = asyncio.get_running_loop().create_task(loop_lag.watch())
        yield
        watcher.cancel()
        if coalescer is not None:  # requests waiting in it get their answer before the gate closes
            await coalescer.drain()
        big_lane.shutdown(wait=False, cancel_futures=True)

    app = web.Application(client_max_size=settings.max_body_bytes)
    app.router.add_post("/api/v1/write", write)
    app.router.add_get("/-/ready", ready)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/metrics", metrics_page)
    app.cleanup_ctx.append(watch_loop)
    return app


def _first_line(text: str, limit: int = 300) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS for the receiver when a certificate is configured; with a client CA, mutual TLS."""
    if settings.receiver_tls_cert_file is None or settings.receiver_tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.receiver_tls_cert_file, settings.receiver_tls_key_file)
    except (ssl.SSLError, OSError) as exc:
        raise HeadroomError(f"cannot load the receiver's TLS certificate {settings.receiver_tls_cert_file} with key "
                            f"{settings.receiver_tls_key_file}: {exc}") from None
    if settings.receiver_tls_client_ca_file is not None:
        try:
            context.load_verify_locations(settings.receiver_tls_client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise HeadroomError(f"cannot load the client CA {settings.receiver_tls_client_ca_file}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def credentials_from(settings: Settings, bearer_token: str | None = None) -> Credentials:
    """The receiver's credentials: a bearer token (CLI option) and/or basic auth from the settings."""
    basic = None
    if settings.receiver_basic_auth_user is not None and settings.receiver_basic_auth_password_file is not None:
        basic = (settings.receiver_basic_auth_user, settings.receiver_basic_auth_password_file.read_text().strip())
    return Credentials(bearer=bearer_token, basic=basic)


async def run_receiver(
    settings: Settings, *, bearer_token: str | None = None, placement: Placement | None = None, stop: asyncio.Event | None = None
) -> None:
    """Serve until ``stop`` is set (or forever)."""
    tls = server_ssl_context(settings)  # a bad certificate stops the start, before anything connects
    gate = KafkaGate(settings.kafka_bootstrap, timeout_s=settings.produce_timeout_s)
    gate.start()
    app = create_receiver_app(settings, gate, credentials=credentials_from(settings, bearer_token), placement=placement)
    runner = web.AppRunner(app, **SERVER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, settings.receiver_host, settings.receiver_port, ssl_context=tls)
    await site.start()
    log.info("receiver listening on %s://%s:%d/api/v1/write", "https" if tls else "http", settings.receiver_host,
             settings.receiver_port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        await gate.close()
