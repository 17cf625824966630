"""Synthetic but realistic series for the benches: the backpressure runbook's metrics, many instances.

A fleet of ``O`` tasker orchestration instances (10 PGMQ queues each) and ``W``
workers, sized to a target series count. Every series carries the usual
Kubernetes target labels (job, instance, namespace, pod, container, region)
plus its metric's own labels, ~8 in all, as a Prometheus scraping that fleet
would send. Values follow the runbook's shapes: counters climb, histograms
are cumulative classic buckets, gauges wobble below their alert threshold,
except a handful of "hot" series that keep one instance of each rule active
(as in a real fleet, a few alerts are always pending or firing).

Values are ``a + b * t_seconds + noise``: cheap to compute for 10k series per
step with numpy. Each scrape target has a fixed scrape offset inside the
interval, so a step's samples arrive spread over the interval, in time order.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from detector.wire.batch import SampleBatch
from detector.labels import Labels, canonical_bytes, labels_from_dict, partition_for
from detector.wire.remote_write import encode_write_request
from simulator.runbook import EVENT_TYPES, LATENCY_BUCKETS_MS, REJECTION_REASONS, WAIT_BUCKETS_MS

REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
NAMESPACES = ("orders", "payments", "notifications", "inventory", "shipping")
WORKER_CHANNELS = ("handler_dispatch", "completion", "domain_events")
ENDPOINTS = (("/v1/tasks", "POST", "201"), ("/v1/tasks/{task_uuid}", "GET", "200"))
QUEUES_PER_ORCHESTRATOR = 10
PER_ORCHESTRATOR = 46 + 4 * QUEUES_PER_ORCHESTRATOR  # series per orchestration instance
PER_WORKER = 33
INTERVAL_MS = 15_000
# Event time of step 0 (epoch-aligned to the interval), and the origin counters count from.
T0_MS = (1_700_000_000_000 // INTERVAL_MS) * INTERVAL_MS
COUNTER_ORIGIN_MS = T0_MS - 3_600_000


@dataclass
class Workload:
    labels: list[Labels] = field(default_factory=list)
    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)  # per second of event time
    noise: list[float] = field(default_factory=list)
    target: list[int] = field(default_factory=list)  # scrape target number
    interval_ms: int = INTERVAL_MS

    def add(self, target: int, labels: dict[str, str], a: float, b: float = 0.0, noise: float = 0.0) -> None:
        self.labels.append(labels_from_dict(labels))
        self.a.append(a)
        self.b.append(b)
        self.noise.append(noise)
        self.target.append(target)

    def freeze(self) -> Workload:
        self.a_ = np.asarray(self.a)
        self.b_ = np.asarray(self.b)
        self.noise_ = np.asarray(self.noise)
        self.keys = [canonical_bytes(labels) for labels in self.labels]
        # A fixed scrape offset per target, spread over the interval.
        targets = np.asarray(self.target)
        offsets = np.array([zlib.crc32(f"target-{t}".encode()) % self.interval_ms for t in range(targets.max() + 1)])
        self.offset_ms = offsets[targets].astype(np.int64)
        self.time_order = np.argsort(self.offset_ms, kind="stable")
        return self

    def __len__(self) -> int:
        return len(self.labels)

    def values_at(self, stamps_ms: np.ndarray, rng: np.random.Generator, rows: np.ndarray | None = None) -> np.ndarray:
        a, b, noise = (self.a_, self.b_, self.noise_) if rows is None else (self.a_[rows], self.b_[rows], self.noise_[rows])
        t_s = (stamps_ms - COUNTER_ORIGIN_MS) / 1000.0
        return a + b * t_s + noise * rng.standard_normal(len(a))

    def step(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every series' (timestamp, value) of scrape ``k``, in series order."""
        stamps = T0_MS + k * self.interval_ms + self.offset_ms
        return stamps, self.values_at(stamps, np.random.default_rng(k))

    def write_bodies(self, n_series: int, n_samples: int, count: int) -> list[bytes]:
        """``count`` remote-write bodies, each ``n_samples`` consecutive scrapes of the first ``n_series`` series."""
        bodies = []
        for j in range(count):
            columns = [self.step(j * n_samples + s) for s in range(n_samples)]
            stamps = np.stack([c[0][:n_series] for c in columns], axis=1).tolist()
            values = np.stack([c[1][:n_series] for c in columns], axis=1).tolist()
            bodies.append(encode_write_request(
                (self.labels[i], list(zip(stamps[i], values[i]))) for i in range(n_series)
            ))
        return bodies


