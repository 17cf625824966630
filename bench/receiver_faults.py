"""Receiver under a flood of big requests: how long do small ones wait? (issue 9)

Stack: a real Kafka broker and ``headroom receiver`` as a subprocess, once from
a baseline source tree (``git archive`` of ``BENCH_BASELINE_REF``, default
``main``) and once from this checkout, one after the other in the same run, so
a ratio compares the two under the same machine load.

Per variant and run: ``FLOODERS`` clients post big remote-write requests
back to back (50k or 100k series each, every body of fresh series, so the
first decode is the expensive one; a 503 is sent again after its
Retry-After, as Prometheus does, until the flood's time is up), while a probe posts a 1-series request
every ``PROBE_EVERY_S`` and times each answer. Rows: the probe's p50/p99/max
and the big requests' answers. On main a big body is decoded on the event
loop, so a probe waits behind every big request queued before it; with
issue 9's receiver big bodies are decoded on a thread of their own and what
is over the in-flight bounds is answered 503 at once.

Second table: the issue's flood of new series, 64 connections posting
requests of 2000 series never seen before (the expensive first-sight
decode), main vs this tree: latency of every answer, requests acknowledged,
receiver RSS when the flood stops.

Third table: the broker is killed (SIGKILL) under load and started again;
senders post small requests throughout, sending a 503 again as Prometheus
would, and every sample acknowledged with 204 is looked for in the topic
afterwards. Rows: samples acknowledged, acknowledged samples missing (must be
0), 503 answers during the outage, seconds from the restart to the first 204.

Run: ``python -m bench.run receiver-faults [--quick] [--runs N]``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

from bench.common import REPO, BenchContext, Table

PARTITIONS = 4
FLOODERS = 4
PROBE_EVERY_S = 0.05
PROBE_TIMEOUT_S = 60.0


def _baseline_tree(ctx: BenchContext) -> tuple[Path, str]:
    """The baseline's source, extracted once per bench run."""
    ref = os.environ.get("BENCH_BASELINE_REF", "main")
    target = ctx.tmp / f"baseline-{ref.replace('/', '_')}"
    if not target.exists():
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    return target, f"{ref} ({commit})"


def _bodies(count: int, series: int, stamp: int, prefix: str) -> list[bytes]:
    from detector.wire.remote_write import encode_write_request

    return [
        encode_write_request(
            ((("__name__", f"{prefix}_{b}"), ("instance", f"i{i % 1000}"), ("job", "flood"), ("n", str(i))), [(stamp, float(i))])
            for i in range(series))
        for b in range(count)
    ]


