"""Scale-out of cross-target rules (issue 13): ``python -m bench.run stages`` or ``python -m bench.stages``.

Runs Headroom's own Kubernetes rule set (``tests/rulesets/kubernetes.yml``)
over a simulated cluster of about 10k series (node-exporter, cAdvisor,
kube-state-metrics in shards, three API servers, application pods; a scrape
every 15 s) and reports:

* the share of rules in each class of :mod:`detector.stages.plan`;
* the busiest partition's share of what each stage receives (stage 1:
  samples; stage 2: partial rows and frame bytes, a second-level partition
  counted with the first-level partition of the same number, as they would
  share a worker), 16 partitions each;
* for 1, 2 and 4 simulated workers (a worker owns every W-th partition of
  both stages), the busiest worker's share of stage-1 samples and of stage-2
  rows against the fair share 1/W, next to today's placement, where one
  worker also runs the global lane and receives every series the global
  groups select;
* CPU seconds of the staged engine (1 + 1, 4 + 4 and 16 + 16 partitions, in
  one process, frames encoded and decoded) against one engine over all
  series, same data, and the alert transitions of both.

The staged figures come twice, for series partitioned by family (every label
but ``__name__``, ``le``, ``quantile``: the default with staged rules) and by
scrape target (``job``, ``instance``), alternating which goes first per run.
"""

from __future__ import annotations

import random
import time
import zlib
import numpy as np

from bench.common import REPO, Table
from detector.labels import BY_SERIES_FAMILY, DEFAULT_PARTITION_BY, labels_from_canonical, partition_for
from detector.rules import load_rule_files
from detector.rules.engine import RuleEngine
from detector.rules.placement import place_groups
from detector.stages.engine import StagedEngine
from detector.stages.plan import CLASSES, StagePlan
from detector.wire.batch import SampleBatch

RULES = REPO / "tests" / "rulesets" / "kubernetes.yml"
PARTITIONS = 16
SCRAPE_MS = 15_000


