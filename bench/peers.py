"""(peers) Headroom beside its real peers, in the same run, on the same remote-write stream.

Four systems receive the same bodies at the same moments:

* **Prometheus 2.42** (Debian's ``prometheus``) with ``--web.enable-remote-write-receiver``, the
  runbook's rule file at a 15 s evaluation interval (the baseline of every ratio);
* **VictoriaMetrics 1.79 + vmalert** (Debian's ``victoria-metrics`` ships both binaries): vmalert
  evaluates the same rule file every 15 s against VictoriaMetrics, writes its alert state back to it
  (as Prometheus writes ``ALERTS``) and notifies a null Alertmanager in this process (vmalert refuses
  to start without a notifier);
* **Headroom, rules only** (``HEADROOM_ANOMALY_SCORES=false``, ``HEADROOM_FORECASTS=false``):
  ``headroom receiver`` + ``headroom worker`` (8 partitions, the settings' default) on a Kafka
  broker of its own;
* **Headroom, defaults** (scores and forecasts on), on another broker of its own.

The stream: the runbook's workload (:func:`bench.workload.runbook_fleet`, its first 10,000 series,
271 scrape targets), one scrape of every series per 15 s, each target at its own phase in the
interval, stamped with the wall clock and played live (the peers evaluate rules on the wall clock, so
event time cannot run ahead of it). Five connections per system, one per shard, series sharded as
Prometheus's remote-write shards do: ``series ref % shards``, where refs are handed out in creation
order (:func:`shard_of`); each shard sends its requests one at a time. Two request shapes:

* **2000 x 1**: a shard's 2000 series, one sample each, sent when the shard's last target of the
  interval has been scraped (one request per shard per 15 s);
* **1000 x 10**: half a shard's series with their last 10 samples, sent every 150 s (what a
  Prometheus sends when catching up; here played at the live rate, so the sample rate is the same as
  in 2000 x 1 and only the shape differs).

Before the measured window, 20 scrapes of history (5 minutes, so ``rate(...[5m])`` windows are full)
are sent as fast as the systems take them, in the same shape; the window opens once every Headroom
worker has consumed them. CPU is ``utime + stime`` from ``/proc/<pid>/stat`` of each process (and its
children) over the window: from the first live request's due time to 15 s after the last answer (one
more rule evaluation), extended until every Headroom worker has consumed every sample. Idle work
(timers, GC, the brokers' housekeeping, Prometheus's head maintenance) in that window counts: this is
the cost per sample at the runbook's rate, not at saturation. To tell the per-sample part from the fixed
part, each process's idle rate is measured over 30 s without traffic right after the window, and the
"less idle" rows subtract it over the window's length (derived, so noisy: it can dip below 0 for a
process that does almost nothing per sample). Memory is RSS at the end of the run
divided by the series count (fixed overhead included), read after the idle period. Kafka bytes per sample: the samples topics'
``.log`` segment sizes on disk divided by every sample the receiver accepted (history included).
"""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import os
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.common import BenchContext, Table, runbook_rules, scrape
from bench.workload import T0_MS, Workload, runbook_fleet

# The issue asks for 10k and 100k series: HEADROOM_BENCH_PEERS_SERIES=100000 for the second.
SERIES = int(os.environ.get("HEADROOM_BENCH_PEERS_SERIES", "10000"))
SHARDS = 5
SCRAPE_MS = 15_000
PARTITIONS = 8  # Headroom's default (pipelines/settings.py)
HISTORY_SCRAPES = 20
SETTLE_S = 15.0
IDLE_S = 30.0  # two rule evaluations without traffic, before the live window
QUICK_IDLE_S = 15.0
CAUGHT_UP_TIMEOUT_S = 180.0
# (series per request, samples per series, live scrapes per run): live scrapes are whole rounds of the shape.
SHAPES = ((2000, 1, 20), (1000, 10, 20))
# HEADROOM_BENCH_PEERS_LONG=N: 2000 x 1 only, with N live scrapes (a whole number of rounds), for memory and
# CPU once every model has warmed up: forecasts publish most while their fits first become ready, in the
# first 10-20 minutes of a series (a 10-minute run is still in that transient).
LONG = bool(os.environ.get("HEADROOM_BENCH_PEERS_LONG"))
if LONG:
    SHAPES = ((2000, 1, int(os.environ["HEADROOM_BENCH_PEERS_LONG"])),)
