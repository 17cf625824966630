"""Load generators that run in their own process, so the process under test keeps its CPU to itself.

``python -m bench.load post --series 1000 --samples 10``: pre-encodes remote-write
bodies, then reads commands on stdin:

* ``go <url> <requests> <concurrency>``: POST that many bodies (cycling) with
  that many concurrent connections; print one JSON line with the samples
  acknowledged (204), the wall time from the first request's start to the
  last answer, the statuses and the request latencies;
* ``quit``.

``python -m bench.load background --url URL --series 1000 --rate 10``: plays
Prometheus at a steady pace: ``rate`` requests per second, each carrying
``series / rate`` of the series with a sample stamped now (so each series gets
one sample per second), until killed. Prints "ready" once the first request
was answered, then a JSON status line per ``--report-every`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp
import numpy as np

from bench.workload import runbook_fleet
from detector.wire.remote_write import REMOTE_WRITE_HEADERS, encode_write_request

HEADERS = {**REMOTE_WRITE_HEADERS, "User-Agent": "headroom-bench"}


async def _post_many(url: str, bodies: list[bytes], samples: list[int], requests: int, concurrency: int) -> dict:
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    acked = 0
    next_request = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        # One warm connection per client before the clock starts.
        await asyncio.gather(*(session.get(url.replace("/api/v1/write", "/-/healthy")) for _ in range(concurrency)),
                             return_exceptions=True)

        async def client() -> None:
            nonlocal acked, next_request
            while next_request < requests:
                i = next_request
                next_request += 1
                body = bodies[i % len(bodies)]
                t = time.perf_counter()
                async with session.post(url, data=body, headers=HEADERS) as answer:
                    await answer.read()
                    status = answer.status
                latencies.append(time.perf_counter() - t)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 204:
                    acked += samples[i % len(bodies)]

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "samples": acked,
        "elapsed": elapsed,
        "statuses": statuses,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
    }


async def _post_main(args: argparse.Namespace) -> None:
    wl = runbook_fleet(args.series + 200, hot=False)
    bodies = wl.write_bodies(args.series, args.samples, args.bodies)
    samples = [args.series * args.samples] * len(bodies)
    print(json.dumps({"ready": True, "bodies": len(bodies), "bytes": sum(map(len, bodies)) // len(bodies)}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not line or line[0] == "quit":
            return
        if line[0] == "go":
            url, requests, concurrency = line[1], int(line[2]), int(line[3])
            result = await _post_many(url, bodies, samples, requests, concurrency)
            print(json.dumps(result), flush=True)


async def _background_main(args: argparse.Namespace) -> None:
    wl = runbook_fleet(args.series, hot=False)
    n = len(wl)
    per_request = -(-n // args.rate)
    groups = [np.arange(start, min(start + per_request, n)) for start in range(0, n, per_request)]
    period = 1.0 / args.rate
    rng = np.random.default_rng(1)
    statuses: dict[str, int] = {}
    ready = False
    last_report = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        tick = time.monotonic()
        i = 0
        while True:
            rows = groups[i % len(groups)]
            i += 1
            now_ms = time.time_ns() // 1_000_000
            stamps = np.full(len(rows), now_ms, dtype=np.int64)
            values = wl.values_at(stamps, rng, rows).tolist()
            body = encode_write_request((wl.labels[r], [(now_ms, v)]) for r, v in zip(rows.tolist(), values))
            try:
                async with session.post(args.url, data=body, headers=HEADERS) as answer:
                    await answer.read()
                    statuses[str(answer.status)] = statuses.get(str(answer.status), 0) + 1
                    if not ready and answer.status == 204:
                        ready = True
                        print("ready", flush=True)
            except aiohttp.ClientError as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
            if time.monotonic() - last_report >= args.report_every:
                last_report = time.monotonic()
                print(json.dumps({"statuses": statuses}), flush=True)
            tick += period
            await asyncio.sleep(max(0.0, tick - time.monotonic()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    sub = parser.add_subparsers(dest="mode", required=True)
    post = sub.add_parser("post")
    post.add_argument("--series", type=int, required=True)
    post.add_argument("--samples", type=int, required=True)
    post.add_argument("--bodies", type=int, default=12)
    bg = sub.add_parser("background")
    bg.add_argument("--url", required=True)
    bg.add_argument("--series", type=int, default=1000)
    bg.add_argument("--rate", type=int, default=10)
    bg.add_argument("--report-every", type=float, default=5.0)
    args = parser.parse_args()
    try:
        asyncio.run(_post_main(args) if args.mode == "post" else _background_main(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