def kubernetes_fleet(nodes: int = 40, pods_per_node: int = 12, steps: int = 24, seed: int = 0) -> tuple[list[SampleBatch], int]:
    """Scrape rounds of a simulated cluster: one batch per round, every series once; and the series count."""
    rng = random.Random(seed)
    namespaces = [f"ns{i}" for i in range(12)]
    services = [f"svc{i}" for i in range(20)]
    series: list[tuple[tuple, str]] = []  # (labels, kind): kind is "counter" or a gauge range

    def add(kind: str, **labels: str) -> None:
        series.append((tuple(sorted(labels.items())), kind))

    ksm = lambda pod: f"ksm-{zlib.crc32(pod.encode()) % 4}:8080"  # noqa: E731 - kube-state-metrics runs 4 shards
    for n in range(nodes):
        node, exporter, kubelet = f"node-{n}", f"node-{n}:9100", f"node-{n}:10250"
        for inst, job in ((exporter, "node"), (kubelet, "cadvisor")):
            add("up", __name__="up", job=job, instance=inst)
        for cpu in range(4):
            for mode in ("idle", "user", "system"):
                add("counter", __name__="node_cpu_seconds_total", job="node", instance=exporter, cpu=str(cpu), mode=mode)
        add("gauge", __name__="node_memory_MemAvailable_bytes", job="node", instance=exporter)
        add("big", __name__="node_memory_MemTotal_bytes", job="node", instance=exporter)
        for mount in ("/", "/var"):
            add("gauge", __name__="node_filesystem_avail_bytes", job="node", instance=exporter, mountpoint=mount)
            add("big", __name__="node_filesystem_size_bytes", job="node", instance=exporter, mountpoint=mount)
            add("zero", __name__="node_filesystem_readonly", job="node", instance=exporter, mountpoint=mount)
        add("gauge", __name__="kube_node_status_allocatable", job="kube-state-metrics", instance=ksm(node), node=node, resource="cpu")
        add("up", __name__="kube_node_status_condition", job="kube-state-metrics", instance=ksm(node), node=node, condition="Ready", status="true")
        for p in range(pods_per_node):
            ns, pod = namespaces[(n * 7 + p) % len(namespaces)], f"pod-{n}-{p}"
            add("gauge", __name__="kube_pod_info", job="kube-state-metrics", instance=ksm(pod), namespace=ns, pod=pod, node=node)
            for c in ("app", "sidecar"):
                cadvisor = {"job": "cadvisor", "instance": kubelet, "namespace": ns, "pod": pod, "container": c, "image": f"{c}:1"}
                add("counter", __name__="container_cpu_usage_seconds_total", **cadvisor)
                add("gauge", __name__="container_memory_working_set_bytes", **cadvisor)
                state = {"job": "kube-state-metrics", "instance": ksm(pod), "namespace": ns, "pod": pod, "container": c}
                add("big", __name__="kube_pod_container_resource_limits", resource="memory", **state)
                add("gauge", __name__="kube_pod_container_resource_requests", resource="cpu", **state)
                add("counter", __name__="kube_pod_container_status_restarts_total", **state)
                add("zero", __name__="kube_pod_container_status_waiting_reason", reason="CrashLoopBackOff", **state)
    for d in range(60):
        state = {"job": "kube-state-metrics", "instance": ksm(f"d{d}"), "namespace": namespaces[d % 12], "deployment": f"d{d}"}
        add("gauge", __name__="kube_deployment_spec_replicas", **state)
        add("gauge", __name__="kube_deployment_status_replicas_available", **state)
    for ns in namespaces:
        for kind in ("used", "hard"):
            add("big" if kind == "hard" else "gauge", __name__="kube_resourcequota", job="kube-state-metrics",
                instance=ksm(ns), namespace=ns, resource="pods", type=kind)
    for a in range(3):
        inst = f"10.0.0.{a}:6443"
        add("up", __name__="up", job="apiserver", instance=inst)
        add("gauge", __name__="kubernetes_build_info", job="apiserver", instance=inst, git_version="v1.30.2")
        for verb in ("GET", "LIST", "WATCH", "POST", "PUT"):
            for code in ("200", "201", "404", "500"):
                add("counter", __name__="apiserver_request_total", job="apiserver", instance=inst, verb=verb, code=code)
            for resource in ("pods", "nodes", "services", "configmaps"):
                for le in ("0.05", "0.1", "0.5", "1", "5", "+Inf"):
                    add("counter", __name__="apiserver_request_duration_seconds_bucket", job="apiserver", instance=inst,
                        verb=verb, resource=resource, le=le)
    for i in range(240):
        inst, svc = f"10.1.{i // 250}.{i % 250}:8080", services[i % len(services)]
        add("up", __name__="up", job="app", instance=inst, service=svc)
        add("counter", __name__="process_cpu_seconds_total", job="app", instance=inst, service=svc)
        for code in ("200", "500"):
            add("counter", __name__="http_requests_total", job="app", instance=inst, service=svc, code=code)
        for le in ("0.05", "0.1", "0.5", "1", "+Inf"):
            add("counter", __name__="http_request_duration_seconds_bucket", job="app", instance=inst, service=svc, le=le)
    totals = [0.0] * len(series)
    batches = []
    for step in range(steps):
        t = step * SCRAPE_MS
        rows = []
        for i, (labels, kind) in enumerate(series):
            if kind == "counter":
                totals[i] += rng.randrange(0, 50)
                value = totals[i]
            elif kind == "up":
                value = 0.0 if rng.random() < 0.01 else 1.0
            elif kind == "zero":
                value = 0.0
            elif kind == "big":
                value = 1e9
            else:
                value = float(rng.randrange(0, 10**6))
            rows.append((labels, [(t + rng.randrange(0, 2000), value)]))
        batches.append(SampleBatch.from_series(rows))
    return batches, len(series)


def busiest_share(per_partition: np.ndarray, workers: int) -> float:
    """The busiest worker's share of the total, when worker w owns partitions w, w + W, w + 2W..."""
    per_worker = [per_partition[w::workers].sum() for w in range(workers)]
    total = per_partition.sum()
    return float(max(per_worker) / total) if total else 0.0