QUICK_SHAPES = ((2000, 1, 4),)
# HEADROOM_BENCH_PEERS_QUICK_SHAPE=1000x10: the catch-up shape for --quick instead (one round of 10 scrapes).
if os.environ.get("HEADROOM_BENCH_PEERS_QUICK_SHAPE", "2000x1") == "1000x10":
    QUICK_SHAPES = ((1000, 10, 10),)
QUICK_HISTORY_SCRAPES = 4
CPU_UNIT = "CPU-s/1M samples"
MEM_UNIT = "KB/series"
MARGINAL_UNIT = "CPU-s/1M samples, less idle"
IDLE_UNIT = "CPU-ms/s"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the stream


def shard_of(series_index: int, shards: int) -> int:
    """The remote-write shard of a series, as Prometheus picks it: its series ref modulo the shard count.

    Prometheus's head hands out series refs in creation order, so consecutive series go round the shards.

    >>> [shard_of(i, 5) for i in range(7)]
    [0, 1, 2, 3, 4, 0, 1]
    """
    return series_index % shards


@dataclass(frozen=True)
class Request:
    """One remote-write request: ``rows`` (series indices) x ``scrapes``; due when its newest sample is."""

    shard: int
    rows: tuple[int, ...]
    scrapes: tuple[int, ...]
    due_ms: int  # offset from the stream's base time

    @property
    def samples(self) -> int:
        return len(self.rows) * len(self.scrapes)


def plan_requests(offsets_ms: Sequence[int], shards: int, series_per_request: int, samples_per_series: int,
                  first_scrape: int, scrapes: int, interval_ms: int = SCRAPE_MS) -> list[Request]:
    """Cut ``scrapes`` scrapes of every series into requests of ``series_per_request`` x ``samples_per_series``.

    Each shard takes its series in scrape order (by their target's offset in the interval) and, every
    ``samples_per_series`` scrapes, sends them in chunks; a chunk is due when its newest sample is
    stamped. Requests come back sorted by due time.

    >>> reqs = plan_requests([0, 100, 200, 300], shards=2, series_per_request=1, samples_per_series=2,
    ...                      first_scrape=0, scrapes=2, interval_ms=1000)
    >>> [(r.shard, r.rows, r.scrapes, r.due_ms) for r in reqs]
    [(0, (0,), (0, 1), 1000), (1, (1,), (0, 1), 1100), (0, (2,), (0, 1), 1200), (1, (3,), (0, 1), 1300)]
    """
    offsets = np.asarray(offsets_ms, dtype=np.int64)
    by_shard = [[] for _ in range(shards)]
    for i in np.argsort(offsets, kind="stable").tolist():
        by_shard[shard_of(i, shards)].append(i)
    requests = []
    for start in range(first_scrape, first_scrape + scrapes, samples_per_series):
        round_scrapes = tuple(range(start, min(start + samples_per_series, first_scrape + scrapes)))
        for shard, rows in enumerate(by_shard):
            for at in range(0, len(rows), series_per_request):
                chunk = tuple(rows[at:at + series_per_request])
                due = round_scrapes[-1] * interval_ms + int(offsets[list(chunk)].max())
                requests.append(Request(shard, chunk, round_scrapes, due))
    requests.sort(key=lambda r: (r.due_ms, r.shard))
    return requests