@dataclass
class BatchPlan:
    """How one scrape's samples are cut into batches: per partition, in time order, at most ``max_samples`` each."""

    chunks: list[tuple[int, np.ndarray, list[bytes]]]  # (partition, series rows, their keys)

    @classmethod
    def make(cls, wl: Workload, partitions: int | None, max_samples: int) -> BatchPlan:
        if partitions is None:
            part = np.zeros(len(wl), dtype=np.int64)
        else:
            part = np.array([partition_for(labels, partitions) for labels in wl.labels])
        chunks = []
        for p in sorted(set(part.tolist())):
            rows = wl.time_order[part[wl.time_order] == p]
            for start in range(0, len(rows), max_samples):
                chunk = rows[start : start + max_samples]
                chunks.append((p, chunk, [wl.keys[i] for i in chunk]))
        # Interleave partitions by time, as batches would arrive.
        chunks.sort(key=lambda c: int(wl.offset_ms[c[1][0]]))
        return cls(chunks)

    def batches(self, wl: Workload, k: int) -> Iterator[tuple[int, SampleBatch]]:
        stamps, values = wl.step(k)
        for partition, rows, keys in self.chunks:
            yield partition, SampleBatch(keys, np.arange(len(rows), dtype=np.uint32), stamps[rows], values[rows])


def _cdf(le: float, median: float, sigma: float) -> float:
    if math.isinf(le):
        return 1.0
    return 0.5 * (1.0 + math.erf((math.log(le) - math.log(median)) / (sigma * math.sqrt(2.0))))


def _histogram(wl: Workload, target: int, name: str, common: dict[str, str], bounds, rate: float,
               median: float, sigma: float) -> None:
    for le in [*bounds, math.inf]:
        le_text = "+Inf" if math.isinf(le) else format(le, "g")
        wl.add(target, {**common, "__name__": f"{name}_bucket", "le": le_text}, 0.0, rate * _cdf(le, median, sigma))
    wl.add(target, {**common, "__name__": f"{name}_sum"}, 0.0, rate * median * math.exp(sigma**2 / 2))
    wl.add(target, {**common, "__name__": f"{name}_count"}, 0.0, rate)