def today_load(groups, batches: list[SampleBatch]) -> np.ndarray:
    """Samples per partition with today's placement; the last entry is the global lane."""
    placement = place_groups(groups)
    per_partition = np.zeros(PARTITIONS + 1, dtype=np.int64)
    for key in batches[0].series_keys:  # every round scrapes the same series
        labels = labels_from_canonical(key)
        per_partition[partition_for(labels, PARTITIONS)] += len(batches)
        if placement.feeds_global_lane(labels):
            per_partition[PARTITIONS] += len(batches)
    return per_partition


def today_shares(per_partition: np.ndarray, workers: int) -> float:
    """Busiest worker's share of samples with today's placement (the global lane on worker 0)."""
    per_worker = [per_partition[w:PARTITIONS:workers].sum() for w in range(workers)]
    per_worker[0] += per_partition[PARTITIONS]
    return float(max(per_worker) / sum(per_worker))


# The staged engine's partitionings: by series family is what HEADROOM_STAGED_RULES uses unless
# HEADROOM_PARTITION_BY says otherwise; by target is the placement's (and was the stages' until 2026-12-06).
PARTITIONINGS = {"by family": BY_SERIES_FAMILY, "by target": DEFAULT_PARTITION_BY}


def measure_staged(groups, batches: list[SampleBatch], partition_by: tuple[str, ...]) -> dict:
    """The staged engine's figures for one partitioning: plan classes, load per partition and worker, CPU."""
    plan = StagePlan(groups, partition_by)
    classes = plan.rule_classes()
    n_rules = sum(classes.values())
    cpu, alerts = {}, 0
    for count in (1, 4, PARTITIONS):
        staged = StagedEngine(groups, partitions=count, combiners=count, partition_by=partition_by)
        started = time.process_time()
        alerts = sum(len(staged.ingest(b).transitions) for b in batches)
        cpu[count] = time.process_time() - started
    samples = staged.load.samples.astype(np.float64)
    rows = staged.partial_rows().astype(np.float64)
    frame_bytes = staged.load.frame_bytes.astype(np.float64)
    return {
        "rules": n_rules,
        "classes": {c: classes.get(c, 0) / n_rules for c in CLASSES},
        "alerts": alerts,
        "stage1_busiest": float(samples.max() / samples.sum()),
        "stage2_rows_busiest": float(rows.max() / rows.sum()),
        "stage2_bytes_busiest": float(frame_bytes.max() / frame_bytes.sum()),
        "rows_per_sample": float(rows.sum() / samples.sum()),
        "bytes_per_sample": float(frame_bytes.sum() / samples.sum()),
        "global_samples": staged.load.global_samples,
        "workers": {w: {"stage1": busiest_share(samples, w), "stage2": busiest_share(rows, w)} for w in (1, 2, 4)},
        "cpu": cpu,
    }


def measure(steps: int, log=print, order: tuple[str, ...] = tuple(PARTITIONINGS)) -> dict:
    """One engine over all series, then the staged engine with each partitioning in ``order``."""
    groups = load_rule_files([str(RULES)])
    batches, n_series = kubernetes_fleet(steps=steps)
    log(f"stages: {n_series} series, {steps} scrapes")
    single = RuleEngine(groups)
    started = time.process_time()
    single_alerts = sum(len(single.ingest(b).transitions) for b in batches)
    single_cpu = time.process_time() - started
    out = {"series": n_series, "single_alerts": single_alerts, "single_cpu": single_cpu, "staged": {}}
    for name in order:
        out["staged"][name] = measure_staged(groups, batches, PARTITIONINGS[name])
    today = today_load(groups, batches)
    out["today_lane"] = float(today[PARTITIONS] / today.sum())
    out["today"] = {w: today_shares(today, w) for w in (1, 2, 4)}
    return out


