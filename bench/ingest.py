"""(a) Receiver ingest: remote-write bodies decoded, then decoded AND acknowledged by a real Kafka.

Part 1, in this process, nothing else running: ``RemoteWriteDecoder.decode``
on pre-encoded bodies of the runbook fleet's series (~8.7 labels each), two
shapes: 1000 series x 10 samples and 2000 series x 1 sample.

* baseline: ``WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))``,
  the bare snappy + protobuf (upb) parse of the same body, no grouping;
* reference: ``RawWriteRequest`` parse plus one Python pass over every series
  (join its label bytes, list its timestamps and values): the floor of any
  per-series Python loop, with nothing looked up or grouped;
* ``decode``, steady state: every series already seen by this decoder;
* ``decode``, first sight: a fresh decoder per body, so every series is
  validated, canonicalised and assigned a partition.

Part 2: the receiver app (``create_receiver_app``) in this process on a real
TCP port, a ``KafkaGate`` to a real broker (acks=all, idempotent), and a load
generator in another process (``bench.load post``) POSTing the same bodies
with 4 concurrent connections. Samples/s = samples answered 204 / wall time
from the first request to the last answer. "per receiver CPU-s" divides the
same samples by the CPU time this process (the receiver alone) used meanwhile:
the per-core figure, which the neighbours' noise disturbs much less. For
reference, the same load against an aiohttp app that only reads the body and
answers 204 (HTTP cost), and against the receiver with a stub gate that
encodes the batches but sends nothing (receiver cost without Kafka).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time

import cramjam

from bench.common import REPO, BenchContext, Table, profile_call
from bench.workload import INTERVAL_MS, T0_MS, describe, runbook_fleet

SHAPES = ((1000, 10), (2000, 1))
TARGET = 500_000  # samples/s per core on 1000 x 10
CONCURRENCY = 4
TOPIC = "bench-ingest-samples"
PARTITIONS = 4


def _label(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


# --------------------------------------------------------------------------- part 1: decode


def _decode_rows(ctx: BenchContext, tables: dict[tuple[int, int], Table]) -> None:
    from detector.wire.proto import remote_pb2
    from detector.wire.remote_write import RemoteWriteDecoder

    def baseline(bodies):
        for body in bodies:
            remote_pb2.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))

    def reference(bodies):
        for body in bodies:
            request = remote_pb2.RawWriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
            for ts in request.timeseries:
                b"".join(ts.labels)
                samples = ts.samples
                [s.timestamp for s in samples]
                [s.value for s in samples]

    wl = runbook_fleet(max(s for s, _ in SHAPES) + 200, hot=False)
    reps = 40 if ctx.quick else 120
    first_reps = 8 if ctx.quick else 24
    data = {}
    for shape in SHAPES:
        bodies = wl.write_bodies(shape[0], shape[1], 12)
        steady = RemoteWriteDecoder(PARTITIONS)
        for body in bodies:
            steady.decode(body)
        data[shape] = (bodies, steady)
        ctx.log(f"ingest {_label(shape)}: {describe(wl)[:40]}..., body {sum(map(len, bodies)) // len(bodies)} bytes "
                f"snappy, {len(bytes(cramjam.snappy.decompress_raw(bodies[0])))} bytes protobuf")

    def timed(fn, bodies, count) -> tuple[float, float]:
        """(wall seconds, CPU seconds of this thread) for ``fn`` over ``count`` bodies."""
        work = [bodies[i % len(bodies)] for i in range(count)]
        gc.collect()
        wall, cpu = time.perf_counter(), time.thread_time()
        fn(work)
        return time.perf_counter() - wall, time.thread_time() - cpu

    steady_name = "RemoteWriteDecoder.decode, steady state (series seen)"
    first_name = "RemoteWriteDecoder.decode, first sight (fresh decoder)"
    for i in range(ctx.runs):
        for shape in SHAPES:
            table = tables[shape]
            bodies, steady = data[shape]
            per_body = shape[0] * shape[1]
            target = TARGET if shape == (1000, 10) else None
            rows = [
                ("bare parse: snappy + WriteRequest.FromString", baseline, reps, True, None, True),
                ("reference: RawWriteRequest parse + one pass over series", reference, reps, False, None, False),
                (steady_name, lambda b: [steady.decode(x) for x in b], reps, False, target, True),
                (first_name, lambda b: [RemoteWriteDecoder(PARTITIONS).decode(x) for x in b], first_reps, False, None,
                 False),
            ]
            for name, fn, count, is_base, target_, with_wall in rows:
                wall, cpu = timed(fn, bodies, count)
                table.row(f"{name}", "samples/CPU-s", baseline=is_base, target=target_).add(count * per_body / cpu)
                if with_wall:
                    table.row(f"{name}, wall", "samples/s", baseline=is_base).add(count * per_body / wall)
            first = table.rows[first_name]
            table.row("first sight: new series decoded", "series/CPU-s", ratio=False).add(first.values[-1] / shape[1])
        ctx.log(f"ingest decode run {i + 1}/{ctx.runs}: " + ", ".join(
            f"{_label(s)} decode {tables[s].rows[steady_name].values[-1]:,.0f}/CPU-s "
            f"({tables[s].rows[steady_name + ', wall'].values[-1]:,.0f}/s wall)" for s in SHAPES))
    if ctx.profile:
        bodies, steady = data[SHAPES[0]]
        profile_call(ctx.console, f"RemoteWriteDecoder.decode, {_label(SHAPES[0])}, steady",
                     lambda: [steady.decode(bodies[i % len(bodies)]) for i in range(reps)])


# --------------------------------------------------------------------------- part 2: end to end


class _StubGate:
    """Stands in for KafkaGate: takes the records (the receiver has encoded them), sends nothing."""

    ready = True

    async def send_records(self, records) -> None:
        return None


def _null_app():
    from aiohttp import web

    async def write(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="healthy")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/api/v1/write", write)
    app.router.add_get("/-/healthy", healthy)
    return app


async def _serve(app):
    from aiohttp import web

    from pipelines.stack.process import free_port

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/api/v1/write"


class _Client:
    """A ``bench.load post`` process holding one shape's bodies."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", "post", "--series", str(self.shape[0]), "--samples", str(self.shape[1]),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO)
        await self._answer()

    async def _answer(self) -> dict:
        assert self.proc and self.proc.stdout
        line = await asyncio.wait_for(self.proc.stdout.readline(), 300)
        if not line:
            raise RuntimeError(f"load generator {self.shape} exited with {await self.proc.wait()}")
        return json.loads(line)

    async def go(self, url: str, requests: int) -> tuple[dict, float]:
        """Run the requests; returns the client's result and this process's CPU seconds meanwhile."""
        assert self.proc and self.proc.stdin
        cpu = time.process_time()
        self.proc.stdin.write(f"go {url} {requests} {CONCURRENCY}\n".encode())
        await self.proc.stdin.drain()
        result = await self._answer()
        return result, time.process_time() - cpu

    async def stop(self) -> None:
        if self.proc and self.proc.returncode is None:
            try:
                self.proc.stdin.write(b"quit\n")
                await asyncio.wait_for(self.proc.wait(), 5)
            except (Exception, asyncio.TimeoutError):
                self.proc.kill()
                await self.proc.wait()