async def _run_variant(ctx: BenchContext, tree: Path, topic: str, big: list[bytes], small: bytes,
                       flood_s: float) -> dict[str, object]:
    import aiohttp

    from pipelines.stack.process import free_port, log_tail, start_process, stop_pid
    from detector.wire.remote_write import REMOTE_WRITE_HEADERS

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tree), HEADROOM_KAFKA_BOOTSTRAP=ctx.broker().bootstrap,
               HEADROOM_SAMPLES_TOPIC=topic, HEADROOM_PARTITIONS=str(PARTITIONS), HEADROOM_RECEIVER_PORT=str(port),
               HEADROOM_METADATA_TOPIC=f"{topic}-metadata",
               HEADROOM_MAX_SERIES_PER_REQUEST="1000000")  # the flood's bodies are over the default; ignored by main
    log = ctx.tmp / f"{topic}-{tree.name}.log"
    proc = start_process([sys.executable, "-m", "pipelines.cli", "receiver"], log, cwd=tree, env=env)
    url = f"http://127.0.0.1:{port}"
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as probe_session, aiohttp.ClientSession(timeout=timeout) as flood_session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    async with probe_session.post(f"{url}/api/v1/write", data=small, headers=REMOTE_WRITE_HEADERS) as a:
                        if a.status == 204:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"receiver at {url} not accepting; log ends:\n{log_tail(log)}")
                await asyncio.sleep(0.2)

            queue = list(big)
            big_status: dict[str, int] = {}

            async def flood() -> None:
                # Like Prometheus: a 503 is sent again after its Retry-After, until the flood is over.
                while queue and time.monotonic() < flood_ends:
                    body = queue.pop()
                    while time.monotonic() < flood_ends:
                        try:
                            async with flood_session.post(f"{url}/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS) as a:
                                await a.read()
                                key, retry_after = str(a.status), float(a.headers.get("Retry-After", "1"))
                        except (aiohttp.ClientError, TimeoutError) as exc:
                            key, retry_after = type(exc).__name__, 1.0
                        big_status[key] = big_status.get(key, 0) + 1
                        if key != "503":
                            break
                        await asyncio.sleep(retry_after)

            latencies: list[float] = []
            failures = 0
            flood_ends = time.monotonic() + flood_s
            flooders = [asyncio.create_task(flood()) for _ in range(FLOODERS)]
            await asyncio.sleep(0.2)  # the first big bodies are in
            while not all(f.done() for f in flooders):
                t = time.perf_counter()
                try:
                    async with probe_session.post(f"{url}/api/v1/write", data=small, headers=REMOTE_WRITE_HEADERS) as a:
                        await a.read()
                        failures += a.status != 204
                except (aiohttp.ClientError, TimeoutError):
                    failures += 1
                latencies.append(time.perf_counter() - t)
                await asyncio.sleep(PROBE_EVERY_S)
            await asyncio.gather(*flooders)
    finally:
        stop_pid(proc.pid, grace=10.0)
    latencies.sort()
    return {"latencies": latencies, "failures": failures, "big": big_status}


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run(ctx: BenchContext) -> list[Table]:
    return [*asyncio.run(_measure(ctx)), asyncio.run(_new_series_flood(ctx)), asyncio.run(_broker_kill(ctx))]


NEW_SERIES_CONNECTIONS = 64
NEW_SERIES_PER_REQUEST = 2000


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def _new_series_flood(ctx: BenchContext) -> Table:
    """The issue's flood: many connections, each request 2000 series never seen before."""
    import aiohttp

    from detector.wire.remote_write import REMOTE_WRITE_HEADERS
    from pipelines.stack.kafka import create_topics
    from pipelines.stack.process import free_port, log_tail, start_process, stop_pid

    baseline, baseline_name = _baseline_tree(ctx)
    flood_s = 15.0 if ctx.quick else 30.0
    pool = 300 if ctx.quick else 600
    table = Table(
        f"{NEW_SERIES_CONNECTIONS} connections sending requests of {NEW_SERIES_PER_REQUEST} new series each for "
        f"{flood_s:.0f} s (a 503 sent again after Retry-After)",
        caption=f"baseline: the receiver of {baseline_name}. Latency from POST to answer, every answer; "
                "RSS of the receiver when the flood stops.")
    for run in range(ctx.runs):
        now = time.time_ns() // 1_000_000
        bodies = await asyncio.to_thread(lambda: _bodies_of(pool, NEW_SERIES_PER_REQUEST, now, f"new_r{run}"))
        for name, tree in (("main", baseline), ("this tree", REPO)):
            topic = f"bench-ns-{run}-{'b' if name == 'main' else 't'}-{now}"
            await create_topics(ctx.broker().bootstrap, {topic: PARTITIONS, f"{topic}-metadata": 1},
                                config={"retention.ms": 120_000})
            port = free_port()
            env = dict(os.environ, PYTHONPATH=str(tree), HEADROOM_KAFKA_BOOTSTRAP=ctx.broker().bootstrap,
                       HEADROOM_SAMPLES_TOPIC=topic, HEADROOM_METADATA_TOPIC=f"{topic}-metadata",
                       HEADROOM_PARTITIONS=str(PARTITIONS), HEADROOM_RECEIVER_PORT=str(port))
            log = ctx.tmp / f"{topic}.log"
            proc = start_process([sys.executable, "-m", "pipelines.cli", "receiver"], log, cwd=tree, env=env)
            url = f"http://127.0.0.1:{port}"
            latencies: list[float] = []
            accepted_latencies: list[float] = []
            statuses: dict[str, int] = {}
            queue = list(bodies)
            try:
                connector = aiohttp.TCPConnector(limit=NEW_SERIES_CONNECTIONS)
                async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
                    deadline = time.monotonic() + 60
                    while True:
                        try:
                            async with session.get(f"{url}/-/ready") as ready:
                                if ready.status == 200:
                                    break
                        except aiohttp.ClientError:
                            pass
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"receiver not ready; log ends:\n{log_tail(log)}")
                        await asyncio.sleep(0.2)
                    ends = time.monotonic() + flood_s

                    async def connection() -> None:
                        body = None
                        while time.monotonic() < ends:
                            if body is None:
                                if not queue:
                                    return
                                body = queue.pop()
                            t = time.perf_counter()
                            try:
                                async with session.post(f"{url}/api/v1/write", data=body, headers=REMOTE_WRITE_HEADERS) as a:
                                    await a.read()
                                    key, retry_after = str(a.status), float(a.headers.get("Retry-After", "1"))
                            except (aiohttp.ClientError, TimeoutError) as exc:
                                key, retry_after = type(exc).__name__, 1.0
                            latencies.append(time.perf_counter() - t)
                            statuses[key] = statuses.get(key, 0) + 1
                            if key == "204":
                                accepted_latencies.append(latencies[-1])
                                body = None
                            else:
                                await asyncio.sleep(retry_after)

                    await asyncio.gather(*(connection() for _ in range(NEW_SERIES_CONNECTIONS)))
                    rss = _rss_mib(proc.pid)
            finally:
                stop_pid(proc.pid, grace=10.0)
            latencies.sort()
            accepted_latencies.sort()
            ctx.log(f"new-series flood run {run + 1} {name}: answers {statuses}, p50 {_pct(latencies, 0.5):.2f} s, "
                    f"p99 {_pct(latencies, 0.99):.2f} s, 204 p99 {_pct(accepted_latencies, 0.99):.2f} s, RSS {rss:.0f} MiB")
            base = name == "main"
            table.row(f"{name}: p99 of every answer", "s", baseline=base, lower_is_better=True).add(_pct(latencies, 0.99))
            table.row(f"{name}: p50 of every answer", "s", ratio=False, lower_is_better=True).add(_pct(latencies, 0.5))
            table.row(f"{name}: p99 of 204 answers", "s", ratio=False, lower_is_better=True).add(_pct(accepted_latencies, 0.99))
            table.row(f"{name}: requests acknowledged", "requests", ratio=False).add(statuses.get("204", 0))
            table.row(f"{name}: answers 503", "answers", ratio=False).add(statuses.get("503", 0))
            table.row(f"{name}: receiver RSS when the flood stops", "MiB", ratio=False, lower_is_better=True).add(rss)
    return table


