"""Staged rules over real Kafka with 1, 2 and 4 worker processes (issue 13): ``python -m bench.run stages_kafka``.

Not in ``all`` (it starts a broker and up to four workers per run). Per worker
count W, with ``HEADROOM_STAGED_RULES=true``, 16 samples partitions and 16
combine partitions, Headroom's Kubernetes rule set
(``tests/rulesets/kubernetes.yml``) and the simulated cluster of
:mod:`bench.stages` (about 10k series, 24 scrape rounds, event time two hours
ago: a replay):

* the samples are produced straight to the samples topic, cut by partition as
  the receiver cuts them (and to the global lane what the stages cannot
  separate), so the figures are the workers', not the receiver's;
* W real ``pipelines.cli worker`` processes in one consumer group consume them;
  the bench waits until the workers together use under 5% of a core for 3 s;
* **stage 1**: samples and bytes through the busiest samples partition against
  the total (fair share 1/16);
* **stage 2**: partial rows and frame bytes through the busiest partials
  partition against the total, read back from the partials topic(s) (a
  second-level partition counted with the first-level one of the same number);
* **CPU per sample**: user + system CPU seconds of all W workers from the moment
  the samples are produced to the last half second with work (the 3 s of idling
  that end a run are not counted), over the samples produced, and the busiest
  worker's share. The workers' fixed cost while they work is counted; their idle
  rate, measured for 5 s before, is a row of its own (ms of CPU per second);
* **machine baseline**: right after each run, the same in-process job (the staged engine over the same fleet,
  no Kafka) in W processes at once, and CPU per sample against it: the machine's charge for W busy processes on
  its cores divides out, so that row compares worker counts (:func:`machine_baseline`);
* **rebalances during the run**: consumer-group generations the workers joined
  after the samples were produced (the bench waits until they all joined the
  same one before it starts), and the **partial rows** of the run (a run that
  evaluated anything twice, or not at all, has another count than the others).

Each is measured twice, series partitioned by family (the default with staged
rules) and by scrape target (``HEADROOM_PARTITION_BY=["job","instance"]``),
alternating which goes first, so the CPU of the two is compared under the same
load.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import numpy as np

from bench.common import REPO, BenchContext, Table, WorkerProcess, scrape
from bench.stages import RULES, kubernetes_fleet

PARTITIONS = 16
WORKERS = (1, 2, 4)
# HEADROOM_BENCH_STAGES_WORKERS=2: only these worker counts (comma-separated). HEADROOM_BENCH_STAGES_PIN=0:
# every worker pinned to these CPUs (sched_setaffinity), to see what sharing a core costs a worker.
if os.environ.get("HEADROOM_BENCH_STAGES_WORKERS"):
    WORKERS = tuple(int(w) for w in os.environ["HEADROOM_BENCH_STAGES_WORKERS"].split(","))
PIN = {int(c) for c in os.environ.get("HEADROOM_BENCH_STAGES_PIN", "").split(",") if c}
# HEADROOM_BENCH_STAGES_PROFILE=DIR: every worker runs under cProfile, stats to DIR/<app id>-w<i>.prof (the
# call counts are exact: summed over the workers, they say which units of work multiply with more workers).
PROFILE = os.environ.get("HEADROOM_BENCH_STAGES_PROFILE")
# HEADROOM_BENCH_STAGES_PYSPY=DIR: py-spy samples each worker's CPU while the run works (the work window only, not
# start-up or shutdown), collapsed stacks to DIR/<app id>-w<i>.txt. py-spy is not a project dependency: pip install it.
PYSPY = os.environ.get("HEADROOM_BENCH_STAGES_PYSPY")
# Partitionings compared: None leaves HEADROOM_PARTITION_BY unset (by series family with staged rules).
PARTITIONINGS: dict[str, tuple[str, ...] | None] = {"by family": None, "by target": ("job", "instance")}


# Worker counters summed over the workers after each run (history included: every run has fresh workers).
COUNTERS = ("headroom_worker_batches_total", "headroom_worker_folds_total", "headroom_partial_frames_total",
            "headroom_snapshots_total", "headroom_worker_fold_cpu_seconds_total", "headroom_snapshot_cpu_seconds_total")
IDLE_S = 5.0  # how long each worker's idle CPU is measured before the samples are produced
_GENERATION = re.compile(r"Joined group '[^']*' \(generation (\d+)\)")


def _generation(proc: WorkerProcess) -> int:
    """The last consumer-group generation a worker joined (its log); each rebalance makes a new one."""
    found = _GENERATION.findall(proc.log_file.read_text(errors="replace")) if proc.log_file.exists() else []
    return int(found[-1]) if found else 0


def machine_baseline(processes: int, steps: int) -> float:
    """Mean CPU seconds of ``processes`` processes running at once, each the same in-process job: the staged
    engine (16 + 16 partitions, no Kafka) over the bench's fleet. Measured beside each worker count, it says
    what this machine charges for the same work when that many processes share its cores (2 cores: all
    of them busy make each CPU-second do less, 13-20% at 4 processes on 2026-12-07), which is not Headroom's doing.
    """
    import subprocess
    import sys

    jobs = [subprocess.Popen([sys.executable, "-m", "bench.stages_kafka", "--baseline", str(steps)], cwd=str(REPO),
                             stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return float(np.mean([float(job.communicate(timeout=600)[0].split()[-1]) for job in jobs]))


def _baseline_job(steps: int) -> float:
    """CPU seconds of the staged engine's ingest of the fleet, in this process (see machine_baseline)."""
    from detector.labels import BY_SERIES_FAMILY
    from detector.rules import load_rule_files
    from detector.stages.engine import StagedEngine

    groups = load_rule_files([str(RULES)])
    batches, _ = kubernetes_fleet(nodes=40, pods_per_node=12, steps=steps)
    staged = StagedEngine(groups, partitions=PARTITIONS, combiners=PARTITIONS, partition_by=BY_SERIES_FAMILY)
    started = time.process_time()
    for batch in batches:
        staged.ingest(batch)
    return time.process_time() - started


