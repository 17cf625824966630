"""The load generator's I/O: serve the simulator for scraping, or push it by remote write.

:func:`serve_metrics` exposes :class:`~simulator.runbook.RunbookSimulator` at
``/metrics`` on the wall clock, for a real Prometheus to scrape.
:func:`push_remote_write` plays Prometheus itself: it samples the simulator on
an event-time grid, optionally faster than real time, and remote-writes the
samples, retrying and dropping the way Prometheus does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from detector.labels import METRIC_NAME, Labels, metric_name
from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
from simulator.runbook import RunbookSimulator

EXPOSITION_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
_PUSH_HEADERS = {**REMOTE_WRITE_HEADERS, "User-Agent": "headroom-simulator"}
# Prometheus' remote-write defaults: backoff doubling from 30 ms to 5 s, 30 s timeout.
_MIN_BACKOFF_S = 0.03
_MAX_BACKOFF_S = 5.0
_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)


def render_exposition(samples: Iterable[tuple[Labels, float]]) -> str:
    """Samples as Prometheus text exposition 0.0.4, one ``# TYPE`` per metric family.

    ``*_total`` is a counter, a name with ``_bucket`` series is a histogram
    (with its ``_sum`` and ``_count``), anything else a gauge.

    >>> print(render_exposition([((("__name__", "up"), ("job", 'a"b')), 1.0)]), end="")
    # TYPE up gauge
    up{job="a\\"b"} 1.0
    """
    samples = list(samples)
    histograms = {
        name.removesuffix("_bucket") for name in map(metric_name, (labels for labels, _ in samples))
        if name.endswith("_bucket")
    }
    families: dict[str, list[tuple[str, Labels, float]]] = {}
    for labels, value in samples:
        name = metric_name(labels)
        families.setdefault(_family(name, histograms), []).append((name, labels, value))
    lines = []
    for family, members in families.items():
        if family in histograms:
            kind = "histogram"
            members.sort(key=_histogram_order)
        else:
            kind = "counter" if family.endswith("_total") else "gauge"
        lines.append(f"# TYPE {family} {kind}")
        lines.extend(f"{name}{_format_labels(labels)} {_format_value(value)}" for name, labels, value in members)
    return "\n".join(lines) + "\n"


def render_openmetrics(scrapes: Iterable[tuple[int, Iterable[tuple[Labels, float]]]]) -> str:
    """Scrapes at event times (ms) as one OpenMetrics text with timestamps, ending ``# EOF``.

    What ``headroom replay`` and ``promtool tsdb create-blocks-from openmetrics``
    read: each family's samples together, each series in time order, a
    histogram's buckets, ``_sum`` and ``_count`` together per timestamp.

    >>> print(render_openmetrics([(1000, [((("__name__", "up"),), 1.0)])]), end="")
    # TYPE up gauge
    up 1.0 1.000
    # EOF
    """
    rows = [(t, labels, value) for t, samples in scrapes for labels, value in samples]
    histograms = {name.removesuffix("_bucket") for name in (metric_name(l) for _, l, _ in rows) if name.endswith("_bucket")}
    families: dict[str, list[tuple[str, Labels, float, int]]] = {}
    for t, labels, value in rows:
        name = metric_name(labels)
        families.setdefault(_family(name, histograms), []).append((name, labels, value, t))
    lines = []
    for family, members in families.items():
        if family in histograms:
            lines.append(f"# TYPE {family} histogram")
            # Per series owner and time: buckets by le, then _sum, then _count.
            members.sort(key=lambda m: (_histogram_order(m[:3])[0], m[3], _histogram_order(m[:3])[1:]))
        elif family.endswith("_total"):
            lines.append(f"# TYPE {family.removesuffix('_total')} counter")
            members.sort(key=lambda m: (m[1], m[3]))
        else:
            lines.append(f"# TYPE {family} gauge")
            members.sort(key=lambda m: (m[1], m[3]))
        lines.extend(f"{name}{_format_labels(labels)} {_format_value(value)} {t / 1000:.3f}" for name, labels, value, t in members)
    return "\n".join(lines + ["# EOF"]) + "\n"


async def serve_metrics(
    sim: RunbookSimulator, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve ``GET /metrics`` from ``sim`` sampled at wall-clock now.

    Build ``sim`` with ``start_ms`` = wall-clock now for its scenario to start
    as serving does. The series carry their own ``job`` and ``instance``, so
    scrape with ``honor_labels: true`` to keep them. Returns the runner (``await runner.cleanup()`` stops it)
    and the bound port, useful with ``port=0``.
    """
    latest_ms = 0

    async def metrics(_request: web.Request) -> web.Response:
        nonlocal latest_ms
        # The simulator needs non-decreasing times; a wall clock stepped back must not break it.
        latest_ms = max(latest_ms, time.time_ns() // 1_000_000)
        body = render_exposition(sim.sample(latest_ms)).encode()
        return web.Response(body=body, headers={"Content-Type": EXPOSITION_CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner, runner.addresses[0][1]


@dataclass
class PushStats:
    """What a push run did.

    ``requests`` and ``samples`` count what was accepted (2xx); ``retries``
    counts re-sends after a 5xx or a connection error; ``rejected`` counts
    requests dropped because they were answered 4xx.
    """

    requests: int = 0
    samples: int = 0
    retries: int = 0
    rejected: int = 0


async def push_remote_write(
    sim: RunbookSimulator,
    url: str,
    *,
    start_ms: int,
    step_ms: int = 5000,
    speed: float = 1.0,
    duration_s: float | None = None,
    samples_per_request: int = 1,
    session: aiohttp.ClientSession | None = None,
    on_response: Callable[[int, int], None] | None = None,
) -> PushStats:
    """Sample ``sim`` every ``step_ms`` of event time from ``start_ms`` and remote-write it to ``url``.

    Event time runs ``speed`` times faster than wall time; each step is sampled
    once its event time has come, and ``samples_per_request`` consecutive steps
    go in one request. A 5xx or connection error is retried with backoff until
    it succeeds (as Prometheus never drops on 5xx); a 4xx drops the request.
    Runs for ``duration_s`` of event time, or until cancelled if None.
    ``on_response(status, event_ms)`` is called on every HTTP answer, with the
    request's last sample time.
    """
    if step_ms <= 0 or speed <= 0 or samples_per_request < 1:
        raise ValueError(
            f"need step_ms > 0, speed > 0, samples_per_request >= 1; "
            f"got {step_ms}, {speed}, {samples_per_request}"
        )
    steps = None if duration_s is None else math.ceil(duration_s * 1000 / step_ms)
    wall_per_step_s = step_ms / 1000 / speed
    stats = PushStats()
    own_session = session is None
    session = session or aiohttp.ClientSession()
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        step = 0
        while steps is None or step < steps:
            batch_end = step + samples_per_request if steps is None else min(step + samples_per_request, steps)
            batch = []
            for index in range(step, batch_end):
                await asyncio.sleep(max(0.0, began + index * wall_per_step_s - loop.time()))
                event_ms = start_ms + index * step_ms
                batch.append((event_ms, sim.sample(event_ms)))
            step = batch_end
            body, samples = _write_request(batch)
            if await _deliver(session, url, body, batch[-1][0], stats, on_response):
                stats.requests += 1
                stats.samples += samples
            else:
                stats.rejected += 1
    finally:
        if own_session:
            await session.close()
    return stats


async def _deliver(
    session: aiohttp.ClientSession, url: str, body: bytes, event_ms: int,
    stats: PushStats, on_response: Callable[[int, int], None] | None,
) -> bool:
    """POST until answered below 500; True if accepted, False if refused."""
    backoff_s = _MIN_BACKOFF_S
    while True:
        try:
            async with session.post(url, data=body, headers=_PUSH_HEADERS, timeout=_REQUEST_TIMEOUT) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            status = None
        if status is not None:
            if on_response is not None:
                on_response(status, event_ms)
            if status < 500:
                return 200 <= status < 300
        stats.retries += 1
        await asyncio.sleep(backoff_s)
        backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)


def _write_request(batch: list[tuple[int, list[tuple[Labels, float]]]]) -> tuple[bytes, int]:
    """One remote-write body for a batch of steps, and the number of samples in it."""
    series: dict[Labels, list[tuple[int, float]]] = {}
    for event_ms, samples in batch:
        for labels, value in samples:
            series.setdefault(labels, []).append((event_ms, value))
    return encode_write_request(series.items()), sum(map(len, series.values()))


def _family(name: str, histograms: set[str]) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in histograms:
            return name.removesuffix(suffix)
    return name


def _histogram_order(member: tuple[str, Labels, float]) -> tuple[Labels, int, float]:
    """Per label set: buckets by ascending ``le``, then ``_sum``, then ``_count``."""
    name, labels, _ = member
    suffix = next(i for i, suffix in enumerate(_HISTOGRAM_SUFFIXES) if name.endswith(suffix))
    le = dict(labels).get("le", "+Inf")
    owner = tuple(pair for pair in labels if pair[0] not in (METRIC_NAME, "le"))
    return owner, suffix, float(le)


def _format_labels(labels: Labels) -> str:
    pairs = [f'{name}="{_escape(value)}"' for name, value in labels if name != METRIC_NAME]
    return "{" + ",".join(pairs) + "}" if pairs else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