def _bodies_of(count: int, series: int, stamp: int, prefix: str) -> list[bytes]:
    from detector.wire.remote_write import encode_write_request

    return [
        encode_write_request(
            ((("__name__", "fresh"), ("instance", f"{prefix}_{b}"), ("job", "flood"), ("n", str(i))), [(stamp, float(i))])
            for i in range(series))
        for b in range(count)
    ]


KILL_SENDERS = 8
KILL_SERIES_PER_REQUEST = 50


async def _broker_kill(ctx: BenchContext) -> Table:
    """Acknowledged samples vs samples present after a SIGKILL of the broker under load."""
    import signal

    import aiohttp
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from detector.wire.batch import SampleBatch
    from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request
    from pipelines.stack.kafka import KafkaBroker, create_topics
    from pipelines.stack.process import free_port, log_tail, start_process, stop_pid

    before, down, after = (3.0, 5.0, 8.0) if ctx.quick else (5.0, 10.0, 15.0)
    table = Table(
        f"broker killed under load: {KILL_SENDERS} senders of {KILL_SERIES_PER_REQUEST}-series requests, "
        f"SIGKILL after {before:.0f} s, down {down:.0f} s, then {after:.0f} s more",
        caption="this tree's receiver (produce timeout 3 s) and its own broker; a 503 is sent again after Retry-After; "
                "'missing' = acknowledged (204) samples not in the topic afterwards.")
    for run in range(ctx.runs):
        broker = KafkaBroker(ctx.tmp / f"kill-broker-{run}")
        broker.start()
        topic = "kill-samples"
        await create_topics(broker.bootstrap, {topic: PARTITIONS, f"{topic}-metadata": 1})
        port = free_port()
        env = dict(os.environ, HEADROOM_KAFKA_BOOTSTRAP=broker.bootstrap, HEADROOM_SAMPLES_TOPIC=topic,
                   HEADROOM_METADATA_TOPIC=f"{topic}-metadata", HEADROOM_PARTITIONS=str(PARTITIONS),
                   HEADROOM_RECEIVER_PORT=str(port), HEADROOM_PRODUCE_TIMEOUT="3s")
        log = ctx.tmp / f"kill-receiver-{run}.log"
        proc = start_process([sys.executable, "-m", "pipelines.cli", "receiver"], log, cwd=REPO, env=env)
        url = f"http://127.0.0.1:{port}/api/v1/write"
        acked: set[tuple[str, int]] = set()
        statuses: dict[str, int] = {}
        first_204_after_restart: list[float] = []
        restarted_at = [float("inf")]
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                deadline = time.monotonic() + 60
                while True:  # receiver up and connected
                    try:
                        async with session.get(url.replace("/api/v1/write", "/-/ready")) as ready:
                            if ready.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"receiver not ready; log ends:\n{log_tail(log)}")
                    await asyncio.sleep(0.2)
                stop_at = [float("inf")]

                async def send(sender: int) -> None:
                    k = 0
                    while time.monotonic() < stop_at[0]:
                        k += 1
                        stamp = time.time_ns() // 1_000_000
                        names = [f"s{sender}_{i}" for i in range(KILL_SERIES_PER_REQUEST)]
                        body = encode_write_request(
                            ((("__name__", "kill_probe"), ("job", "bench"), ("series", name)), [(stamp, float(k))]) for name in names)
                        while time.monotonic() < stop_at[0]:
                            try:
                                async with session.post(url, data=body, headers=REMOTE_WRITE_HEADERS) as answer:
                                    await answer.read()
                                    key = str(answer.status)
                            except (aiohttp.ClientError, TimeoutError) as exc:
                                key = type(exc).__name__
                            statuses[key] = statuses.get(key, 0) + 1
                            if key == "204":
                                acked.update((name, stamp) for name in names)
                                if time.monotonic() > restarted_at[0] and not first_204_after_restart:
                                    first_204_after_restart.append(time.monotonic() - restarted_at[0])
                                break
                            await asyncio.sleep(1.0)
                        await asyncio.sleep(0.02)

                senders = [asyncio.create_task(send(i)) for i in range(KILL_SENDERS)]
                await asyncio.sleep(before)
                os.kill(broker.pid(), signal.SIGKILL)
                await asyncio.sleep(down)
                await asyncio.to_thread(broker.stop)  # clears the pid file of the killed broker
                await asyncio.to_thread(broker.start)
                restarted_at[0] = time.monotonic()
                await asyncio.sleep(after)
                stop_at[0] = time.monotonic()
                await asyncio.gather(*senders)
            present: set[tuple[str, int]] = set()
            consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                        enable_auto_commit=False)
            await consumer.start()
            try:
                parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
                consumer.assign(parts)
                end = await consumer.end_offsets(parts)
                async with asyncio.timeout(120):
                    while [p for p in parts if await consumer.position(p) < end[p]]:
                        for records in (await consumer.getmany(timeout_ms=500)).values():
                            for record in records:
                                batch = SampleBatch.decode(record.value)
                                for i, t in zip(batch.series_index.tolist(), batch.timestamps.tolist()):
                                    present.add((dict(batch.series_labels(i))["series"], t))
            finally:
                await consumer.stop()
        finally:
            stop_pid(proc.pid, grace=10.0)
            await asyncio.to_thread(broker.stop)
        missing = len(acked - present)
        ctx.log(f"broker kill run {run + 1}: {len(acked)} acknowledged, {missing} missing, answers {statuses}, "
                f"first 204 {first_204_after_restart[0] if first_204_after_restart else float('nan'):.1f} s after restart")
        table.row("samples acknowledged (204)", "samples", ratio=False).add(len(acked))
        table.row("acknowledged samples missing from the topic", "samples", ratio=False, target=0,
                  lower_is_better=True).add(missing)
        table.row("503 answers while the broker was down or reconnecting", "answers", ratio=False).add(statuses.get("503", 0))
        table.row("other answers or client errors (not 204/503)", "answers", ratio=False).add(
            sum(n for k, n in statuses.items() if k not in ("204", "503")))
        table.row("restart to first 204", "s", ratio=False, lower_is_better=True).add(
            first_204_after_restart[0] if first_204_after_restart else float("nan"))
    return table