def _spy(pid: int, out: Path):
    """A py-spy recording of one process's stacks, 200 a second, until it is sent SIGINT. With more processes than
    cores its shares mislead: a process waiting for a core is sampled as busy (see bench/README.md, stages_kafka)."""
    import subprocess
    import sys

    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--format", "raw",
                             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cpu_seconds(pid: int, system_only: bool = False) -> float:
    """User + system CPU seconds of a process and its waited-for children (/proc/<pid>/stat); or system only."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = int(fields[12]) + int(fields[14]) if system_only else sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


async def _produce(bootstrap: str, records: list[tuple[str, int, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024, linger_ms=5)
    await producer.start()
    try:
        for topic, partition, value in records:
            await producer.send(topic, value, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


async def _read_topic(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    """Every record of a topic (partition, value), read to its current end."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=16 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]  # the workers create both levels with 16
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[int, bytes]] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out += [(tp.partition, r.value) for r in records]
        return out
    finally:
        await consumer.stop()


def _records(settings, batches) -> tuple[list[tuple[str, int, bytes]], np.ndarray, np.ndarray, int]:
    """Messages cut as the receiver cuts them; samples and bytes per samples partition; samples to the global lane."""
    from detector.labels import labels_from_canonical, partition_for
    from detector.rules import load_rule_files
    from detector.stages.engine import _take
    from pipelines.stages import StagedRules

    groups = load_rule_files([str(RULES)])
    placement = StagedRules(settings, groups).placement()
    records, samples, sizes, global_samples = [], np.zeros(PARTITIONS, np.int64), np.zeros(PARTITIONS, np.int64), 0
    dest_of: dict[bytes, int] = {}
    global_of: dict[bytes, bool] = {}
    for batch in batches:
        for key in batch.series_keys:
            if key not in dest_of:
                labels = labels_from_canonical(key)
                dest_of[key] = partition_for(labels, PARTITIONS, settings.series_partition_by)
                global_of[key] = placement.feeds_global_lane(labels)
        dest = np.fromiter((dest_of[k] for k in batch.series_keys), np.int64, len(batch.series_keys))
        for p in range(PARTITIONS):
            part = _take(batch, dest == p)
            if part is not None:
                data = part.encode()
                records.append((settings.samples_topic, p, data))
                samples[p] += len(part)
                sizes[p] += len(data)
        wanted = _take(batch, np.fromiter((global_of[k] for k in batch.series_keys), bool, len(batch.series_keys)))
        if wanted is not None:
            records.append((settings.global_samples_topic, 0, wanted.encode()))
            global_samples += len(wanted)
    return records, samples, sizes, global_samples