class Stream:
    """The workload's series with their values, stamped ``base_ms + k * 15 s + target offset``."""

    def __init__(self, wl: Workload, series: int) -> None:
        self.wl = wl
        self.series = series
        self.offsets = wl.offset_ms[:series]
        self._steps: dict[int, np.ndarray] = {}

    def _values(self, k: int) -> np.ndarray:
        # Values of event-time step k (deterministic, the workload's own shapes); only the stamps move.
        if k not in self._steps:
            self._steps[k] = self.wl.step(k)[1][: self.series]
        return self._steps[k]

    def body(self, request: Request, base_ms: int) -> bytes:
        from detector.wire.remote_write import encode_write_request

        columns = [(base_ms + k * SCRAPE_MS + self.offsets, self._values(k)) for k in request.scrapes]
        return encode_write_request(
            (self.wl.labels[i], [(int(stamps[i]), float(values[i])) for stamps, values in columns])
            for i in request.rows
        )


# --------------------------------------------------------------------------- /proc


def parse_proc_stat(text: str) -> tuple[int, int, int]:
    """``(ppid, utime, stime)`` (clock ticks) from a ``/proc/<pid>/stat`` line; the name may hold spaces.

    >>> parse_proc_stat("42 (python -m x) S 7 42 42 0 -1 4194560 1 0 0 0 150 25 0 0 20 0 3 0")
    (7, 150, 25)
    """
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]), int(fields[12])


def _children(pid: int) -> list[int]:
    """Live descendants of ``pid`` (a process tree: a service may fork helpers)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = parse_proc_stat(Path(f"/proc/{entry}/stat").read_text())[0]
            except (OSError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    ticks = 0
    for p in [pid, *_children(pid)]:
        try:
            _, utime, stime = parse_proc_stat(Path(f"/proc/{p}/stat").read_text())
        except FileNotFoundError:
            if p == pid:
                raise RuntimeError(f"process {pid} is gone") from None
            continue
        ticks += utime + stime
    return ticks / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants (``VmRSS``)."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except FileNotFoundError:
            continue
    return total


def topic_bytes(log_dir: Path, topic: str) -> int:
    """Bytes of a topic's log segments on disk (``.log`` files only: index files are preallocated)."""
    return sum(f.stat().st_size for d in log_dir.glob(f"{topic}-*") if d.name[len(topic) + 1:].isdigit()
               for f in d.glob("*.log"))


# --------------------------------------------------------------------------- the peers


def _services():
    """Service classes, defined on first use (they build on pipelines.stack, imported lazily like the other benches)."""
    from pipelines.stack.process import LOCALHOST, BackgroundService, ensure_debian_package, free_port, http_ready
    from pipelines.stack.prometheus import PROMETHEUS_BINARY, PrometheusServer

    class RemoteWritePrometheus(PrometheusServer):
        """Debian's Prometheus as a remote-write receiver evaluating the rule files, nothing scraped."""

        def start(self, timeout: float = 30.0) -> None:
            import yaml

            deadline = time.monotonic() + timeout
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.config_file.write_text(yaml.safe_dump(self.config(), sort_keys=False))
            binary = ensure_debian_package(PROMETHEUS_BINARY, "prometheus")
            self._launch([str(binary), f"--config.file={self.config_file}", f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                          f"--web.listen-address={LOCALHOST}:{self.port}", "--web.enable-remote-write-receiver"],
                         ports=[self.port])
            self._wait_until(lambda: http_ready(f"{self.url}/-/ready"), deadline, f"ready on {self.url}")

    class VictoriaMetrics(BackgroundService):
        """Single-node VictoriaMetrics (Debian's ``victoria-metrics``), defaults but for paths and port."""

        name = "victoria-metrics"

        def __init__(self, data_dir: Path) -> None:
            super().__init__(data_dir)
            self.port = free_port()

        @property
        def url(self) -> str:
            return f"http://{LOCALHOST}:{self.port}"

        def start(self, timeout: float = 30.0) -> None:
            binary = ensure_debian_package("/usr/bin/victoria-metrics", "victoria-metrics")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._launch([str(binary), f"-storageDataPath={self.data_dir / 'data'}",
                          f"-httpListenAddr={LOCALHOST}:{self.port}"], ports=[self.port])
            self._wait_until(lambda: http_ready(f"{self.url}/health"), time.monotonic() + timeout, "healthy")

    class Vmalert(BackgroundService):
        """vmalert on the rule file, querying and writing its alert state to ``datasource``."""

        name = "vmalert"

        def __init__(self, data_dir: Path, rule_file: Path, datasource: str, notifier: str) -> None:
            super().__init__(data_dir)
            self.rule_file, self.datasource, self.notifier = rule_file, datasource, notifier
            self.port = free_port()

        def start(self, timeout: float = 30.0) -> None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            rules = self.data_dir / "rules.yml"  # in data_dir: how the pid file recognises this process
            rules.write_text(self.rule_file.read_text())
            binary = ensure_debian_package("/usr/bin/vmalert", "victoria-metrics")
            self._launch([str(binary), f"-rule={rules}", f"-datasource.url={self.datasource}",
                          f"-remoteWrite.url={self.datasource}", f"-notifier.url={self.notifier}",
                          "-evaluationInterval=15s", f"-httpListenAddr={LOCALHOST}:{self.port}"], ports=[self.port])
            self._wait_until(lambda: http_ready(f"http://{LOCALHOST}:{self.port}/-/healthy"),
                             time.monotonic() + timeout, "healthy")

    return RemoteWritePrometheus, VictoriaMetrics, Vmalert