async def _measure(ctx: BenchContext) -> list[Table]:
    from pipelines.stack.kafka import create_topics
    from detector.wire.remote_write import encode_write_request

    baseline, baseline_name = _baseline_tree(ctx)
    big_series = 50_000 if ctx.quick else 100_000
    big_count = 8 if ctx.quick else 12
    flood_s = 30.0 if ctx.quick else 60.0
    table = Table(
        f"receiver under a flood: {FLOODERS} clients posting {big_count} requests of {big_series:,} new series each "
        f"(503s sent again after Retry-After, for at most {flood_s:.0f} s), a 1-series probe every "
        f"{PROBE_EVERY_S * 1000:.0f} ms",
        caption=f"baseline: the receiver of {baseline_name}; 'this tree': {REPO.name}. Probe latency is from POST "
                "to answer; a probe answered 503 counts as answered (it is retried by Prometheus) and is counted "
                "apart. Lower is better.",
    )
    for run in range(ctx.runs):
        now = time.time_ns() // 1_000_000
        big = await asyncio.to_thread(_bodies, big_count, big_series, now, f"flood_r{run}")
        small = encode_write_request([((("__name__", "probe"), ("job", "probe")), [(now, 1.0)])])
        results = {}
        for name, tree in (("baseline", baseline), ("this tree", REPO)):
            topic = f"bench-rf-{run}-{'b' if name == 'baseline' else 't'}-{now}"
            await create_topics(ctx.broker().bootstrap, {topic: PARTITIONS, f"{topic}-metadata": 1},
                                config={"retention.ms": 120_000})
            results[name] = await _run_variant(ctx, tree, topic, big, small, flood_s)
            lat = results[name]["latencies"]
            ctx.log(f"receiver-faults run {run + 1} {name}: {len(lat)} probes, p50 {_pct(lat, 0.5) * 1000:.0f} ms, "
                    f"p99 {_pct(lat, 0.99) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms, probe failures "
                    f"{results[name]['failures']}, big answers {results[name]['big']}")
        for name, result in results.items():
            lat = result["latencies"]
            base = name == "baseline"
            label = f"{'main' if base else 'this tree'}"
            table.row(f"{label}: small request p99 during the flood", "ms", baseline=base, lower_is_better=True).add(
                _pct(lat, 0.99) * 1000)
        for name, result in results.items():
            lat = result["latencies"]
            label = "main" if name == "baseline" else "this tree"
            table.row(f"{label}: small request p50 during the flood", "ms", lower_is_better=True, ratio=False).add(
                _pct(lat, 0.5) * 1000)
            table.row(f"{label}: small request max", "ms", lower_is_better=True, ratio=False).add(lat[-1] * 1000)
            table.row(f"{label}: probes answered during the flood", "probes", ratio=False).add(len(lat))
            table.row(f"{label}: probes not answered 204", "probes", ratio=False).add(result["failures"])
            table.row(f"{label}: big requests acknowledged (204) within the flood", "requests", ratio=False).add(
                result["big"].get("204", 0))
            table.row(f"{label}: big request answers 503 (shed, or Kafka timed out)", "answers", ratio=False).add(
                result["big"].get("503", 0))
    return [table]
