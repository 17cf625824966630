"""(completeness) Samples that arrive after their instant was evaluated, and what that changes.

A Prometheus sends remote-write over many shards at once, each series always
through the same shard, each shard holding a batch back until it has 2000
samples or 5 s have passed (``max_samples_per_send``, ``batch_send_deadline``:
Prometheus 2.42's defaults). This bench plays that sender, in process and on a
simulated clock, for a fleet of 20 runbook deployments (3,060 series, 80
targets scraped every 15 s at their own phase), into 8 partitions of rule
engines evaluating the runbook's rules, the levels pack and a few rules of
per-target ratios, sums and quantiles that incomplete inputs would change:

* **steady**: 25 minutes live; each shard's requests take 5-60 ms;
* **catch-up**: the receiver is unreachable from minute 5 to minute 15, then
  every shard sends its backlog in 2000-sample requests back to back (50-300 ms
  each), as a Prometheus does after an outage (10 samples per series per
  request with 50 shards: the issue's 1000x10 shape).

Per policy it reports the share of samples that arrive after an evaluation at
or past their timestamp (late; for the ``complete`` policies also the part of
it in the first two minutes, the start-up), the alert transitions that differ from a
reference that evaluates every instant on complete data, how long after an
instant its evaluation ran (arrival clock), and how many checks of ``promtool
test rules`` fail when it replays the same samples of the first few clusters
against what the engines held at every tick (:mod:`bench.promtool_replay`; the
reference is checked the same way). Policies:

* ``newest``: the watermark is the newest sample (``HEADROOM_MAX_LATENESS=0s``);
* ``newest-5s`` / ``newest-15s``: a fixed lateness behind the newest sample;
* ``complete``: the per-series completeness watermark (:mod:`detector.completeness`),
  the worker's default (``HEADROOM_MAX_LATENESS=10m``, ``HEADROOM_SERIES_SILENCE=30s``);
  ``complete-2m`` the same with a 2-minute bound, to show what the bound buys in a catch-up.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import BenchContext, Table, load_groups
from bench.promtool_replay import (ALERT_STATES, AlertAt, PromtoolVerdict, recorded_query, rule_test_file,
                                   run_promtool)
from detector.labels import canonical_bytes, partition_for, stable_hash
from detector.promql import EvalContext, compile_expr
from detector.rules.alerting import AlertingRule
from detector.rules.engine import RuleEngine
from detector.rules.files import resolve_rule_file
from detector.rules.recording import RecordingRule
from detector.wire.batch import SampleBatch
from simulator.runbook import RunbookSimulator

SCRAPE_MS = 15_000
PARTITIONS = 8
DEPLOYMENTS = 20
MAX_SAMPLES_PER_SEND = 2000
BATCH_SEND_DEADLINE_MS = 5_000
RUN_MS = 25 * 60_000
OUTAGE_START_MS = 5 * 60_000
OUTAGE_MS = 15 * 60_000  # the receiver is back
IDLE_TICK_MS = 1_000  # the worker re-checks its watermark on this wall-clock tick
# promtool checks the alerts of the first clusters only (c0, c1, ...), to keep its file (about 1.8 MB
# per cluster) and run time (a few seconds per cluster) small; no rule combines series of two clusters.
# HEADROOM_BENCH_PROMTOOL_CLUSTERS=20 checks the whole fleet.
PROMTOOL_DEPLOYMENTS = int(os.environ.get("HEADROOM_BENCH_PROMTOOL_CLUSTERS", "4"))
PROMTOOL_POLICIES = ("newest", "complete", "complete-2m")
START_MS = 2 * 60_000  # "late in the first 2 min": samples of the first scrapes after the worker starts

SENSITIVE_RULES = """
groups:
  - name: completeness_sensitive
    rules:
      - alert: ApiRejectedShareHigh
        expr: >
          sum by (cluster, instance) (rate(api_requests_rejected_total[1m]))
          / sum by (cluster, instance) (rate(api_requests_total[1m])) > 0.02
      - alert: ApiP99High
        expr: histogram_quantile(0.99, sum by (cluster, instance, le) (rate(api_request_latency_ms_bucket[1m]))) > 250
      - alert: HandlerPermitsLow
        expr: >
          sum by (cluster) (worker_handler_semaphore_permits_available)
          / sum by (cluster) (worker_handler_semaphore_permits_total) < 0.5
      - record: cluster:api_requests:rate1m
        expr: sum by (cluster, instance) (rate(api_requests_total[1m]))