class _NullAlertmanager:
    """Answers 200 to anything (vmalert's notifier), in a thread of this process."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Peer:
    """One system under test: where to POST, and the processes whose CPU and memory are its cost."""

    key: str
    write_url: str
    pids: dict[str, int]  # role -> pid
    worker_metrics: str | None = None  # a Headroom worker's /metrics, to wait until it consumed everything
    broker: object | None = None
    samples_topics: tuple[str, ...] = ()
    sent: int = 0
    acked: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    retried: int = 0  # requests sent again after a 503 (see play)
    latencies: list[float] = field(default_factory=list)


class Peers:
    """Start every system of one run (in parallel where they are independent); ``stop()`` ends them all."""

    def __init__(self, run_dir: Path, rule_files: list[str], rule_file: Path) -> None:
        self.run_dir = run_dir
        self.rule_files = rule_files
        self.rule_file = rule_file
        self.services: list = []
        self.pipelines: list = []
        self.peers: list[Peer] = []
        self.sink = _NullAlertmanager()

    def start(self) -> list[Peer]:
        from pipelines.local import LocalPipeline
        from pipelines.stack.kafka import KafkaBroker

        prom_cls, vm_cls, vmalert_cls = _services()
        prom = prom_cls(self.run_dir / "prometheus", evaluation_interval="15s", rule_files=[self.rule_file])
        vm = vm_cls(self.run_dir / "victoria-metrics")
        brokers = {key: KafkaBroker(self.run_dir / f"kafka-{key}") for key in ("rules", "defaults")}
        self.services += [prom, vm, *brokers.values()]
        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(s.start) for s in (prom, vm, *brokers.values())]:
                future.result()
        vma = vmalert_cls(self.run_dir / "vmalert", self.rule_file, vm.url, self.sink.url)
        self.services.append(vma)
        vma.start()
        self.peers += [
            Peer("prometheus", f"{prom.url}/api/v1/write", {"prometheus": prom.pid()}),
            Peer("victoriametrics", f"{vm.url}/api/v1/write", {"victoria-metrics": vm.pid(), "vmalert": vma.pid()}),
        ]
        envs = {"rules": {"HEADROOM_ANOMALY_SCORES": "false", "HEADROOM_FORECASTS": "false"}, "defaults": {}}
        pipes = {}
        for key, env in envs.items():
            app_id = f"peers-{key}-{uuid.uuid4().hex[:6]}"
            pipes[key] = LocalPipeline(brokers[key].bootstrap, self.run_dir / app_id, rule_files=tuple(self.rule_files),
                                       partitions=PARTITIONS, app_id=app_id, extra_env=env)
            self.pipelines.append(pipes[key])
        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(p.start, 120.0) for p in pipes.values()]:
                future.result()
        for key, pipe in pipes.items():
            self.peers.append(Peer(
                f"headroom-{key}", pipe.write_url,
                {"receiver": pipe._pids["receiver"], "worker": pipe._pids["worker"], "kafka": brokers[key].pid()},
                worker_metrics=f"http://127.0.0.1:{pipe.worker_port}/metrics", broker=brokers[key],
                samples_topics=(pipe.samples_topic, pipe.global_samples_topic)))
        return self.peers

    def stop(self) -> None:
        errors = []
        for closer in [*(p.stop for p in self.pipelines), *(s.stop for s in reversed(self.services)), self.sink.close]:
            try:
                closer()
            except Exception as exc:  # stop everything else regardless
                errors.append(exc)
        if errors:
            raise errors[0]


# --------------------------------------------------------------------------- playing


RETRIES_503 = 12
"""Prometheus retries a 5xx without limit, backing off up to 5 s (``max_backoff``); the player stops
after this many (about 50 s), so a receiver that never recovers still fails the run."""


async def play(peers: list[Peer], requests: list[Request], bodies: list[bytes], base_ms: int, live: bool) -> None:
    """POST every body to every peer: one connection per (peer, shard), each shard's requests in order.

    Live: a request leaves when the wall clock reaches its due time; otherwise as fast as answered.
    """
    import aiohttp

    from detector.wire.remote_write import REMOTE_WRITE_HEADERS

    async def shard_sender(peer: Peer, shard: int) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            for request, body in zip(requests, bodies):
                if request.shard != shard:
                    continue
                if live:
                    await asyncio.sleep(max(0.0, (base_ms + request.due_ms) / 1000 - time.time()))
                started = time.perf_counter()
                peer.sent += request.samples
                for attempt in range(RETRIES_503 + 1):
                    try:
                        async with session.post(peer.write_url, data=body, headers=REMOTE_WRITE_HEADERS) as answer:
                            await answer.read()
                            status = str(answer.status)
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        status = type(exc).__name__
                    # A receiver shedding load answers 503 and Prometheus sends the request again
                    # (after Retry-After, with backoff): so does this player, and counts it.
                    if status != "503" or attempt == RETRIES_503:
                        break
                    peer.retried += 1
                    await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
                peer.latencies.append(time.perf_counter() - started)
                if status.startswith("2"):
                    peer.acked += request.samples
                else:
                    peer.failures[status] = peer.failures.get(status, 0) + 1

    await asyncio.gather(*(shard_sender(peer, shard) for peer in peers for shard in range(SHARDS)))


def _snapshots(peer: Peer) -> tuple[float, float]:
    """(snapshots taken, their CPU seconds) so far, all lanes, from the worker's /metrics."""
    metrics = scrape(peer.worker_metrics + "?name[]=headroom_snapshots_total&name[]=headroom_snapshot_cpu_seconds_total") or {}
    count = sum(v for k, v in metrics.items() if k.startswith("headroom_snapshots_total"))
    cpu = sum(v for k, v in metrics.items() if k.startswith("headroom_snapshot_cpu_seconds_total"))
    return count, cpu