def _one_run(ctx: BenchContext, workers: int, run: int, batches, partition_by: tuple[str, ...] | None = None) -> dict:
    import json

    from detector.stages.frames import decode_frame
    from pipelines.settings import Settings

    bootstrap = ctx.broker().bootstrap
    app_id = f"bench-stages-{workers}w-{run}-{'f' if partition_by is None else 't'}-{os.getpid()}"
    env = {"HEADROOM_STAGED_RULES": "true", "HEADROOM_COMBINE_PARTITIONS": str(PARTITIONS),
           "HEADROOM_GLOBAL_SAMPLES_TOPIC": f"{app_id}-global",
           "HEADROOM_METADATA_TOPIC": f"{app_id}-metadata", "HEADROOM_SCORES_TOPIC": f"{app_id}-scores",
           "HEADROOM_FORECASTS_TOPIC": f"{app_id}-forecasts", "HEADROOM_ANOMALY_SCORES": "false",
           "HEADROOM_FORECASTS": "false", "HEADROOM_SNAPSHOT_INTERVAL": "1h",
           # A replay: a partition assigned more than HEADROOM_IDLE_ADVANCE (30 s) before its first sample
           # (workers start one by one, a loaded machine) would follow the wall clock and take the whole
           # replay as late (runs with no partials at all, 2026-12-06); the bench measures the stages, not that.
           "HEADROOM_IDLE_ADVANCE": "10m",
           # One producer sends it all at once: no sender shard to wait for. With the 10 s start-up wait
           # (detector.completeness) the workers sat idle before evaluating, and the bench took them for done.
           "HEADROOM_START_WAIT": "0s"}
    if partition_by is not None:
        env["HEADROOM_PARTITION_BY"] = json.dumps(list(partition_by))
    settings = Settings(app_id=app_id, staged_rules=True, partitions=PARTITIONS, combine_partitions=PARTITIONS,
                        samples_topic=f"{app_id}-samples", global_samples_topic=f"{app_id}-global",
                        partition_by=partition_by)  # partials: <app_id>-partials
    records, samples, sizes, global_samples = _records(settings, batches)
    procs = [WorkerProcess(bootstrap, ctx.tmp / app_id / f"w{i}", app_id=app_id, samples_topic=settings.samples_topic,
                           rule_files=[str(RULES)], partitions=PARTITIONS, extra_env=env,
                           profile_to=Path(PROFILE) / f"{app_id}-w{i}.prof" if PROFILE else None)
             for i in range(workers)]
    try:
        for proc in procs:
            proc.start(timeout=120)
            if PIN:  # every thread the worker has by now; threads started later inherit it
                for task in os.listdir(f"/proc/{proc.pid}/task"):
                    os.sched_setaffinity(int(task), PIN)
        from pipelines.stack.kafka import consumer_group_members

        deadline = time.monotonic() + 120
        while asyncio.run(consumer_group_members(bootstrap, app_id)) != workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{workers} workers did not form a stable group within 120 s")
            time.sleep(0.5)
        # The member count is right before the last join is synced: wait until every worker has joined
        # the same generation, so that no rebalance of the start-up falls into the measurement.
        while len({_generation(p) for p in procs}) != 1 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)
        # Each worker's CPU with nothing flowing (Faust, polls, the 1 s timer), reported on its own row.
        idle_from = [_cpu_seconds(p.pid) for p in procs]  # type: ignore[arg-type]
        time.sleep(IDLE_S)
        before = [_cpu_seconds(p.pid) for p in procs]  # type: ignore[arg-type]
        system_before = sum(_cpu_seconds(p.pid, system_only=True) for p in procs)  # type: ignore[arg-type]
        idle = (np.array(before) - np.array(idle_from)) / IDLE_S
        generation = max(_generation(p) for p in procs)
        spies = [_spy(p.pid, Path(PYSPY) / f"{app_id}-w{i}.txt") for i, p in enumerate(procs)] if PYSPY else []
        asyncio.run(_produce(bootstrap, records))
        # Done when the workers together idle for 3 s: under 5% of a core, or three times their idle rate
        # measured before if that is more (four idle workers' timers come near 5% after a run: a 10 ms
        # tick more in a half second then counted as work). The CPU counted ends where those 3 s begin:
        # the idle tail is not counted as work (it was before 2026-12-07).
        quiet = max(0.05, 3 * float(idle.sum())) * 0.5
        last, idle_for, work_end = before, 0.0, before
        started = work_at = time.monotonic()
        deadline = started + 600
        while idle_for < 3.0 and time.monotonic() < deadline:
            time.sleep(0.5)
            now = [_cpu_seconds(p.pid) for p in procs]  # type: ignore[arg-type]
            if sum(now) - sum(last) < quiet:
                idle_for += 0.5
            else:
                idle_for, work_end, work_at = 0.0, now, time.monotonic()
            last = now
        cpu = np.array(work_end) - np.array(before)
        system = sum(_cpu_seconds(p.pid, system_only=True) for p in procs) - system_before  # type: ignore[arg-type]
        for spy in spies:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        rebalances = max(_generation(p) for p in procs) - generation
        # How the work came in, summed over the workers: more folds or frames for the same samples is
        # more fixed cost per sample (a fold's evaluation, a frame's encode, publish and decode).
        counted = {name: 0.0 for name in COUNTERS}
        fold_by_lane: dict[str, float] = {}
        for proc in procs:
            page = scrape(proc.metrics_url) or {}
            for key, value in page.items():
                name = key.split("{")[0]
                if name in counted:
                    counted[name] += value
                if name == "headroom_worker_fold_cpu_seconds_total":
                    lane = re.search(r'lane="([^"]*)"', key)
                    if lane:
                        fold_by_lane[lane.group(1)] = fold_by_lane.get(lane.group(1), 0.0) + value
        rows, frame_bytes = np.zeros(PARTITIONS, np.int64), np.zeros(PARTITIONS, np.int64)
        for topic in settings.partials_topics:
            for partition, value in asyncio.run(_read_topic(bootstrap, topic)):
                frame_bytes[partition] += len(value)
                rows[partition] += sum(len(b.labels) for b in decode_frame(value).blocks)
        if not rows.sum():
            ctx.log(f"stages_kafka {workers} workers run {run}: no partials on the topic, the figures are not valid")
        ctx.log(f"stages_kafka {workers} workers run {run} {settings.series_partition_by or 'by family'}: {samples.sum()} samples, {global_samples} to the global lane, "
                f"{rows.sum()} partial rows, CPU {cpu.round(2).tolist()} s (system {system:.2f} s in all, idle tail included), idle {(idle * 1000).round(1).tolist()} ms/s, "
                f"{rebalances} rebalance(s) during the run, work {work_at - started:.1f} s; "
                + ", ".join(f"{name.removeprefix('headroom_')} {value:.3g}" for name, value in counted.items())
                + f", samples-lane fold CPU {fold_by_lane.get(settings.samples_topic, 0.0):.2f} s")
        return {"samples": samples, "sizes": sizes, "rows": rows, "frame_bytes": frame_bytes, "cpu": cpu,
                "global": global_samples, "idle": idle, "rebalances": rebalances}
    finally:
        for proc in procs:
            proc.stop()