"""

POLICIES = {
    "newest": {"lateness_ms": 0},
    "newest-5s": {"lateness_ms": 5_000},
    "newest-15s": {"lateness_ms": 15_000},
    "complete-2m": {"max_lateness_ms": 120_000, "silence_ms": 30_000},
    "complete": {"max_lateness_ms": 600_000, "silence_ms": 30_000},
}


@dataclass
class Request:
    arrival_ms: int
    series: np.ndarray  # indices into the fleet's series
    stamps: np.ndarray
    values: np.ndarray


class Fleet:
    """Every sample of the run, with the wall time its scrape appended it to the WAL."""

    def __init__(self, seed: int, deployments: int = DEPLOYMENTS) -> None:
        rng = np.random.default_rng(seed)
        sims = [RunbookSimulator("backpressure", seed=seed * 100 + d) for d in range(deployments)]
        # Whole seconds, so that promtool's input notation (one value per step) can hold every stamp on a 1 s grid.
        phases = rng.integers(0, SCRAPE_MS // 1000, deployments) * 1000
        self.labels: list[tuple] = []
        self.keys: list[bytes] = []
        series_of: list[list[int]] = []
        for d, sim in enumerate(sims):
            rows = []
            for labels, _ in sim.sample(int(phases[d])):
                full = tuple(sorted((*labels, ("cluster", f"c{d}"))))
                rows.append(len(self.labels))
                self.labels.append(full)
                self.keys.append(canonical_bytes(full))
            series_of.append(rows)
        self.partition = np.array([partition_for(labels, PARTITIONS) for labels in self.labels])
        series, stamps, values, appended = [], [], [], []
        for k in range(1, RUN_MS // SCRAPE_MS):
            for d, sim in enumerate(sims):
                t = int(phases[d]) + k * SCRAPE_MS
                rows = series_of[d]
                series.append(np.array(rows))
                stamps.append(np.full(len(rows), t, dtype=np.int64))
                values.append(np.array([v for _, v in sim.sample(t)]))
                appended.append(np.full(len(rows), t + int(rng.integers(5, 200)), dtype=np.int64))
        self.series = np.concatenate(series)
        self.stamps = np.concatenate(stamps)
        self.values = np.concatenate(values)
        self.appended = np.concatenate(appended)

    def requests(self, shards: int, outage: bool, seed: int) -> list[Request]:
        """What ``shards`` remote-write shards send, in arrival order at the receiver."""
        rng = np.random.default_rng(seed)
        shard_of = np.array([stable_hash(k) % shards for k in self.keys])[self.series]
        out: list[Request] = []
        for shard in range(shards):
            picks = np.flatnonzero(shard_of == shard)
            picks = picks[np.argsort(self.appended[picks], kind="stable")]
            out += self._send(picks, rng, outage)
        out.sort(key=lambda r: r.arrival_ms)
        return out

    def _send(self, picks: np.ndarray, rng: np.random.Generator, outage: bool) -> list[Request]:
        """One shard: a request when 2000 samples are pending or its 5 s timer fires, one at a time."""
        appended = self.appended[picks]
        n = len(picks)
        sent: list[Request] = []
        timer = int(rng.integers(0, BATCH_SEND_DEADLINE_MS))  # shards' timers are not in phase
        now = i = 0
        while i < n:
            full_at = int(appended[i + MAX_SAMPLES_PER_SEND - 1]) if i + MAX_SAMPLES_PER_SEND <= n else None
            while timer < appended[i]:  # the timer found nothing pending and started again
                timer += BATCH_SEND_DEADLINE_MS
            send_at = max(now, timer if full_at is None else min(full_at, timer))
            if outage and OUTAGE_START_MS <= send_at < OUTAGE_MS:  # refused until the receiver is back
                send_at = OUTAGE_MS + int(rng.integers(30, BATCH_SEND_DEADLINE_MS))
            end = min(i + int(np.searchsorted(appended[i:], send_at, side="right")), i + MAX_SAMPLES_PER_SEND)
            full = end - i == MAX_SAMPLES_PER_SEND
            took = int(rng.integers(50, 300) if full else rng.integers(5, 60))
            chosen = picks[i:end]
            sent.append(Request(send_at + took, self.series[chosen], self.stamps[chosen], self.values[chosen]))
            now = send_at + took
            timer = now + BATCH_SEND_DEADLINE_MS
            i = end
        return sent


def _batch(fleet: Fleet, series: np.ndarray, stamps: np.ndarray, values: np.ndarray) -> SampleBatch:
    unique, index = np.unique(series, return_inverse=True)
    return SampleBatch([fleet.keys[i] for i in unique.tolist()], index.astype(np.int64), stamps, values)


class RecordingEngine(RuleEngine):
    """A rule engine that also keeps, after each tick's evaluation, the alerts it held pending or firing."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.alerts_at: dict[int, list[AlertAt]] = {}
        self.recorded_at: dict[int, list[tuple]] = {}  # (rule, labels, value): what recorded_query(rule) returned
        self._reads: dict[str, object] = {}

    def _evaluate_group(self, index: int, tick: int, out) -> None:
        super()._evaluate_group(index, tick, out)
        held = self.alerts_at.setdefault(tick, [])
        recorded = self.recorded_at.setdefault(tick, [])
        for position, rule in enumerate(self.groups[index].rules):
            if isinstance(rule, AlertingRule):
                held.extend(
                    AlertAt(rule.name, a.labels, a.annotations, a.state, a.active_at)
                    for a in self._alerts.get((index << 20) | position, {}).values() if a.state in ALERT_STATES)
            elif isinstance(rule, RecordingRule):
                if rule.name not in self._reads:
                    self._reads[rule.name] = compile_expr(recorded_query(rule.name))
                ctx = EvalContext(self.store, tick, self.lookback_ms)
                recorded.extend((rule.name, labels, v) for labels, v in self._reads[rule.name].evaluate(ctx).samples())


