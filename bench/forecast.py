"""Saturation forecasts: cost at 10k series, early-warning lead time, false warnings on benign days.

``.venv/bin/python -m bench.forecast [--runs N] [--quick] [--seed S] [--save PATH]``

1. **Cost.** 10k bounded series (``*_saturation``), one sample each per 15 s
   scrape, cut into messages of 1000 samples as a Faust agent receives them.
   Rows: ``TrendBank.learn_many`` alone (the batch update), and
   ``ForecastEngine.ingest`` (series lookup + update + ETA + warning state
   machine: everything per message). Samples per CPU-second of this thread
   (one core), median over the runs; state bytes per series, and the whole
   engine's memory per series (numpy state plus the Python registry: label
   tuples, dict entries), measured with tracemalloc.
2. **Lead time.** Synthetic ramps of the runbook's three kinds, through
   ``ForecastEngine`` with the default settings: a queue depth ramping to its
   paired ``*_max_depth``, a channel saturation ramping to 1.0, handler permits
   draining to 0. Each starts flat at a random level with noise (1-4 % of the
   bound, integer counts for depth and permits) for 60-120 min, then ramps to
   the bound in 15-60 min, then stays clipped at it. Lead time: the first
   sample at the bound minus the first early warning that fires (after the
   ramp starts); a ramp never warned before it hits the bound counts 0.
   Target: median >= 5 min. Also: the first warning's ETA against the time the
   noise-free trend really had left, and how often its interval held it.
3. **False warnings.** Benign days of the same three kinds: a daily cycle,
   8-24 bursts a day (rise in 0.5-4 min by 10-30 % of the bound, exponential
   drain over 2-15 min), 0-2 level shifts, noise, never reaching the bound.
   Every warning that fires is false. Target: <= 1 per series per benign day.

Scenarios are seeded (``--seed``); each run uses fresh scenarios from its own seed.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from bench.common import Table
from detector.forecast import ForecastConfig, ForecastEngine, ForecastSettings, TrendBank
from detector.labels import canonical_bytes

SCRAPE_S = 15.0
T0_MS = 1_700_000_000_000
KINDS = ("depth", "saturation", "permits")


# --------------------------------------------------------------------------- cost


def cost(runs: int, quick: bool) -> tuple[Table, dict]:
    n_series, batch = 10_000, 1000
    steps = 10 if quick else 30
    table = Table("Forecast cost: 10k series, messages of 1000 samples",
                  "samples per CPU-second of one thread (one core); state per series")
    learn_row = table.row("TrendBank.learn_many (batch update only)", "samples/CPU-s", baseline=True)
    engine_row = table.row("ForecastEngine.ingest (lookup + update + ETA + warnings)", "samples/CPU-s",
                           target=200_000)
    keys = [canonical_bytes((("__name__", "worker_dispatch_channel_saturation"), ("instance", f"w{i // 100}:9100"),
                             ("job", "worker"), ("worker_id", f"w{i}"))) for i in range(n_series)]
    rng = np.random.default_rng(7)
    level = rng.uniform(0.1, 0.6, n_series)

    def values(step: int) -> np.ndarray:
        return np.clip(level + 0.0005 * step + rng.normal(0, 0.03, n_series), 0, 1)

    for _ in range(runs):
        bank = TrendBank()
        all_rows = bank.add(n_series)
        engine = ForecastEngine()
        # warm up: every series seen, state warm (30 scrapes), not timed
        for step in range(30):
            x = values(step)
            for lo in range(0, n_series, batch):
                idx = np.arange(batch)
                t = np.full(batch, T0_MS + int(step * SCRAPE_S * 1000), dtype=np.int64)
                bank.learn_many(all_rows[lo:lo + batch], t / 1000.0, x[lo:lo + batch])
                engine.ingest(keys[lo:lo + batch], idx, t, x[lo:lo + batch])
        messages = []
        for step in range(30, 30 + steps):
            x = values(step)
            t = np.full(batch, T0_MS + int(step * SCRAPE_S * 1000), dtype=np.int64)
            for lo in range(0, n_series, batch):
                messages.append((lo, t, x[lo:lo + batch].copy()))
        idx = np.arange(batch)
        gc.collect()
        cpu = time.thread_time()
        for lo, t, x in messages:
            bank.learn_many(all_rows[lo:lo + batch], t / 1000.0, x)
        learn_row.add(len(messages) * batch / (time.thread_time() - cpu))
        gc.collect()
        cpu = time.thread_time()
        for lo, t, x in messages:
            engine.ingest(keys[lo:lo + batch], idx, t, x)
        engine_row.add(len(messages) * batch / (time.thread_time() - cpu))

    # memory: the whole engine per series, Python registry included
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = ForecastEngine()
    for step in range(2):
        t = np.full(batch, T0_MS + int(step * SCRAPE_S * 1000), dtype=np.int64)
        for lo in range(0, n_series, batch):
            engine.ingest(keys[lo:lo + batch], np.arange(batch), t, values(step)[lo:lo + batch])
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    mem = {
        "trend_state_bytes_per_series": TrendBank().nbytes_per_series,
        "engine_state_bytes_per_series": engine.nbytes_per_series,
        "engine_total_bytes_per_series": used / n_series,
    }
    table.row("trend state per series", "bytes", ratio=False, target=4096, lower_is_better=True).add(
        mem["trend_state_bytes_per_series"])
    table.row("engine numeric state per series (trend + warning + bound)", "bytes", ratio=False).add(
        mem["engine_state_bytes_per_series"])
    table.row("engine memory per series incl. Python registry (tracemalloc)", "bytes", ratio=False,
              target=4096, lower_is_better=True).add(mem["engine_total_bytes_per_series"])
    return table, mem


# --------------------------------------------------------------------------- scenarios


@dataclass
class Series:
    kind: str
    labels: tuple
    bound_labels: tuple | None
    bound: float
    direction: str
    values: np.ndarray  # one per scrape
    hit_index: int | None = None  # first scrape at the bound (ramps)
    ramp_index: int | None = None  # first scrape of the ramp
    cross_index: int | None = None  # scrape where the noise-free trend reaches the bound


def _labels(kind: str, i: int) -> tuple[tuple, tuple | None, float, str]:
    if kind == "depth":
        base = (("instance", "db:9187"), ("job", "pgmq"), ("queue_name", f"q{i}"))
        return (("__name__", "pgmq_queue_depth"), *base), (("__name__", "pgmq_queue_max_depth"), *base), 10000.0, "up"
    if kind == "saturation":
        return ((("__name__", "worker_dispatch_channel_saturation"), ("instance", f"w{i}:9100"), ("job", "worker"),
                 ("worker_id", f"w{i}")), None, 1.0, "up")
    return ((("__name__", "worker_handler_semaphore_permits_available"), ("instance", f"w{i}:9100"),
             ("job", "worker"), ("worker_id", f"w{i}")), None, 0.0, "down")


def _finish(kind: str, frac: np.ndarray, full: float) -> np.ndarray:
    """Fraction of the way to the bound -> metric values (clipped, integer counts where counts)."""
    frac = np.clip(frac, 0.0, 1.0)
    if kind == "depth":
        return np.round(frac * full)
    if kind == "saturation":
        return frac
    return np.round((1.0 - frac) * full)  # permits available: 0 when frac reaches 1


def ramp(kind: str, i: int, rng: np.random.Generator) -> Series:
    labels, bound_labels, bound, direction = _labels(kind, i)
    full = 10000.0 if kind == "depth" else 1.0 if kind == "saturation" else float(rng.choice([10, 20, 50]))
    flat = int(rng.uniform(60, 120) * 60 / SCRAPE_S)
    ramp_n = int(rng.uniform(15, 60) * 60 / SCRAPE_S)
    tail = int(15 * 60 / SCRAPE_S)
    start = rng.uniform(0.1, 0.45)
    noise = rng.uniform(0.01, 0.04) if kind != "permits" else max(rng.uniform(0.02, 0.06), 0.5 / full)
    trend = np.concatenate([np.full(flat, start), np.linspace(start, 1.0, ramp_n, endpoint=False),
                            np.full(tail, 1.02)])
    values = _finish(kind, trend + rng.normal(0, noise, trend.shape[0]), full)
    at_bound = values >= full if direction == "up" else values <= 0
    at_bound[:flat] = False
    hits = np.flatnonzero(at_bound)
    return Series(kind, labels, bound_labels, full if kind != "permits" else 0.0, direction, values,
                  int(hits[0]) if hits.size else None, flat, flat + ramp_n)


def benign_day(kind: str, i: int, rng: np.random.Generator) -> Series:
    labels, bound_labels, bound, direction = _labels(kind, i)
    full = 10000.0 if kind == "depth" else 1.0 if kind == "saturation" else float(rng.choice([10, 20, 50]))
    n = int(86400 / SCRAPE_S)
    t = np.arange(n) * SCRAPE_S
    base = rng.uniform(0.15, 0.35)
    amp = rng.uniform(0.05, 0.2)
    level = base + amp * np.sin(2 * np.pi * t / 86400 + rng.uniform(0, 2 * np.pi))
    for _ in range(int(rng.integers(0, 3))):  # level shifts (a deploy, a new tenant)
        level[int(rng.integers(0, n)):] += rng.uniform(-0.08, 0.12)
    bursts = np.zeros(n)
    for _ in range(int(rng.integers(8, 25))):
        at, rise = rng.uniform(0, 86400), rng.uniform(30, 240)
        height, drain = rng.uniform(0.1, 0.3), rng.uniform(120, 900)
        dt = t - at
        shape = np.where(dt < 0, 0.0, np.where(dt < rise, dt / rise, np.exp(-(dt - rise) / drain)))
        bursts += height * shape
    noise = rng.uniform(0.01, 0.04) if kind != "permits" else max(rng.uniform(0.02, 0.06), 0.5 / full)
    frac = np.minimum(level + bursts, 0.92) + rng.normal(0, noise, n)
    frac = np.minimum(frac, 0.95)  # benign: never at the bound
    return Series(kind, labels, bound_labels, full if kind != "permits" else 0.0, direction,
                  _finish(kind, frac, full))


def replay(series: list[Series], settings: ForecastSettings) -> list[list[tuple]]:
    """All series through one engine, one message per scrape; per series (scrape, previous, state, eta, low, high)."""
    engine = ForecastEngine(ForecastConfig(settings))
    table: list[tuple] = []
    owner: list[int] = []
    for k, s in enumerate(series):
        table.append(s.labels)
        owner.append(k)
        if s.bound_labels is not None:
            table.append(s.bound_labels)
            owner.append(-1)
    n = max(s.values.shape[0] for s in series)
    idx_of = {s.labels: j for j, s in enumerate(series)}
    events: list[list[tuple]] = [[] for _ in series]
    index = np.arange(len(table))
    for step in range(n):
        vals = np.empty(len(table))
        live = np.ones(len(table), dtype=bool)
        j = 0
        for s in series:
            live[j] = step < s.values.shape[0]
            vals[j] = s.values[step] if live[j] else np.nan
            j += 1
            if s.bound_labels is not None:
                live[j] = live[j - 1]
                vals[j] = s.bound if s.direction == "up" else np.nan
                j += 1
        t = np.full(len(table), T0_MS + int(step * SCRAPE_S * 1000), dtype=np.int64)
        for e in engine.ingest(table, index[live], t[live], vals[live]):
            events[idx_of[e.labels]].append((step, e.previous, e.state, e.eta_s, e.eta_low_s, e.eta_high_s))
    return events


def lead_times(ramps: list[Series], events: list[list[tuple]]) -> tuple[list[float], int, list[float], list[bool]]:
    """Per ramp: lead time (minutes); warnings fired before the ramp began (false); and, at each
    first warning, its ETA over the trend's true time left and whether its interval held that."""
    leads, early, ratios, held = [], 0, [], []
    for s, evs in zip(ramps, events):
        fired = [ev for ev in evs if ev[2] == "firing"]
        early += sum(1 for ev in fired if ev[0] < s.ramp_index)
        first = next((ev for ev in fired if ev[0] >= s.ramp_index), None)
        hit = s.hit_index if s.hit_index is not None else s.values.shape[0]
        leads.append(max(hit - first[0], 0) * SCRAPE_S / 60 if first is not None else 0.0)
        if first is not None and first[0] < s.cross_index:
            left = (s.cross_index - first[0]) * SCRAPE_S
            ratios.append(first[3] / left)
            held.append(first[4] <= left <= first[5])
    return leads, early, ratios, held