def _consumed(peer: Peer) -> float:
    # Only the counter: the whole page holds a score gauge per series (27 MB at 100k series with
    # scores on), which the worker would render for every poll, its memory and CPU counted as the run's.
    metrics = scrape(peer.worker_metrics + "?name[]=headroom_worker_samples_total") or {}
    return metrics.get("headroom_worker_samples_total", 0.0)


def wait_consumed(peers: Iterable[Peer], timeout: float) -> float:
    """Wait until every Headroom worker counted every sample its receiver accepted; seconds waited."""
    started = time.monotonic()
    waiting = [p for p in peers if p.worker_metrics]
    while waiting and time.monotonic() - started < timeout:
        waiting = [p for p in waiting if _consumed(p) < p.acked]
        if waiting:
            time.sleep(0.5)
    if waiting:
        behind = ", ".join(f"{p.key} {_consumed(p):.0f}/{p.acked}" for p in waiting)
        raise RuntimeError(f"not consumed in time: {behind}")
    return time.monotonic() - started


@dataclass
class RunResult:
    cpu: dict[str, dict[str, float]]  # peer -> role -> CPU-s per 1M live samples
    marginal: dict[str, dict[str, float]]  # the same, less the idle rate over the window
    idle: dict[str, dict[str, float]]  # peer -> role -> CPU-s per second without traffic
    rss: dict[str, dict[str, float]]  # peer -> role -> KB per series
    kafka_bytes_per_sample: dict[str, float]
    live_samples: int
    window_s: float
    notes: list[str]