def run(ctx: BenchContext) -> list[Table]:
    steps = 12 if ctx.quick else 24
    batches, n_series = kubernetes_fleet(nodes=40, pods_per_node=12, steps=steps)
    base = (int(time.time() * 1000) - 2 * 3600 * 1000) // 15_000 * 15_000  # a replay two hours back
    from detector.wire.batch import SampleBatch

    batches = [SampleBatch(b.series_keys, b.series_index, b.timestamps + base, b.values) for b in batches]
    table = Table(
        "staged rules over Kafka: 1, 2 and 4 worker processes",
        f"HEADROOM_STAGED_RULES on, {PARTITIONS} samples + {PARTITIONS} combine partitions, {RULES.name}, "
        f"{n_series} series x {len(batches)} rounds produced straight to the samples topic (replay); "
        f"busiest partition's share of the total (fair share {1 / PARTITIONS:.3f}); CPU of every worker from the first "
        "sample to the last work (then 3 s of idling, under 5% of a core or 3x their idle rate: not counted)",
    )
    rows = {}
    fair2 = 2 / PARTITIONS
    for name in PARTITIONINGS:
        for w in WORKERS:
            rows[name, w] = (
                table.row(f"{name}, {w} workers: stage 1 busiest partition, samples share", "share", lower_is_better=True,
                          ratio=False, target=fair2),
                table.row(f"{name}, {w} workers: stage 1 busiest partition, bytes share", "share", lower_is_better=True,
                          ratio=False, target=fair2),
                table.row(f"{name}, {w} workers: stage 2 busiest partition, partial rows share", "share",
                          lower_is_better=True, ratio=False, target=fair2),
                table.row(f"{name}, {w} workers: stage 2 busiest partition, frame bytes share", "share",
                          lower_is_better=True, ratio=False, target=fair2),
                table.row(f"{name}, {w} workers: stage 2 frame bytes, total", "MB", ratio=False),
                table.row(f"{name}, {w} workers: CPU per sample, all workers", "us", lower_is_better=True, ratio=False),
                table.row(f"{name}, {w} workers: busiest worker's share of CPU", "share", lower_is_better=True, ratio=False),
                table.row(f"{name}, {w} workers: partial rows", "rows", ratio=False),
                table.row(f"{name}, {w} workers: idle CPU per worker, before the samples", "ms/s", lower_is_better=True,
                          ratio=False),
                table.row(f"{name}, {w} workers: rebalances during the run", "count", lower_is_better=True, ratio=False),
                table.row(f"{name}, {w} workers: CPU per sample against the in-process staged engine's, "
                          f"both at {w} processes", "x", lower_is_better=True, ratio=False),
            )
    baseline_rows = {w: table.row(f"machine baseline: the same in-process job in {w} processes at once, CPU each",
                                  "s", lower_is_better=True, ratio=False) for w in WORKERS}
    for i in range(ctx.runs):
        for w in WORKERS:
            # The two partitionings back to back, their order alternating: the machine's load drifts.
            for name in PARTITIONINGS if (i + w) % 2 == 0 else reversed(PARTITIONINGS):
                got = _one_run(ctx, w, i, batches, PARTITIONINGS[name])
                base_cpu = machine_baseline(w, steps)  # right after, under the same load
                baseline_rows[w].add(base_cpu)
                ctx.log(f"stages_kafka machine baseline, {w} processes at once: {base_cpu:.3f} CPU-s each")
                r = rows[name, w]
                r[0].add(got["samples"].max() / got["samples"].sum())
                r[1].add(got["sizes"].max() / got["sizes"].sum())
                r[2].add(got["rows"].max() / max(got["rows"].sum(), 1))
                r[3].add(got["frame_bytes"].max() / max(got["frame_bytes"].sum(), 1))
                r[4].add(got["frame_bytes"].sum() / 1e6)
                r[5].add(got["cpu"].sum() / got["samples"].sum() * 1e6)
                r[6].add(got["cpu"].max() / max(got["cpu"].sum(), 1e-9))
                r[7].add(int(got["rows"].sum()))
                r[8].add(float(np.median(got["idle"])) * 1000)
                r[9].add(got["rebalances"])
                # The same samples in-process (the baseline job's fleet is this run's): what Kafka and Faust add,
                # with the machine's share of any growth with W divided out. Compare this row across worker counts.
                r[10].add(got["cpu"].sum() / base_cpu)
    return [table]


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--baseline"]:  # one process of machine_baseline
        print(f"{_baseline_job(int(sys.argv[2])):.4f}")
        raise SystemExit(0)
    from rich.console import Console

    from bench.common import bench_context

    with bench_context(1, True, Console()) as ctx:
        for t in run(ctx):
            ctx.console.print(t.render() if hasattr(t, "render") else t)