def early_warning(runs: int, quick: bool, seed: int, settings: ForecastSettings) -> tuple[Table, dict]:
    per_kind = 8 if quick else 20
    days_per_kind = 4 if quick else 10
    table = Table("Early warning: lead time on ramps, false warnings on benign days",
                  f"{per_kind} ramps and {days_per_kind} benign days per kind per run "
                  f"({', '.join(KINDS)}); 15 s scrapes; default settings")
    lead_row = table.row("median lead time before the bound is hit (ramps of 15-60 min)", "min", target=5.0,
                         ratio=False)
    fast_row = table.row("median lead time, ramps of 15-25 min", "min", ratio=False)
    miss_row = table.row("ramps not warned before the bound", "%", ratio=False)
    ratio_row = table.row("ETA at the first warning / trend's true time left (median)", "x", ratio=False)
    held_row = table.row("first warnings whose 80% ETA interval holds the true time left", "%", ratio=False)
    false_row = table.row("false warnings per benign series-day (mean)", "per day", target=1.0,
                          lower_is_better=True, ratio=False)
    false_med = table.row("false warnings per benign series-day (median)", "per day", ratio=False)
    quiet_row = table.row("benign series-days with no warning", "%", ratio=False)
    detail: dict = {"runs": []}
    for run in range(runs):
        rng = np.random.default_rng(seed + run)
        ramps = [ramp(kind, i, rng) for kind in KINDS for i in range(per_kind)]
        leads, early, ratios, held = lead_times(ramps, replay(ramps, settings))
        ramp_min = [((s.hit_index or 0) - s.ramp_index) * SCRAPE_S / 60 for s in ramps]
        days = [benign_day(kind, 1000 + i, rng) for kind in KINDS for i in range(days_per_kind)]
        fired = [sum(1 for ev in evs if ev[2] == "firing") for evs in replay(days, settings)]
        lead_row.add(statistics.median(leads))
        fast = [lead for lead, m in zip(leads, ramp_min) if m <= 25]
        fast_row.add(statistics.median(fast) if fast else float("nan"))
        miss_row.add(100.0 * sum(1 for lead in leads if lead <= 0) / len(leads))
        ratio_row.add(statistics.median(ratios) if ratios else float("nan"))
        held_row.add(100.0 * sum(held) / len(held) if held else float("nan"))
        false_row.add(sum(fired) / len(fired))
        false_med.add(statistics.median(fired))
        quiet_row.add(100.0 * sum(1 for f in fired if f == 0) / len(fired))
        by_kind = {kind: statistics.median(lead for lead, s in zip(leads, ramps) if s.kind == kind) for kind in KINDS}
        false_by_kind = {kind: sum(f for f, d in zip(fired, days) if d.kind == kind) / days_per_kind for kind in KINDS}
        detail["runs"].append({"seed": seed + run, "median_lead_min_by_kind": by_kind,
                               "false_per_day_by_kind": false_by_kind, "warnings_before_ramp": early,
                               "leads_min": [round(v, 2) for v in leads],
                               "ramp_minutes": [round(v, 1) for v in ramp_min]})
    return table, detail


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.forecast", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median reported)")
    parser.add_argument("--quick", action="store_true", help="fewer scenarios and steps")
    parser.add_argument("--seed", type=int, default=1, help="first scenario seed")
    parser.add_argument("--only", choices=("cost", "early-warning"), help="one part only")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a forecast setting for the early-warning part (e.g. tau=5m)")
    parser.add_argument("--save", type=Path, help="also write the tables as Markdown here (and JSON beside it)")
    args = parser.parse_args(argv)
    console = Console(width=150)
    settings = ForecastSettings.from_dict(dict(item.split("=", 1) for item in args.set))
    if args.set:
        console.print(f"settings: {settings}")
    tables, extra = [], {}
    if args.only in (None, "cost"):
        table, mem = cost(args.runs, args.quick)
        tables.append(table)
        extra["memory"] = mem
    if args.only in (None, "early-warning"):
        table, detail = early_warning(args.runs, args.quick, args.seed, settings)
        tables.append(table)
        extra["early_warning"] = detail
    for table in tables:
        table.render(console)
    if args.save:
        args.save.write_text("\n".join(t.markdown() for t in tables))
        args.save.with_suffix(".json").write_text(json.dumps(
            {"tables": [t.to_json() for t in tables], "settings": settings.__dict__, **extra}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