def runbook_fleet(target_series: int = 10_000, *, hot: bool = True, seed: int = 0) -> Workload:
    """About ``target_series`` series of the runbook's metrics (exact count: ``len()``)."""
    rng = np.random.default_rng(seed)
    n_orch = max(1, round(target_series / 500))
    n_work = max(3, round((target_series - n_orch * PER_ORCHESTRATOR) / PER_WORKER))
    wl = Workload()
    for o in range(n_orch):
        common = {
            "job": "tasker-orchestration", "instance": f"10.1.{o // 250}.{o % 250 + 1}:9100", "namespace": "tasker",
            "pod": f"tasker-orchestration-7d9f8c{o % 10}b5-{zlib.crc32(str(o).encode()) % 100000:05d}",
            "container": "orchestration", "region": REGIONS[o % len(REGIONS)],
        }
        hot_o = hot and o < 3
        wl.add(o, {**common, "__name__": "api_circuit_breaker_state"}, 2.0 if hot_o and o == 0 else 0.0)
        for endpoint, method, ok in ENDPOINTS:
            for reason in REJECTION_REASONS:
                rate = 0.5 if hot_o and o == 0 and reason == "rate_limit" and method == "POST" else rng.uniform(0, 0.02)
                wl.add(o, {**common, "__name__": "api_requests_rejected_total", "endpoint": endpoint, "reason": reason},
                       rng.uniform(100, 1000), rate)
            for status in (ok, "429", "503", "400"):
                wl.add(o, {**common, "__name__": "api_requests_total", "endpoint": endpoint, "method": method,
                           "status_code": status}, rng.uniform(1e4, 1e5), rng.uniform(0.1, 30))
        saturation = 0.9 if hot_o and o == 1 else rng.uniform(0.3, 0.5)
        wl.add(o, {**common, "__name__": "orchestration_command_channel_saturation"}, saturation, 0, 0.01)
        wl.add(o, {**common, "__name__": "orchestration_command_channel_size"}, saturation * 5000, 0, 50)
        wl.add(o, {**common, "__name__": "mpsc_channel_saturation", "channel": "command_processor"}, saturation, 0, 0.01)
        for q in range(QUEUES_PER_ORCHESTRATOR):
            queue = {**common, "queue_name": f"{NAMESPACES[q % len(NAMESPACES)]}_{q}"}
            max_depth = (10_000, 5_000, 20_000)[q % 3]
            fill = 0.9 if hot_o and o == 2 and q == 0 else rng.uniform(0.05, 0.5)
            wl.add(o, {**queue, "__name__": "pgmq_queue_depth"}, fill * max_depth, 0, 0.005 * max_depth)
            wl.add(o, {**queue, "__name__": "pgmq_queue_max_depth"}, max_depth)
            for reason in ("queue_full", "database_error"):
                wl.add(o, {**queue, "__name__": "pgmq_enqueue_failures_total", "reason": reason}, rng.uniform(0, 50),
                       rng.uniform(0, 0.01))
        for endpoint, _, _ in ENDPOINTS:
            _histogram(wl, o, "api_request_latency_ms", {**common, "endpoint": endpoint}, LATENCY_BUCKETS_MS,
                       rng.uniform(5, 30), rng.uniform(10, 40), 0.9)
    for w in range(n_work):
        t = n_orch + w
        common = {
            "job": "tasker-worker", "instance": f"10.2.{w // 250}.{w % 250 + 1}:9100", "namespace": "tasker",
            "pod": f"tasker-worker-5c8d7f{w % 10}d9-{zlib.crc32(str(w).encode()) % 100000:05d}",
            "container": "worker", "region": REGIONS[w % len(REGIONS)], "worker_id": f"worker-{w}",
        }
        hot_w = hot and w < 3
        for n, ns in enumerate(NAMESPACES):
            rate = 0.5 if hot_w and w == 0 and n == 0 else rng.uniform(0, 0.01)
            wl.add(t, {**common, "__name__": "worker_claim_refusals_total", "namespace": ns}, rng.uniform(0, 100), rate)
        utilisation = rng.uniform(0.2, 0.5)
        wl.add(t, {**common, "__name__": "worker_handler_semaphore_permits_available"}, 10 * (1 - utilisation), 0, 0.5)
        wl.add(t, {**common, "__name__": "worker_handler_semaphore_permits_total"}, 10.0)
        median = 3000.0 if hot_w and w == 1 else rng.uniform(4, 12)
        _histogram(wl, t, "worker_handler_semaphore_wait_ms", common, WAIT_BUCKETS_MS, 20.0, median, 0.8)
        wl.add(t, {**common, "__name__": "worker_dispatch_channel_saturation"}, rng.uniform(0.1, 0.4), 0, 0.01)
        wl.add(t, {**common, "__name__": "worker_completion_channel_saturation"}, rng.uniform(0.1, 0.4), 0, 0.01)
        for channel in WORKER_CHANNELS:
            wl.add(t, {**common, "__name__": "mpsc_channel_saturation", "channel": channel}, rng.uniform(0.1, 0.4), 0, 0.01)
        for e, event in enumerate(EVENT_TYPES):
            wl.add(t, {**common, "__name__": "domain_events_dispatched_total", "event_type": event},
                   rng.uniform(1e3, 1e5), rng.uniform(0.3, 12))
            rate = 3.0 if hot_w and w == 2 and e == 0 else rng.uniform(0, 0.002)
            wl.add(t, {**common, "__name__": "domain_events_dropped_total", "event_type": event}, rng.uniform(0, 10), rate)
    return wl.freeze()


def describe(wl: Workload) -> str:
    n_labels = [len(labels) for labels in wl.labels]
    key_bytes = sum(len(k) for k in wl.keys) / len(wl)
    return (f"{len(wl)} series, {min(n_labels)}-{max(n_labels)} labels each (mean {np.mean(n_labels):.1f}, "
            f"{key_bytes:.0f} canonical label bytes)")