async def _end_to_end(ctx: BenchContext, tables: dict[tuple[int, int], Table]) -> None:
    from pipelines.receiver import KafkaGate, create_receiver_app
    from pipelines.settings import Settings
    from pipelines.stack.kafka import create_topics

    broker = ctx.broker()
    await create_topics(broker.bootstrap, {TOPIC: PARTITIONS}, config={"retention.ms": 120_000})
    settings = Settings(kafka_bootstrap=broker.bootstrap, samples_topic=TOPIC, partitions=PARTITIONS)
    gate = KafkaGate(broker.bootstrap, timeout_s=settings.produce_timeout_s)
    runners, clients = [], []
    try:
        gate.start()
        async with asyncio.timeout(30):
            while not gate.ready:
                await asyncio.sleep(0.05)
        servers = {}
        # The bodies are stamped from the workload's T0 on (bench.workload): the receiver's clock is set
        # to their last scrape, or its accepted window (pipelines.settings.sample_window) refuses them all.
        clock = (lambda: T0_MS + max(s for _, s in SHAPES) * 12 * INTERVAL_MS)
        for name, app in (("null", _null_app()), ("stub", create_receiver_app(settings, _StubGate(), clock=clock)),
                          ("kafka", create_receiver_app(settings, gate, clock=clock))):
            runner, url = await _serve(app)
            runners.append(runner)
            servers[name] = url
        clients = [_Client(shape) for shape in SHAPES]
        await asyncio.gather(*(c.start() for c in clients))
        requests = {(1000, 10): 24 if ctx.quick else 80, (2000, 1): 80 if ctx.quick else 300}
        for client in clients:  # every series seen, every connection and the producer warm
            for url in servers.values():
                await client.go(url, 2 * CONCURRENCY + 12)
        plan = [(server, name, shape) for shape in SHAPES for server, name in (
            ("null", "HTTP only: aiohttp reads the body, answers 204"),
            ("stub", "receiver, Kafka stubbed (decode + batch encode)"),
            ("kafka", "receiver -> Kafka (acks=all), samples acknowledged"))]
        for i in range(ctx.runs):
            for server, name, shape in plan:
                client = clients[SHAPES.index(shape)]
                result, cpu = await client.go(servers[server], requests[shape])
                bad = {k: v for k, v in result["statuses"].items() if k != "204"}
                if bad:
                    ctx.log(f"[red]ingest e2e {server} {_label(shape)}: non-204 answers {bad}[/red]")
                table = tables[shape]
                table.row(f"{name}, wall", "samples/s").add(result["samples"] / result["elapsed"])
                table.row(f"{name}, per receiver CPU-s", "samples/CPU-s",
                          target=TARGET if server == "kafka" and shape == (1000, 10) else None
                          ).add(result["samples"] / max(cpu, 1e-9))
                if server == "kafka":
                    table.row(f"{name}, request p50 ({CONCURRENCY} concurrent)", "ms", ratio=False,
                              lower_is_better=True).add(result["p50_ms"])
            ctx.log(f"ingest e2e run {i + 1}/{ctx.runs}: " + ", ".join(
                f"{_label(s)} kafka {tables[s].rows['receiver -> Kafka (acks=all), samples acknowledged, wall'].values[-1]:,.0f}/s"
                for s in SHAPES))
    finally:
        for client in clients:
            await client.stop()
        for runner in runners:
            await runner.cleanup()
        await gate.close()


def run(ctx: BenchContext) -> list[Table]:
    tables = {
        shape: Table(
            f"ingest: remote-write {_label(shape)} ({shape[0]} series x {shape[1]} samples, ~8.7 labels/series)",
            "decode rows: one thread, nothing else running; e2e rows: receiver in this process, "
            f"load from another process ({CONCURRENCY} connections), real Kafka broker on this machine",
        )
        for shape in SHAPES
    }
    _decode_rows(ctx, tables)
    asyncio.run(_end_to_end(ctx, tables))
    return list(tables.values())