def _transitions(outputs) -> set:
    return {(t.rule, t.labels, t.state, t.eval_time) for out in outputs for t in out.transitions}


def reference(fleet: Fleet, groups) -> tuple[set, list[RecordingEngine]]:
    """Every partition evaluated on complete data: each scrape instant delivered whole, in order."""
    outputs, engines = [], []
    for p in range(PARTITIONS):
        engine = RecordingEngine(groups)
        engines.append(engine)
        mine = np.flatnonzero(fleet.partition[fleet.series] == p)
        stamps = fleet.stamps[mine]
        for t in np.unique(stamps).tolist():
            at = mine[stamps == t]
            outputs.append(engine.ingest(_batch(fleet, fleet.series[at], fleet.stamps[at], fleet.values[at])))
        outputs.append(engine.advance_to(int(fleet.stamps.max())))
    return _transitions(outputs), engines


def play(fleet: Fleet, groups, requests: list[Request], policy: dict) -> dict:
    """Requests through the receiver's partitioning into one engine per partition, in arrival order."""
    engines = [RecordingEngine(groups, **policy) for _ in range(PARTITIONS)]
    outputs, delays = [], []
    start = int(fleet.stamps.min())
    late_at_start = 0  # late samples of the run's first START_MS: where the watermark knows no gap yet
    next_tick = requests[0].arrival_ms if requests else 0

    def advance(engine: RuleEngine, before: int, out, now: int) -> None:
        """Note the output, and the delay of every 15 s instant the watermark passed."""
        outputs.append(out)
        if engine.watermark > before:
            first = max(before, 0) // SCRAPE_MS + 1
            delays.extend(now - tick * SCRAPE_MS for tick in range(first, engine.watermark // SCRAPE_MS + 1))

    for request in requests:
        while next_tick < request.arrival_ms:  # the worker's wall-clock tick
            for engine in engines:
                before = engine.watermark
                advance(engine, before, engine.advance_to(engine.complete_until(next_tick)), next_tick)
            next_tick += IDLE_TICK_MS
        parts = fleet.partition[request.series]
        now = request.arrival_ms + 20  # through Kafka to the worker
        for p in np.unique(parts).tolist():
            at = parts == p
            batch = _batch(fleet, request.series[at], request.stamps[at], request.values[at])
            engine = engines[p]
            before = engine.watermark
            out = engine.ingest(batch, arrival_ms=now)
            if out.late and int(batch.timestamps.min()) < start + START_MS:
                late_at_start += out.late
            advance(engine, before, out, now)
    end = int(fleet.stamps.max()) + SCRAPE_MS
    for engine in engines:
        outputs.append(engine.advance_to(end))
    samples = sum(e.stats.samples + e.stats.duplicates + e.stats.out_of_order for e in engines)
    late = sum(e.stats.late for e in engines)
    return {"late": late / max(samples, 1), "late_at_start": late_at_start / max(samples, 1),
            "transitions": _transitions(outputs), "delays": delays, "engines": engines}


def promtool_check(fleet: Fleet, files: list[str], groups, engines: list[RecordingEngine], clusters: set[str],
                   path: Path) -> PromtoolVerdict:
    """``promtool test rules`` on the samples of ``clusters``, one test group per partition, expecting
    the alerts ``engines`` held at every tick up to the last sample (see :mod:`bench.promtool_replay`)."""
    cluster = np.array([dict(labels)["cluster"] for labels in fleet.labels])
    order = np.lexsort((fleet.stamps, fleet.series))
    series, stamps, values = fleet.series[order], fleet.stamps[order], fleet.values[order]
    bounds = np.searchsorted(series, np.arange(len(fleet.labels) + 1))
    ticks = list(range(0, int(fleet.stamps.max()) // SCRAPE_MS * SCRAPE_MS + 1, SCRAPE_MS))
    parts = []
    for p, engine in enumerate(engines):
        mine = [i for i in np.flatnonzero(fleet.partition == p).tolist() if cluster[i] in clusters]
        alerts = {}
        for t in ticks:
            held = engine.alerts_at.get(t, [])
            # Every alert of these rules keeps its cluster label: an alert outside the subset reads none of its series.
            assert all("cluster" in dict(a.labels) for a in held)
            alerts[t] = [a for a in held if dict(a.labels)["cluster"] in clusters]
        recorded = {t: [row for row in engine.recorded_at.get(t, []) if dict(row[1])["cluster"] in clusters]
                    for t in ticks}
        if not mine:
            assert not any(alerts.values()) and not any(recorded.values())
            continue
        rows = [(fleet.labels[i], stamps[bounds[i]:bounds[i + 1]].tolist(), values[bounds[i]:bounds[i + 1]].tolist())
                for i in mine]
        parts.append({"name": f"partition {p}", "series": rows, "alerts": alerts, "recorded": recorded, "ticks": ticks})
    return run_promtool(rule_test_file(files, groups, SCRAPE_MS, parts), path)


def rule_files(directory: Path) -> list[str]:
    """The bench's rule files, in load order: the runbook pack, the levels pack and SENSITIVE_RULES (written here)."""
    sensitive = directory / "sensitive.yml"
    sensitive.write_text(SENSITIVE_RULES)
    return [str(resolve_rule_file("backpressure")), str(resolve_rule_file("backpressure-levels")), str(sensitive)]


def run(ctx: BenchContext) -> list[Table]:
    quick = ctx.quick
    shard_counts = (1, 5, 50)
    tables = []
    clusters = {f"c{d}" for d in range(PROMTOOL_DEPLOYMENTS)}
    references: dict[int, tuple[set, int]] = {}  # per seed: the reference's transitions, promtool's failed checks
    with tempfile.TemporaryDirectory() as tmp:
        files = rule_files(Path(tmp))
        groups = load_groups(files)
        check_file = Path(tmp) / "completeness.test.yml"

        def promtool_failed(table: Table, fleet: Fleet, engines: list[RecordingEngine], what: str) -> int:
            verdict = promtool_check(fleet, files, groups, engines, clusters, check_file)
            table.row("promtool checks per run", "count", ratio=False).add(verdict.checks)
            if not verdict.passed:
                ctx.log(f"completeness: promtool fails {verdict.failed} of {verdict.checks} checks, {what}; first:\n"
                        + "\n".join(line for line in verdict.report.splitlines() if line.strip())[:1500])
            return verdict.failed

        for phase, outage in (("steady", False), ("catch-up after a 10 min outage", True)):
            table = Table(
                f"completeness: {phase}, {DEPLOYMENTS * 153} series, 8 partitions",
                "late = samples arriving after an evaluation at or past their timestamp; differing = alert "
                "transitions (rule, labels, state, time) not in the complete-data reference, either way; "
                "delay = arrival-clock time from an instant to its evaluation; promtool failed = checks of "
                f"`promtool test rules` on the samples of clusters c0-c{PROMTOOL_DEPLOYMENTS - 1} that disagree "
                "with what the engines held (firing alerts with labels and annotations per rule, ALERTS, "
                "ALERTS_FOR_STATE and the recording rule's series, at every 15 s tick: bench/promtool_replay.py)",
            )
            for run_index in range(ctx.runs):
                fleet = Fleet(seed=run_index + 1)
                table.row("reference transitions", "count", ratio=False)  # the table's first row
                if run_index not in references:  # the same samples in both phases: checked once
                    expected, engines = reference(fleet, groups)
                    references[run_index] = expected, promtool_failed(table, fleet, engines,
                                                                      f"reference, seed {run_index + 1}")
                expected, reference_failed = references[run_index]
                table.row("reference transitions", "count", ratio=False).add(len(expected))
                table.row("reference: promtool failed", "count", ratio=False, lower_is_better=True).add(reference_failed)
                for shards in shard_counts:
                    requests = fleet.requests(shards, outage, seed=run_index * 7 + shards)
                    for name, policy in POLICIES.items():
                        if quick and name in ("newest-15s", "complete-2m"):
                            continue
                        got = play(fleet, groups, requests, policy)
                        differing = len(got["transitions"] ^ expected)
                        table.row(f"{shards} shards, {name}: late", "%", ratio=False, lower_is_better=True).add(
                            100 * got["late"])
                        if name.startswith("complete"):
                            table.row(f"{shards} shards, {name}: late in the first 2 min", "%", ratio=False,
                                      lower_is_better=True).add(100 * got["late_at_start"])
                        table.row(f"{shards} shards, {name}: differing", "count", ratio=False,
                                  lower_is_better=True).add(differing)
                        if name in PROMTOOL_POLICIES:
                            failed = promtool_failed(table, fleet, got["engines"],
                                                     f"{phase}, {shards} shards, {name}, seed {run_index + 1}")
                            table.row(f"{shards} shards, {name}: promtool failed", "count", ratio=False,
                                      lower_is_better=True).add(failed)
                        delays = got["delays"] or [0]
                        table.row(f"{shards} shards, {name}: delay p50", "s", ratio=False, lower_is_better=True).add(
                            float(np.median(delays)) / 1000)
                        table.row(f"{shards} shards, {name}: delay p99", "s", ratio=False, lower_is_better=True).add(
                            float(np.percentile(delays, 99)) / 1000)
            tables.append(table)
    return tables
