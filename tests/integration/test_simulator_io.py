"""The simulator's I/O shell against real HTTP: a scrape endpoint and a remote-write sender."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import aiohttp
import cramjam
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from detector.wire.proto.remote_pb2 import WriteRequest
from detector.wire.remote_write import REMOTE_WRITE_HEADERS
from simulator.runbook import RunbookSimulator
from simulator.serve import EXPOSITION_CONTENT_TYPE, PushStats, push_remote_write, render_exposition, serve_metrics

START_MS = 1_700_000_000_000
STEP_MS = 5000


class RecordingReceiver:
    """A remote-write endpoint that records every POST and answers scripted statuses, then 200."""

    def __init__(self, statuses: Iterable[int]) -> None:
        self.statuses = list(statuses)
        self.posts: list[tuple[dict[str, str], bytes]] = []

    async def write(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def decoded(self) -> list[WriteRequest]:
        requests = []
        for _, body in self.posts:
            request = WriteRequest()
            request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
            requests.append(request)
        return requests


@asynccontextmanager
async def receiver(statuses: Iterable[int] = ()) -> AsyncIterator[tuple[RecordingReceiver, str]]:
    recorder = RecordingReceiver(statuses)
    app = web.Application()
    app.router.add_post("/api/v1/write", recorder.write)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield recorder, f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/write"
    finally:
        await runner.cleanup()


async def test_metrics_endpoint_serves_parseable_exposition():
    sim = RunbookSimulator("calm", seed=3, start_ms=time.time_ns() // 1_000_000)
    runner, port = await serve_metrics(sim)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(2):  # a second scrape samples a later time
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    assert response.status == 200
                    assert response.headers["Content-Type"] == EXPOSITION_CONTENT_TYPE
                    text = await response.text()
    finally:
        await runner.cleanup()

    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["api_requests"].type == "counter"  # the parser drops _total from counter names
    assert families["pgmq_queue_depth"].type == "gauge"
    assert families["worker_handler_semaphore_wait_ms"].type == "histogram"
    assert families["api_request_latency_ms"].type == "histogram"
    assert sum(len(family.samples) for family in families.values()) == sim.series_count()
    type_lines = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(type_lines) == len(set(type_lines)) == len(families)
    assert "timestamp" not in text and all(len(line.split(" ")) == 2 for line in text.splitlines() if line[0] != "#")


def test_exposition_escapes_label_values():
    value = 'a "quoted" back\\slash\nnewline'
    text = render_exposition([((("__name__", "odd"), ("path", value)), 2.5)])
    (family,) = text_string_to_metric_families(text)
    assert family.samples[0].labels == {"path": value}
    assert family.samples[0].value == 2.5


async def test_push_sends_one_request_per_step_with_remote_write_headers():
    sim = RunbookSimulator(seed=1, start_ms=START_MS)
    responses = []
    async with receiver() as (recorder, url):
        stats = await push_remote_write(
            sim, url, start_ms=START_MS, step_ms=STEP_MS, speed=1000, duration_s=20,
            on_response=lambda status, event_ms: responses.append((status, event_ms)),
        )
    series = sim.series_count()
    assert stats == PushStats(requests=4, samples=4 * series, retries=0, rejected=0)
    assert responses == [(200, START_MS + i * STEP_MS) for i in range(4)]
    for headers, _ in recorder.posts:
        assert {name: headers[name] for name in REMOTE_WRITE_HEADERS} == REMOTE_WRITE_HEADERS
    for i, request in enumerate(recorder.decoded()):
        assert len(request.timeseries) == series
        assert all([s.timestamp for s in ts.samples] == [START_MS + i * STEP_MS] for ts in request.timeseries)
        names = {label.value.decode() for ts in request.timeseries for label in ts.labels if label.name == b"__name__"}
        assert "pgmq_queue_max_depth" in names


async def test_push_batches_consecutive_steps_into_one_request():
    sim = RunbookSimulator(seed=1, start_ms=START_MS)
    async with receiver() as (recorder, url):
        stats = await push_remote_write(
            sim, url, start_ms=START_MS, step_ms=STEP_MS, speed=1000, duration_s=25, samples_per_request=2
        )
    assert stats.requests == 3 and stats.samples == 5 * sim.series_count()
    timestamps = [{tuple(s.timestamp for s in ts.samples) for ts in request.timeseries} for request in recorder.decoded()]
    assert timestamps == [
        {(START_MS, START_MS + STEP_MS)},
        {(START_MS + 2 * STEP_MS, START_MS + 3 * STEP_MS)},
        {(START_MS + 4 * STEP_MS,)},  # the run ends mid-batch: the last request is short
    ]


async def test_push_retries_5xx_and_drops_4xx():
    sim = RunbookSimulator(seed=1, start_ms=START_MS)
    responses = []
    async with receiver(statuses=[503, 200, 400]) as (recorder, url):
        stats = await push_remote_write(
            sim, url, start_ms=START_MS, step_ms=STEP_MS, speed=1000, duration_s=20,
            on_response=lambda status, event_ms: responses.append(status),
        )
    assert stats == PushStats(requests=3, samples=3 * sim.series_count(), retries=1, rejected=1)
    assert responses == [503, 200, 400, 200, 200]
    first_samples = [request.timeseries[0].samples[0].timestamp for request in recorder.decoded()]
    # The 503'd request is sent again unchanged; the 400'd one is not.
    assert first_samples == [START_MS, START_MS, START_MS + STEP_MS, START_MS + 2 * STEP_MS, START_MS + 3 * STEP_MS]
    assert recorder.posts[0][1] == recorder.posts[1][1]


async def test_push_paces_event_time_by_speed():
    sim = RunbookSimulator(seed=1, start_ms=START_MS)
    async with receiver() as (_, url):
        began = time.monotonic()
        # 4 steps of 5 s at 50x: posted 0.1 s apart, the last 0.3 s after the first.
        await push_remote_write(sim, url, start_ms=START_MS, step_ms=STEP_MS, speed=50, duration_s=20)
        elapsed = time.monotonic() - began
    assert 0.3 <= elapsed < 2.0


async def test_push_retries_until_the_receiver_comes_up():
    sim = RunbookSimulator(seed=1, start_ms=START_MS)
    async with receiver() as (recorder, url):
        pass  # the port is free again: the first attempts find nothing listening
    port = int(url.split(":")[2].split("/")[0])

    app = web.Application()
    app.router.add_post("/api/v1/write", recorder.write)
    runner = web.AppRunner(app)

    async def start_receiver_later() -> None:
        await asyncio.sleep(0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    starting = asyncio.create_task(start_receiver_later())
    try:
        stats = await push_remote_write(sim, url, start_ms=START_MS, step_ms=STEP_MS, speed=1000, duration_s=5)
    finally:
        await starting
        await runner.cleanup()
    assert stats.requests == 1 and stats.retries >= 1 and len(recorder.posts) == 1
