"""Early warning, end to end: scenario recordings through ``headroom record`` and ``headroom replay``.

``.venv/bin/python -m bench.early_warning [--split dev|heldout|both] [--quick] [--seeds N] [--skip-seeds K] [--days N]
[--no-ramps] [--jobs J] [--save PATH]``

Each scenario of :mod:`simulator.runbook` made for this bench is recorded with
the load generator by the code of ``headroom record`` (15 s scrapes, the
simulator seeded), then run by the code of ``headroom replay`` with the
runbook's packs (``--rules backpressure --rules backpressure-levels``, default
forecast settings, ``--scores none``: anomaly scores do not take part in
forecasts or in these rules, and cost most of the time). The JSON lines it
writes are read back and measured:

1. **Lead time**, on the ramp scenarios (``ramp-{queue,channel,permits}-{5,15,30,60}m``):
   for each ramping series, the time from the first ``SaturationForecast``
   firing for that series (at or after the ramp's start) to the firing of the
   runbook's critical rule for that series (``TaskerPGMQQueueDepthCritical``
   for the orders queue, ``TaskerCommandChannelSaturationCritical`` for the
   command channel); handler permits have no critical rule, so for them it is
   the first recorded sample at 0. A warning that fires only after that, or
   never, counts 0 (a miss). A scenario's figure is the median over its
   ramping series (three workers for permits, one series otherwise). Also
   shown: the lead before the bound itself is first recorded, and warnings for
   the ramping series that fired before the ramp began (false ones).
   Target: median >= 5 min over the ramps that take 15 minutes or more.
2. **False warnings**, on the benign days (``benign-day``, ``benign-day-2``, ...:
   24 h of event time with a daily load cycle and bursts, no incident): every
   ``SaturationForecast`` that fires, on any series, is false. Target: <= 1 per
   benign day. The runbook's own rules are counted too (they should stay silent).

Two splits (``--split``), so that the figures include some on data no knob was
chosen on:

* **development** (``dev``, the default): simulator seeds 1, 2, ... and the
  benign days ``benign-day``, ``benign-day-2``, ``benign-day-3`` (the
  "everyday" burst pattern). Choose knobs on these figures only.
* **held out** (``heldout``): simulator seeds 101, 102, ... and the days of
  :data:`simulator.runbook.HELDOUT_DAYS` (other day seeds, and other burst
  patterns: "sharp" and "two-peak" besides "everyday"). Look at them once a
  knob is chosen, to report it; a knob that only helps on dev is dropped.

Figures are medians over the simulator seeds (``--seeds``; one run per seed);
the benign row's runs are the (day, seed) pairs. Replays use one
partition (``--partitions``): which partition owns a series does not change
its alerts, and one is about twice as fast as eight.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bench.common import Table
from detector.forecast import ALERT_NAME
from simulator.runbook import HELDOUT_DAYS, RAMP_HOLD_S, RAMP_MINUTES, RAMP_RECOVER_S, RAMP_START_S, SCENARIOS

START_S = 1_700_000_000  # event time of scenario second 0 (headroom record's default)
STEP_S = 15.0
PACKS = ("backpressure", "backpressure-levels")
BENIGN = tuple(name for name in SCENARIOS if name.startswith("benign-day"))
SPLITS = {  # split -> (benign days, first simulator seed); see the module docstring
    "dev": (BENIGN, 1),
    "heldout": (tuple(HELDOUT_DAYS), 101),
}
SPLIT_NAMES = {"dev": "development", "heldout": "held out"}


@dataclass(frozen=True)
class Target:
    """The ramping series of a ramp scenario, its bound, and the critical rule that watches it."""

    metric: str
    match: dict  # identifying labels besides the name (the series' alerts carry them)
    per: str  # the label that tells the ramping series apart ("" when there is one)
    bound: float
    direction: str
    critical: str | None


TARGETS = {
    "queue": Target("pgmq_queue_depth", {"queue_name": "orders"}, "queue_name", float("nan"), "up",
                    "TaskerPGMQQueueDepthCritical"),
    "channel": Target("orchestration_command_channel_saturation", {}, "instance", 1.0, "up",
                      "TaskerCommandChannelSaturationCritical"),
    "permits": Target("worker_handler_semaphore_permits_available", {}, "worker_id", 0.0, "down", None),
}


def ramp_scenarios(minutes: tuple[int, ...] = RAMP_MINUTES) -> list[tuple[str, str, int]]:
    """(scenario, kind, ramp minutes) of every ramp scenario."""
    return [(f"ramp-{kind}-{m}m", kind, m) for m in minutes for kind in TARGETS]


def ramp_record_minutes(minutes: float) -> float:
    return (RAMP_START_S + 60.0 * minutes + RAMP_HOLD_S + RAMP_RECOVER_S) / 60.0 + 5.0


# --------------------------------------------------------------------------- one scenario


def record_and_replay(scenario: str, seed: int, minutes: float, workdir: Path, partitions: int) -> tuple[Path, Path]:
    """``headroom record`` then ``headroom replay``, by their own code (the click commands)."""
    from pipelines.replay_cli import record, replay

    recording = workdir / f"{scenario}-s{seed}.om"
    out = workdir / f"{scenario}-s{seed}.jsonl"
    record.main([str(recording), "--scenario", scenario, "--minutes", f"{minutes:g}", "--step", f"{STEP_S:g}",
                 "--seed", str(seed), "--start", str(START_S)], standalone_mode=False)
    rules = [arg for pack in PACKS for arg in ("--rules", pack)]
    replay.main([str(recording), *rules, "--out", str(out), "--scores", "none", "--partitions", str(partitions)],
                standalone_mode=False)
    return recording, out


def alert_events(path: Path) -> list[dict]:
    events = []
    with path.open() as fd:
        for line in fd:
            event = json.loads(line)
            if event.get("kind") == "alert":
                events.append(event)
    return events


def series_samples(recording: Path, metric: str) -> dict[tuple, list[tuple[int, float]]]:
    """(t_ms, value) of every series of one metric in a recording, by its labels."""
    from detector.wire.openmetrics import read_samples

    prefix = metric + "{"
    with recording.open() as fd:
        lines = [line for line in fd if line.startswith(prefix)]
    found: dict[tuple, list[tuple[int, float]]] = {}
    for labels, t_ms, value in read_samples(lines):
        found.setdefault(labels, []).append((t_ms, value))
    return {labels: sorted(points) for labels, points in found.items()}


def target_series(recording: Path, target: Target) -> tuple[dict[tuple, list[tuple[int, float]]], dict[str, float]]:
    """The target metric's series in a recording, and each queue's max depth when the target is a queue."""
    samples = series_samples(recording, target.metric)
    bounds = {}
    if target.metric == "pgmq_queue_depth":
        bounds = {dict(k)["queue_name"]: v[0][1] for k, v in series_samples(recording, "pgmq_queue_max_depth").items()}
    return samples, bounds


def _is(labels: dict, target: Target, key: str, alertname: str, metric: str | None = None) -> bool:
    if labels.get("alertname") != alertname or (metric is not None and labels.get("metric") != metric):
        return False
    return all(labels.get(k) == v for k, v in target.match.items()) and labels.get(target.per) == key


@dataclass
class RampResult:
    scenario: str
    kind: str
    minutes: int
    seed: int
    leads_min: list[float] = field(default_factory=list)  # per ramping series, before the critical rule / bound
    bound_leads_min: list[float] = field(default_factory=list)  # per ramping series, before the bound is recorded
    eta_ratio: list[float] = field(default_factory=list)  # first warning's ETA / real time to the bound
    early: int = 0  # warnings for the ramping series that fired before the ramp began
    detail: list[dict] = field(default_factory=list)


def measure_ramp(scenario: str, kind: str, minutes: int, seed: int, workdir: Path, partitions: int,
                 record_minutes: float | None = None) -> RampResult:
    """Lead times on one ramp scenario; ``record_minutes`` cuts the recording short (tests)."""
    target = TARGETS[kind]
    length = record_minutes if record_minutes is not None else ramp_record_minutes(minutes)
    recording, out = record_and_replay(scenario, seed, length, workdir, partitions)
    try:
        events = alert_events(out)
        samples, bounds = target_series(recording, target)
    finally:
        recording.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    ramp_ms = (START_S + RAMP_START_S) * 1000
    result = RampResult(scenario, kind, minutes, seed)
    for labels, points in samples.items():
        values = dict(labels)
        if any(values.get(k) != v for k, v in target.match.items()):
            continue
        key = values.get(target.per, "")
        bound = bounds.get(key, target.bound) if target.metric == "pgmq_queue_depth" else target.bound
        at_bound = [t for t, v in points if t >= ramp_ms and (v >= bound if target.direction == "up" else v <= bound)]
        bound_ms = at_bound[0] if at_bound else None
        warnings = [e for e in events if e["state"] == "firing" and _is(e["labels"], target, key, ALERT_NAME, target.metric)]
        early = [e for e in warnings if e["eval_time"] < ramp_ms]
        first = next((e for e in warnings if e["eval_time"] >= ramp_ms), None)
        critical_ms = None
        if target.critical:
            critical = [e["eval_time"] for e in events if e["state"] == "firing" and e["eval_time"] >= ramp_ms
                        and _is(e["labels"], target, key, target.critical)]
            critical_ms = critical[0] if critical else None
        deadline = critical_ms if target.critical else bound_ms
        warn_ms = first["eval_time"] if first is not None else None

        def lead(until: int | None) -> float:
            if until is None or warn_ms is None or warn_ms >= until:
                return 0.0
            return (until - warn_ms) / 60_000.0

        result.leads_min.append(lead(deadline))
        result.bound_leads_min.append(lead(bound_ms))
        result.early += len(early)
        eta = first["annotations"].get("eta_seconds") if first is not None else ""
        if eta and bound_ms is not None and warn_ms is not None and bound_ms > warn_ms:
            result.eta_ratio.append(float(eta) / ((bound_ms - warn_ms) / 1000.0))
        rel = (lambda t: None if t is None else round((t - ramp_ms) / 60_000.0, 2))
        result.detail.append({"series": key, "warned_min": rel(warn_ms), "critical_min": rel(critical_ms),
                              "bound_min": rel(bound_ms), "eta_s": eta, "early": len(early),
                              "text": first["annotations"].get("summary", "") if first is not None else ""})
    return result


@dataclass
class DayResult:
    scenario: str
    seed: int
    warnings: int
    by_series: dict
    rule_firings: dict


def measure_day(scenario: str, seed: int, workdir: Path, partitions: int) -> DayResult:
    recording, out = record_and_replay(scenario, seed, 24 * 60.0, workdir, partitions)
    try:
        events = alert_events(out)
    finally:
        recording.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    fired = [e for e in events if e["state"] == "firing"]
    warnings = Counter()
    rules = Counter()
    for e in fired:
        if e["rule"] == ALERT_NAME:
            labels = e["labels"]
            key = labels["metric"] + "{" + ",".join(f"{k}={labels[k]}" for k in ("queue_name", "worker_id", "channel")
                                                     if k in labels) + "}"
            warnings[f"{key}@{(e['eval_time'] // 1000 - START_S) / 3600:.2f}h"] += 1
        else:
            rules[e["rule"]] += 1
    return DayResult(scenario, seed, sum(warnings.values()), dict(warnings), dict(rules))


def _job(spec: tuple) -> RampResult | DayResult:
    kind, args, workdir, partitions = spec
    import contextlib
    import io

    # headroom record/replay print one line each and a progress bar on stderr: keep them off the bench's output
    with contextlib.redirect_stderr(io.StringIO()):
        if kind == "ramp":
            return measure_ramp(*args, Path(workdir), partitions)
        return measure_day(*args, Path(workdir), partitions)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.early_warning", description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("dev", "heldout", "both"), default="dev",
                        help="development seeds/days (choose knobs here), held-out ones (report only), or both")
    parser.add_argument("--quick", action="store_true", help="one seed and one benign day (default: 3 seeds, every day)")
    parser.add_argument("--seeds", type=int, help="simulator seeds per split, N of them (default 3, 1 with --quick)")
    parser.add_argument("--days", type=int, help="benign days per split, the first N of 3 (default all, 1 with --quick)")
    parser.add_argument("--skip-seeds", type=int, default=0, help="start after the split's first N seeds (more runs later)")
    parser.add_argument("--no-ramps", action="store_true", help="benign days only (false warnings, no lead times)")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4), help="worker processes")
    parser.add_argument("--partitions", type=int, default=1, help="partitions each replay emulates")
    parser.add_argument("--save", type=Path, help="also write the tables as Markdown here (and JSON beside it)")
    args = parser.parse_args(argv)
    splits = ("dev", "heldout") if args.split == "both" else (args.split,)
    n_seeds = args.seeds or (1 if args.quick else 3)
    console = Console(width=150)
    command = " ".join([".venv/bin/python -m bench.early_warning", *argv])
    console.print(f"[bold]{command}[/bold]")

    ramps = ramp_scenarios()
    plan = {}
    specs = []
    for split in splits:
        all_days, first_seed = SPLITS[split]
        seeds = list(range(first_seed + args.skip_seeds, first_seed + args.skip_seeds + n_seeds))
        days = all_days[: args.days or (1 if args.quick else len(all_days))]
        plan[split] = (seeds, days)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="headroom-early-warning-") as tmp:
        for split, (seeds, days) in plan.items():
            specs += [("day", (day, seed), tmp, args.partitions) for day in days for seed in seeds]
            specs += [("ramp", (name, kind, m, seed), tmp, args.partitions) for name, kind, m in ramps
                      for seed in seeds if not args.no_ramps]
        with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            results = list(pool.map(_job, specs))
    elapsed = time.perf_counter() - began

    tables = []
    detail = {"command": command, "splits": {}}
    for split, (seeds, days) in plan.items():
        mine = [r for r in results if r.seed in seeds]
        ramp_results = [r for r in mine if isinstance(r, RampResult)]
        day_results = [r for r in mine if isinstance(r, DayResult) and r.scenario in days]
        if args.no_ramps:
            shown = [false_table(SPLIT_NAMES[split], seeds, days, day_results)]
        else:
            shown = list(split_tables(SPLIT_NAMES[split], seeds, days, ramp_results, day_results))
        tables += shown
        for table in shown:
            table.render(console)
        for r in day_results:
            if r.warnings or r.rule_firings:
                console.print(f"[dim]{r.scenario} seed {r.seed}: {r.warnings} warning(s) {sorted(r.by_series)} "
                              f"rules {r.rule_firings}[/dim]")
        detail["splits"][split] = {"seeds": seeds, "days": list(days), "tables": [t.to_json() for t in shown],
                                   "ramps": [r.__dict__ for r in ramp_results],
                                   "benign_days": [r.__dict__ for r in day_results]}
    console.print(f"[dim]{len(specs)} recordings replayed in {elapsed:.0f} s with {args.jobs} processes[/dim]")
    console.print(f"[bold]{command}[/bold]")
    if args.save:
        args.save.write_text(f"`{command}`\n\n" + "\n".join(t.markdown() for t in tables))
        args.save.with_suffix(".json").write_text(json.dumps(detail, indent=1))
    return 0


def split_tables(split: str, seeds: list[int], days: tuple[str, ...], ramp_results: list[RampResult],
                 day_results: list[DayResult]) -> tuple[Table, Table]:
    """The lead-time and false-warning tables of one split (``split`` names it in the titles)."""
    lead = Table(f"Early warning [{split}: seeds {seeds[0]}..{seeds[-1]}]: lead time of the first SaturationForecast "
                 "before the runbook's critical rule",
                 f"`headroom record` (15 s scrapes) + `headroom replay --rules {' --rules '.join(PACKS)}`, default "
                 f"forecast settings; ramp from calm to the bound after {RAMP_START_S / 60:.0f} min of calm; "
                 "permits have no critical rule: lead before the first sample at 0; "
                 f"median over seeds {seeds[0]}..{seeds[-1]}; a scenario's figure is the median over its "
                 "ramping series (3 workers for permits); a miss counts 0")
    for m in RAMP_MINUTES:
        for kind in TARGETS:
            row = lead.row(f"ramp-{kind}-{m}m", "min", ratio=False)
            for r in ramp_results:
                if r.kind == kind and r.minutes == m:
                    row.add(statistics.median(r.leads_min))
    for m in RAMP_MINUTES:
        row = lead.row(f"median over the {m}-minute ramps (queue, channel, permits)", "min", ratio=False)
        for seed in seeds:
            row.add(statistics.median(v for r in ramp_results if r.minutes == m and r.seed == seed
                                      for v in r.leads_min))
    headline = lead.row("median over every ramp of >= 15 min", "min", ratio=False, target=5.0)
    bound_row = lead.row("... before the bound itself is recorded (ramps >= 15 min)", "min", ratio=False)
    missed = lead.row("ramping series not warned before the deadline, ramps >= 15 min", "%", ratio=False)
    warned = lead.row("incidents warned before the deadline (ramping series, ramps >= 15 min)", "count", ratio=False)
    of_row = lead.row("... out of (ramping series, ramps >= 15 min)", "count", ratio=False)
    missed_fast = lead.row("ramping series not warned before the deadline, 5-minute ramps", "%", ratio=False)
    ratio_row = lead.row("ETA at the first warning / real time to the bound (median)", "x", ratio=False)
    early_row = lead.row("warnings for the ramping series before the ramp began", "count", ratio=False,
                         target=0.0, lower_is_better=True)
    for seed in seeds:
        mine = [r for r in ramp_results if r.seed == seed]
        slow = [v for r in mine if r.minutes >= 15 for v in r.leads_min]
        headline.add(statistics.median(slow))
        bound_row.add(statistics.median(v for r in mine if r.minutes >= 15 for v in r.bound_leads_min))
        missed.add(100.0 * sum(1 for v in slow if v <= 0) / len(slow))
        warned.add(sum(1 for v in slow if v > 0))
        of_row.add(len(slow))
        fast = [v for r in mine if r.minutes < 15 for v in r.leads_min]
        missed_fast.add(100.0 * sum(1 for v in fast if v <= 0) / len(fast) if fast else float("nan"))
        ratios = [v for r in mine for v in r.eta_ratio]
        ratio_row.add(statistics.median(ratios) if ratios else float("nan"))
        early_row.add(sum(r.early for r in mine))

    return lead, false_table(split, seeds, days, day_results)


def false_table(split: str, seeds: list[int], days: tuple[str, ...], day_results: list[DayResult]) -> Table:
    """The false-warning table of one split."""
    false = Table(f"Early warning [{split}: {', '.join(days)}]: false SaturationForecast firings on benign days",
                  f"{len(days)} benign day(s) x {len(seeds)} seed(s), 24 h of event time each (daily load cycle, "
                  "bursts, no incident); every SaturationForecast that fires is false; runs = (day, seed) pairs")
    false_row = false.row("false SaturationForecast firings per benign day", "per day", ratio=False, target=1.0,
                          lower_is_better=True)
    rules_row = false.row("runbook rule firings per benign day (should be 0: no incident)", "per day", ratio=False,
                          target=0.0, lower_is_better=True)
    for r in day_results:
        false_row.add(r.warnings)
        rules_row.add(sum(r.rule_firings.values()))
    if day_results:
        false.row("false SaturationForecast firings per benign day (mean)", "per day", ratio=False).add(
            statistics.fmean(r.warnings for r in day_results))
    return false


if __name__ == "__main__":
    raise SystemExit(main())