def one_run(ctx: BenchContext, stream: Stream, shape: tuple[int, int, int], run: int, rule_files: list[str],
            rule_file: Path, history_scrapes: int, idle_s: float) -> RunResult:
    n_series, n_samples, live_scrapes = shape
    run_dir = ctx.tmp / f"peers-{n_series}x{n_samples}-{run}"
    peers_ctl = Peers(run_dir, rule_files, rule_file)
    try:
        t = time.monotonic()
        peers = peers_ctl.start()
        ctx.log(f"peers {n_series}x{n_samples} run {run + 1}: all up in {time.monotonic() - t:.0f}s")
        # History: stamped in the past, ending about now, sent as fast as taken.
        history = plan_requests(stream.offsets, SHARDS, n_series, n_samples, 0, history_scrapes)
        history_base = (int(time.time() * 1000) // SCRAPE_MS - history_scrapes) * SCRAPE_MS
        bodies = [stream.body(r, history_base) for r in history]
        t = time.monotonic()
        asyncio.run(play(peers, history, bodies, history_base, live=False))
        waited = wait_consumed(peers, CAUGHT_UP_TIMEOUT_S)
        ctx.log(f"peers: history of {history_scrapes} scrapes ({sum(r.samples for r in history):,} samples) sent in "
                f"{time.monotonic() - t - waited:.1f}s, consumed by the workers {waited:.1f}s later; requests sent "
                f"again after a 503: {', '.join(f'{p.key} {p.retried}' for p in peers)}")
        for peer in peers:
            if peer.failures:
                raise RuntimeError(f"{peer.key} refused history requests: {peer.failures}")
            peer.sent = peer.acked = 0
            peer.latencies.clear()
        # Live: scrape k of the window is stamped base + k * 15 s + offset; k counts on from the history.
        live = plan_requests(stream.offsets, SHARDS, n_series, n_samples, history_scrapes, live_scrapes)
        window_start_ms = math.ceil((time.time() * 1000 + 3000) / SCRAPE_MS) * SCRAPE_MS
        base_ms = window_start_ms - history_scrapes * SCRAPE_MS
        bodies = [stream.body(r, base_ms) for r in live]
        time.sleep(max(0.0, window_start_ms / 1000 - time.time()))
        before = {p.key: {role: cpu_seconds(pid) for role, pid in p.pids.items()} for p in peers}
        snapshots_before = {p.key: _snapshots(p) for p in peers if p.worker_metrics}
        t0 = time.monotonic()
        # A long run also reads CPU halfway: its second half is the cost once the models have warmed up.
        half_ms = live[len(live) // 2].due_ms if LONG else None
        first = [i for i, r in enumerate(live) if half_ms is None or r.due_ms < half_ms]
        asyncio.run(play(peers, [live[i] for i in first], [bodies[i] for i in first], base_ms, live=True))
        halfway = {p.key: {role: cpu_seconds(pid) for role, pid in p.pids.items()} for p in peers}
        rest = [i for i, r in enumerate(live) if half_ms is not None and r.due_ms >= half_ms]
        if rest:
            asyncio.run(play(peers, [live[i] for i in rest], [bodies[i] for i in rest], base_ms, live=True))
        time.sleep(SETTLE_S)
        extra = wait_consumed(peers, CAUGHT_UP_TIMEOUT_S)
        after = {p.key: {role: cpu_seconds(pid) for role, pid in p.pids.items()} for p in peers}
        snapshots_after = {p.key: _snapshots(p) for p in peers if p.worker_metrics}
        window = time.monotonic() - t0
        # Idle, after the live window (the history burst's aftermath, flushes and GC, would inflate it before):
        # what each system spends per second without traffic (timers, housekeeping, wall-clock rules).
        t = time.monotonic()
        time.sleep(idle_s)
        idle_s = time.monotonic() - t
        idle = {p.key: {role: (cpu_seconds(pid) - after[p.key][role]) / idle_s for role, pid in p.pids.items()}
                for p in peers}
        notes = []
        if extra > 1:
            notes.append(f"window extended {extra:.1f}s until the Headroom workers consumed everything")
        live_samples = sum(r.samples for r in live)
        cpu, marginal, rss, kafka = {}, {}, {}, {}
        for p in peers:
            if p.failures or p.acked != live_samples:
                raise RuntimeError(f"{p.key}: {p.acked}/{live_samples} samples accepted; failures {p.failures}")
            used = {role: after[p.key][role] - before[p.key][role] for role in p.pids}
            cpu[p.key] = {role: used[role] / live_samples * 1e6 for role in p.pids}
            marginal[p.key] = {role: (used[role] - idle[p.key][role] * window) / live_samples * 1e6 for role in p.pids}
            rss[p.key] = {role: rss_bytes(pid) / 1024 / stream.series for role, pid in p.pids.items()}
            if p.broker is not None:
                accepted = live_samples + sum(r.samples for r in history)
                kafka[p.key] = sum(topic_bytes(p.broker.log_dir, topic) for topic in p.samples_topics) / accepted
            lat = sorted(p.latencies)
            notes.append(f"{p.key}: request p50 {1000 * lat[len(lat) // 2]:.0f} ms, max {1000 * lat[-1]:.0f} ms")
            if p.worker_metrics:  # the worker's fixed cost per message weighs with few samples per message
                counts = scrape(p.worker_metrics + "?name[]=headroom_worker_samples_total"
                                "&name[]=headroom_worker_batches_total&name[]=headroom_worker_folds_total") or {}
                messages = counts.get("headroom_worker_batches_total", 0.0)
                if messages:
                    samples = counts.get("headroom_worker_samples_total", 0.0)
                    folds = counts.get("headroom_worker_folds_total", 0.0) or messages
                    notes.append(f"{p.key}: {samples / messages:.0f} samples per message, {samples / folds:.0f} per fold "
                                 f"({messages:.0f} messages, history included)")
                # Snapshots come at most every 5 min per partition at this rate (pipelines/snapshot_schedule.py):
                # whether the window holds some or none moves the worker's figure, so say which.
                (n0, c0), (n1, c1) = snapshots_before[p.key], snapshots_after[p.key]
                notes.append(f"{p.key}: {n1 - n0:.0f} snapshots in the window ({c1 - c0:.2f} CPU-s, "
                             f"{(c1 - c0) / live_samples * 1e6:.2f} CPU-s/1M samples); {n1:.0f} in the run, {c1:.2f} CPU-s")
        if rest:
            second = sum(live[i].samples for i in rest)
            spent = {p.key: sum(after[p.key][role] - halfway[p.key][role] for role in p.pids) / second * 1e6
                     for p in peers}
            notes.append("second half of the live window, CPU-s per 1M samples: " + ", ".join(
                f"{key} {value:.2f} ({value / spent['prometheus']:.2f}x)" for key, value in spent.items()))
        return RunResult(cpu, marginal, idle, rss, kafka, live_samples, window, notes)
    finally:
        peers_ctl.stop()


# --------------------------------------------------------------------------- tables

LABELS = {
    "prometheus": "Prometheus 2.42: remote-write receiver + runbook rules",
    "victoriametrics": "VictoriaMetrics 1.79 + vmalert",
    "headroom-rules": "Headroom rules only (scores, forecasts off)",
    "headroom-defaults": "Headroom defaults",
}


def _record(table: Table, result: RunResult) -> None:
    total = {key: sum(roles.values()) for key, roles in result.cpu.items()}
    for key, roles in result.cpu.items():
        parts = " + ".join(roles)
        table.row(f"{LABELS[key]}: CPU ({parts})", CPU_UNIT, baseline=key == "prometheus",
                  lower_is_better=True).add(total[key])
        if len(roles) > 1:
            for role, value in roles.items():
                table.row(f"  {key}: {role}", CPU_UNIT, lower_is_better=True).add(value)
    vm = total["victoriametrics"]
    for key in ("headroom-rules", "headroom-defaults"):
        table.row(f"{key} CPU / VictoriaMetrics + vmalert CPU", "x", ratio=False,
                  lower_is_better=True).add(total[key] / vm)
    for key, roles in result.marginal.items():
        table.row(f"{key}: CPU less its idle rate ({' + '.join(roles)})", MARGINAL_UNIT, baseline=key == "prometheus",
                  lower_is_better=True, note="the per-sample part: window CPU - idle CPU/s x window" if
                  key == "prometheus" else "").add(sum(roles.values()))
        if len(roles) > 1:
            for role, value in roles.items():
                table.row(f"  {key}: {role}, less idle", MARGINAL_UNIT, lower_is_better=True).add(value)
    for key, roles in result.idle.items():
        table.row(f"{key}: idle CPU, no traffic ({' + '.join(roles)})", IDLE_UNIT, ratio=False,
                  lower_is_better=True).add(1000 * sum(roles.values()))
    for key, roles in result.rss.items():
        table.row(f"{LABELS[key]}: RSS ({' + '.join(roles)})", MEM_UNIT, baseline=key == "prometheus",
                  lower_is_better=True).add(sum(roles.values()))
        if len(roles) > 1:
            for role, value in roles.items():
                table.row(f"  {key}: {role} RSS", MEM_UNIT, lower_is_better=True).add(value)
    for key, value in result.kafka_bytes_per_sample.items():
        table.row(f"{key}: samples topics on disk", "bytes/sample", ratio=False, lower_is_better=True).add(value)


def run(ctx: BenchContext) -> list[Table]:
    rule_files, rules_note = runbook_rules(ctx.tmp)
    from detector.rules.files import resolve_rule_file

    rule_file = resolve_rule_file(rule_files[0])
    wl = runbook_fleet(SERIES)
    stream = Stream(wl, SERIES)
    shapes = QUICK_SHAPES if ctx.quick else SHAPES
    history_scrapes = QUICK_HISTORY_SCRAPES if ctx.quick else HISTORY_SCRAPES
    ctx.log(f"peers: {SERIES} series of the runbook fleet, {len(set(wl.target[:SERIES]))} targets, one scrape per "
            f"{SCRAPE_MS // 1000}s played live over {SHARDS} shard connections per system; {rules_note}")
    tables = []
    for shape in shapes:
        n_series, n_samples, live_scrapes = shape
        table = Table(
            f"peers: {SERIES:,} series, {n_series} series x {n_samples} sample(s) per request, {SHARDS} shards, "
            f"live at one sample per series per {SCRAPE_MS // 1000}s, the runbook's 7 rules every 15s",
            f"per run: {live_scrapes} live scrapes ({live_scrapes * SERIES:,} samples, "
            f"{live_scrapes * SCRAPE_MS // 1000}s) after {history_scrapes} scrapes of history; CPU = utime+stime from "
            f"/proc over the window (idle work included) per 1M live samples; RSS at the end / series; "
            f"x baseline = median of per-run ratios to Prometheus in the same run",
        )
        for i in range(ctx.runs):
            result = one_run(ctx, stream, shape, i, rule_files, rule_file, history_scrapes,
                             QUICK_IDLE_S if ctx.quick else IDLE_S)
            _record(table, result)
            summary = ", ".join(f"{key} {sum(roles.values()):.1f}" for key, roles in result.cpu.items())
            ctx.log(f"peers {n_series}x{n_samples} run {i + 1}/{ctx.runs}: window {result.window_s:.0f}s, "
                    f"CPU-s per 1M samples: {summary}; " + "; ".join(result.notes))
            ctx.log("peers raw: " + json.dumps({"cpu": result.cpu, "marginal": result.marginal, "idle": result.idle,
                                                "rss_kb_per_series": result.rss,
                                                "kafka_bytes_per_sample": result.kafka_bytes_per_sample}))
        tables.append(table)
    return tables