def run(ctx) -> list[Table]:
    steps = 12 if ctx.quick else 24
    classes = Table("Stages: rules by class (tests/rulesets/kubernetes.yml)",
                    "share of the rule set's rules; still-global: evaluated in one place on raw samples")
    load = Table("Stages: busiest partition / worker, share of the total (fair share = 1/partitions or 1/workers)",
                 f"{PARTITIONS} stage-1 and {PARTITIONS} combine partitions, simulated cluster; today = placement's "
                 "global lane; by family: series partitioned by their labels but __name__/le/quantile (the default "
                 "with staged rules), by target: by (job, instance)")
    cpu = Table("Stages: CPU of the staged engine in one process against one engine over all series",
                "alert transitions: one engine's count, and the staged engine's (16 + 16) for each partitioning")
    for run_index in range(ctx.runs):
        # Alternate which partitioning runs first: the machine's load drifts within a run.
        order = tuple(PARTITIONINGS) if run_index % 2 == 0 else tuple(reversed(PARTITIONINGS))
        m = measure(steps, ctx.log, order)
        cpu.row("one engine over all series", "CPU-s", baseline=True).add(m["single_cpu"])
        cpu.row("alert transitions, one engine", "transitions", ratio=False).add(m["single_alerts"])
        for name in PARTITIONINGS:
            st = m["staged"][name]
            for c in CLASSES:
                classes.row(f"{c}, {name}", "%", ratio=False).add(100 * st["classes"][c])
            load.row(f"{name}: stage 1: samples, busiest of {PARTITIONS} partitions", "%", ratio=False,
                     target=200 / PARTITIONS, lower_is_better=True,
                     note=f"fair share {100 / PARTITIONS:.2f}%").add(100 * st["stage1_busiest"])
            load.row(f"{name}: stage 2: partial rows, busiest of {PARTITIONS} partitions", "%", ratio=False,
                     target=200 / PARTITIONS, lower_is_better=True,
                     note=f"{st['rows_per_sample']:.3f} rows, {st['bytes_per_sample']:.1f} frame bytes per stage-1 sample"
                     ).add(100 * st["stage2_rows_busiest"])
            load.row(f"{name}: stage 2: frame bytes, busiest of {PARTITIONS} partitions", "%", ratio=False,
                     target=200 / PARTITIONS, lower_is_better=True).add(100 * st["stage2_bytes_busiest"])
            load.row(f"{name}: partial rows per stage-1 sample", "rows", ratio=False).add(st["rows_per_sample"])
            for w, shares in st["workers"].items():
                fair = 100 / w
                load.row(f"{name}: {w} worker(s): stage-1 samples, busiest worker", "%", ratio=False, target=2 * fair,
                         lower_is_better=True, note=f"fair {fair:.0f}%").add(100 * shares["stage1"])
                load.row(f"{name}: {w} worker(s): stage-2 rows, busiest worker", "%", ratio=False, target=2 * fair,
                         lower_is_better=True).add(100 * shares["stage2"])
            for count, seconds in st["cpu"].items():
                cpu.row(f"staged engine {name}, {count} + {count} partitions in one process", "CPU-s",
                        note="frames encoded and decoded").add(seconds)
            cpu.row(f"alert transitions, staged {name}", "transitions", ratio=False).add(st["alerts"])
            if st["alerts"] != m["single_alerts"]:
                ctx.log(f"stages: staged {name} gave {st['alerts']} alert transitions, one engine {m['single_alerts']}")
        load.row("today: the global lane (one partition), share of all samples", "%", ratio=False,
                 note="the lane gets a copy of every series a global group selects").add(100 * m["today_lane"])
        for w, share in m["today"].items():
            load.row(f"today: {w} worker(s), samples incl. the global lane, busiest worker", "%", ratio=False,
                     note="global lane on one worker").add(100 * share)
        ctx.log(f"stages run {run_index + 1}/{ctx.runs}: alerts single {m['single_alerts']}, staged "
                f"{ {k: v['alerts'] for k, v in m['staged'].items()} }; CPU single {m['single_cpu']:.2f} s, staged "
                f"{ {k: v['cpu'] for k, v in m['staged'].items()} }")
    return [classes, load, cpu]


def main() -> None:
    m = measure(24)
    print({k: v for k, v in m.items()})


if __name__ == "__main__":
    main()
