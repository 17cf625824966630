"""Early warning, leave-one-seed-out: the warning knobs chosen on four development seeds, scored on the fifth.

``.venv/bin/python -m bench.early_warning_loso [--grid small|wide|edge|tiny|rerun|rise|approach|rest|defaults] [--final] [--jobs J] [--save PATH]
[--cache DIR] [--final-from RUN.json]``

Data (:mod:`simulator.runbook`): each development seed ``s`` of ``LOSO_DEV_SEEDS`` (1-5) is one fold:
the ramp scenarios (queue, channel, permits to their bound in 5, 15, 30 and 60 minutes, after 40 minutes
of calm) with simulator seed ``s``; the *ramps after bursts* (``ramp_after_bursts``: the same series first
has 1-3 benign bursts to 60-78% of its bound that recover in the 3 hours before its ramp of 15, 30 or 60
minutes; bursts drawn with ``s``), which show what a gate that learns from recovered excursions costs;
and one 24-hour benign day per pattern of ``LOSO_DEV_PATTERNS`` ("everyday", "sharp", "load-bursts":
clusters of handler-pool bursts that drain the permits and recover), day script and simulator both seeded
``s``. The final check (``--final``) uses seeds ``LOSO_FINAL_SEEDS`` (201-203), their own draws of the
ramps after bursts, and patterns no knob was chosen on (``LOSO_FINAL_PATTERNS``: "everyday" on new day
seeds, "deploy-restarts", "traffic-spikes").

Each recording is made once by ``headroom record``'s code. Ramps are also replayed once by
``headroom replay``'s code with the runbook's packs and default forecast settings, for the time the
critical rule fires (the deadline; for permits, which have no critical rule, the first sample at 0) and
as a check: the bench's own forecast run with default settings must warn at the same times (mismatches
are printed). Then the forecast series of the recording go through a :class:`ForecastEngine` once per
knob setting of the grid (the rules do not depend on those knobs, so they are not evaluated again).
Grid ``rise`` adds the dip gate's rise test (``rise_margin``: off, 0, 2.5, 5 or 10 minutes) to the
depth gate as chosen before (24 h, 0.25); grid ``approach`` its approach test (``approach_margin``: off,
0, 0.25, 0.5 or 1) to the depth and rise tests as chosen (24 h, 0.25, 5 minutes).

Protocol: for each fold, every setting of the grid is scored on the other four seeds and one is chosen
by a stated objective (:func:`choose`): among the settings with at most ``MAX_FALSE_PER_DAY`` false
warnings per benign day, the most incidents warned (ramping series of ramps of 15 minutes or more
warned before their deadline), then the longest median lead; ties go to the setting closest to the
defaults (fewest knobs changed, then grid order). When no setting meets the false-warning bound, the
fewest false warnings per day, then warned, then lead. The chosen setting is then scored on the
held-out seed. Pooled figures are over the five held-out folds (150 incidents: 75 ramps after calm and
75 after bursts; 15 benign days); ramps after bursts are also reported apart.
``--final`` then chooses once on all five development seeds and scores that setting once on the final
seeds (defaults shown beside it, for comparison only).

Figures: lead = time from the first ``SaturationForecast`` firing for a ramping series (at or after the
ramp began) to its deadline; a warning after the deadline, or none, is a miss and counts 0 in medians.
False warnings = every ``SaturationForecast`` firing on a benign day (any series; the channel's
``mpsc_channel_saturation`` twin counts on its own, as in ``bench.early_warning``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench.early_warning import (START_S, TARGETS, _is, alert_events, ramp_scenarios, record_and_replay,
                                  target_series)
from detector.forecast import ALERT_NAME
from detector.forecast.engine import ForecastEngine
from detector.forecast.spec import DEFAULT_SPECS, ForecastConfig, ForecastSettings, recognise
from simulator.runbook import (AFTER_BURSTS_MINUTES, LOSO_DEV_PATTERNS, LOSO_DEV_SEEDS, LOSO_FINAL_PATTERNS,
                               LOSO_FINAL_SEEDS, RAMP_HOLD_S, RAMP_RECOVER_S, loso_day, ramp_after_bursts, ramp_start_s)

MAX_FALSE_PER_DAY = 0.5
SLOW_MINUTES = 15  # ramps of at least this many minutes carry the lead and warned figures
DEFAULTS = ForecastSettings()
KNOBS = ("dip_memory_s", "dip_margin", "min_used", "rise_margin_s", "approach_margin", "dip_rest_margin")
GRIDS = {  # knob -> values; the settings are their product (the defaults are always among them)
    "small": {"dip_memory_s": (6 * 3600.0, 12 * 3600.0, 24 * 3600.0), "dip_margin": (0.05, 0.1, 0.15),
              "min_used": (0.7,)},
    "wide": {"dip_memory_s": (6 * 3600.0, 12 * 3600.0, 24 * 3600.0), "dip_margin": (0.05, 0.1, 0.15),
             "min_used": (0.65, 0.7, 0.75)},
    # the small grid's choice sat on its edge (dip_margin 0.15): the same objective over larger margins
    "edge": {"dip_memory_s": (12 * 3600.0, 24 * 3600.0), "dip_margin": (0.15, 0.2, 0.25, 0.3), "min_used": (0.7,)},
    "tiny": {"dip_memory_s": (6 * 3600.0, 24 * 3600.0), "dip_margin": (0.05, 0.1), "min_used": (0.7,)},
    # once ramps after bursts count: the old defaults (6 h, 0.05), the previous ones (24 h, 0.25) and between
    "rerun": {"dip_memory_s": (6 * 3600.0, 12 * 3600.0, 24 * 3600.0), "dip_margin": (0.05, 0.1, 0.15, 0.2, 0.25),
              "min_used": (0.7,)},
    # the dip gate's rise test (rise_margin: off, or how much longer than the longest recovered rise the
    # current one must be) beside the depth gate as chosen (24 h, 0.25)
    "rise": {"dip_memory_s": (24 * 3600.0,), "dip_margin": (0.25,), "rise_margin_s": (None, 0.0, 150.0, 300.0, 600.0)},
    # the gate's approach test (approach_margin: off, or by how much shorter than the shortest ETA of a
    # recovered excursion the current one must be, once the rise is as long as theirs) beside the
    # depth and rise tests as chosen (24 h, 0.25, 5 min)
    "approach": {"dip_memory_s": (24 * 3600.0,), "dip_margin": (0.25,), "rise_margin_s": (300.0,),
                 "approach_margin": (None, 0.0, 0.25, 0.5, 1.0)},
    # the depth test's margin as a share of what the deepest recovered excursion left (dip_rest_margin:
    # off, i.e. dip_margin 0.25 of the whole headroom, or 0.25 / 0.5 / 0.75 of the rest) beside the
    # rise and approach tests as chosen (24 h, 5 min, 0.5)
    "rest": {"dip_memory_s": (24 * 3600.0,), "dip_margin": (0.25,), "rise_margin_s": (300.0,),
             "approach_margin": (0.5,), "dip_rest_margin": (None, 0.25, 0.5, 0.75)},
    # the defaults alone: fills the cache (record and replay) and gives their in-sample figures
    "defaults": {"rise_margin_s": (DEFAULTS.rise_margin_s,)},
}


def grid_settings(grid: dict) -> list[dict]:
    """The knob settings of a grid, defaults first, then by how many knobs differ from the defaults."""
    names = list(grid)
    found = [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]
    default = {n: getattr(DEFAULTS, n) for n in names}
    if default not in found:
        found.insert(0, default)
    return sorted(found, key=lambda s: changed(s))


def changed(setting: dict) -> int:
    """How many knobs of ``setting`` differ from the defaults."""
    return sum(1 for k, v in setting.items() if getattr(DEFAULTS, k) != v)


def label(setting: dict) -> str:
    parts = []
    for k, v in setting.items():
        if k == "dip_memory_s":
            parts.append(f"dip_memory={v / 3600:g}h")
        elif k == "rise_margin_s":
            parts.append("rise_margin=off" if v is None else f"rise_margin={v / 60:g}m")
        elif v is None:
            parts.append(f"{k}=off")
        else:
            parts.append(f"{k}={v:g}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- one recording


def _forecast_samples(recording: Path) -> tuple[list, dict[int, list[tuple[int, float]]]]:
    """The recording's series a default forecast spec recognises (or pairs as a bound), grouped by time."""
    from detector.labels import metric_name
    from detector.wire.openmetrics import read_samples

    bounds = {"pgmq_queue_max_depth"}
    with recording.open() as fd:
        lines = [line for line in fd if not line.startswith("#")
                 and (line.split("{", 1)[0].endswith(("_saturation", "_permits_available", "_depth")))]
    keys: dict = {}
    by_time: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for labels, t_ms, value in read_samples(lines):
        name = metric_name(labels)
        if name not in bounds and recognise(labels, DEFAULT_SPECS) is None:
            continue
        by_time[t_ms].append((keys.setdefault(labels, len(keys)), value))
    return list(keys), by_time


def run_forecasts(keys: list, by_time: dict, setting: dict) -> list:
    """Every early-warning state change of one forecast engine with ``setting`` over the samples."""
    engine = ForecastEngine(ForecastConfig(settings=replace(DEFAULTS, **setting)))
    events = []
    for t_ms in sorted(by_time):
        rows = by_time[t_ms]
        events += engine.ingest(keys, [r for r, _ in rows], [t_ms] * len(rows), [v for _, v in rows])
    return events


@dataclass
class RampRun:
    scenario: str
    kind: str
    minutes: int
    seed: int
    after_bursts: bool = False  # a ramp after benign bursts of the same series (else after calm)
    deadline_min: dict = field(default_factory=dict)  # series -> deadline, minutes after the ramp began (None: never)
    warned_min: list = field(default_factory=list)  # per setting: series -> first warning (minutes; None: none)
    early: list = field(default_factory=list)  # per setting: warnings of the ramping series before the ramp
    mismatches: int = 0  # ramping series whose replay warning differs from the bench's default run


@dataclass
class DayRun:
    scenario: str
    pattern: str
    seed: int
    warnings: list = field(default_factory=list)  # per setting: ["series@hour", ...]


def _cached(cache: Path | None, name: str, make):
    """``make()``, or what it returned before for ``name`` (keyed by the simulator's source too, and by the
    default forecast settings, with which ``headroom replay``'s warnings of the check were made)."""
    if cache is None:
        return make()
    import hashlib
    import pickle

    import simulator.runbook

    # a knob that is off (None) leaves replay's warnings as they were: adding one keeps the cache valid
    replay = [(k, v) for k, v in asdict(DEFAULTS).items() if v is not None]
    digest = hashlib.sha256(Path(simulator.runbook.__file__).read_bytes() + repr(replay).encode()).hexdigest()[:12]
    path = cache / f"{name}-{digest}.pickle"
    if path.exists():
        return pickle.loads(path.read_bytes())
    found = make()
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}")
    partial.write_bytes(pickle.dumps(found))
    partial.replace(path)
    return found


def ramp_job(scenario: str, kind: str, minutes: int, seed: int, settings: list[dict], workdir: Path,
             cache: Path | None = None) -> RampRun:
    series, deadline_min, replay_first, keys, by_time = _cached(
        cache, f"{scenario}-s{seed}", lambda: _ramp_data(scenario, kind, minutes, seed, workdir))
    target = TARGETS[kind]
    ramp_ms = (START_S + ramp_start_s(scenario)) * 1000
    rel = (lambda t: None if t is None else (t - ramp_ms) / 60_000.0)
    run = RampRun(scenario, kind, minutes, seed, scenario.startswith("ramp-after-bursts-"), deadline_min=deadline_min)
    for setting in settings:
        fired = [e for e in run_forecasts(keys, by_time, setting) if e.state == "firing"]
        first, early = {}, 0
        for key in series:
            mine = [e.t_ms for e in fired if dict(e.labels).get("__name__") == target.metric
                    and all(dict(e.labels).get(k) == v for k, v in target.match.items())
                    and dict(e.labels).get(target.per, "") == key]
            after = [t for t in mine if t >= ramp_ms]
            first[key] = rel(after[0]) if after else None
            early += sum(1 for t in mine if t < ramp_ms)
        run.warned_min.append(first)
        run.early.append(early)
    default_at = settings.index({k: getattr(DEFAULTS, k) for k in settings[0]})
    run.mismatches = sum(1 for key in series if replay_first[key] != run.warned_min[default_at][key])
    return run


def _ramp_data(scenario: str, kind: str, minutes: int, seed: int, workdir: Path) -> tuple:
    """(ramping series, deadline per series, replay's first warning per series, forecast samples)."""
    target = TARGETS[kind]
    length = (ramp_start_s(scenario) + 60.0 * minutes + RAMP_HOLD_S + RAMP_RECOVER_S) / 60.0 + 5.0
    recording, out = record_and_replay(scenario, seed, length, workdir, 1)
    try:
        events = alert_events(out)
        samples, bounds = target_series(recording, target)
        keys, by_time = _forecast_samples(recording)
    finally:
        recording.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
    ramp_ms = (START_S + ramp_start_s(scenario)) * 1000
    rel = (lambda t: None if t is None else (t - ramp_ms) / 60_000.0)
    series = []
    replay_first = {}
    deadline_min = {}
    for labels, points in samples.items():
        values = dict(labels)
        if any(values.get(k) != v for k, v in target.match.items()):
            continue
        key = values.get(target.per, "")
        series.append(key)
        if target.critical:
            fired = [e["eval_time"] for e in events if e["state"] == "firing" and e["eval_time"] >= ramp_ms
                     and _is(e["labels"], target, key, target.critical)]
            deadline = fired[0] if fired else None
        else:
            bound = target.bound
            at = [t for t, v in points if t >= ramp_ms and (v >= bound if target.direction == "up" else v <= bound)]
            deadline = at[0] if at else None
        deadline_min[key] = rel(deadline)
        warns = [e["eval_time"] for e in events if e["state"] == "firing" and e["eval_time"] >= ramp_ms
                 and _is(e["labels"], target, key, ALERT_NAME, target.metric)]
        replay_first[key] = rel(warns[0]) if warns else None
    return series, deadline_min, replay_first, keys, by_time


def day_job(scenario: str, pattern: str, seed: int, settings: list[dict], workdir: Path,
            cache: Path | None = None) -> DayRun:
    keys, by_time = _cached(cache, f"{scenario}-s{seed}", lambda: _day_data(scenario, seed, workdir))
    run = DayRun(scenario, pattern, seed)
    for setting in settings:
        fired = [e for e in run_forecasts(keys, by_time, setting) if e.state == "firing"]
        run.warnings.append([f"{_short(e.labels)}@{(e.t_ms / 1000 - START_S) / 3600:.2f}h" for e in fired])
    return run


def _day_data(scenario: str, seed: int, workdir: Path) -> tuple:
    from pipelines.replay_cli import record

    recording = workdir / f"{scenario}-s{seed}.om"
    record.main([str(recording), "--scenario", scenario, "--minutes", "1440", "--step", "15", "--seed", str(seed),
                 "--start", str(START_S)], standalone_mode=False)
    try:
        return _forecast_samples(recording)
    finally:
        recording.unlink(missing_ok=True)


def _short(labels) -> str:
    values = dict(labels)
    extra = ",".join(f"{k}={values[k]}" for k in ("queue_name", "worker_id", "channel") if k in values)
    return f"{values.get('__name__', '')}{{{extra}}}"


def _job(spec: tuple) -> RampRun | DayRun:
    kind, args, settings, workdir, cache = spec
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        if kind == "ramp":
            return ramp_job(*args, settings, Path(workdir), cache)
        return day_job(*args, settings, Path(workdir), cache)


# --------------------------------------------------------------------------- scoring and choosing


@dataclass(frozen=True)
class Score:
    """Figures of one setting on some seeds."""

    warned: int
    incidents: int
    lead_min: float  # median over the incidents (ramps >= SLOW_MINUTES), misses 0
    false: int
    days: int
    early: int

    @property
    def false_per_day(self) -> float:
        return self.false / self.days if self.days else float("nan")

    @property
    def warned_share(self) -> float:
        return self.warned / self.incidents if self.incidents else float("nan")


def leads(runs: list[RampRun], i: int, slow_only: bool = True) -> list[float]:
    """Lead in minutes of each ramping series under setting ``i`` (0 for a miss)."""
    found = []
    for run in runs:
        if slow_only and run.minutes < SLOW_MINUTES:
            continue
        for key, deadline in run.deadline_min.items():
            warned = run.warned_min[i][key]
            found.append(0.0 if deadline is None or warned is None or warned >= deadline else deadline - warned)
    return found


def score(ramps: list[RampRun], days: list[DayRun], i: int) -> Score:
    lead = leads(ramps, i)
    return Score(warned=sum(1 for v in lead if v > 0), incidents=len(lead),
                 lead_min=statistics.median(lead) if lead else float("nan"),
                 false=sum(len(d.warnings[i]) for d in days), days=len(days),
                 early=sum(r.early[i] for r in ramps))


def choose(scores: list[Score], max_false_per_day: float = MAX_FALSE_PER_DAY) -> int:
    """Index of the chosen setting: scores are in tie-break order (closest to the defaults first).

    Among those with at most ``max_false_per_day``, the most incidents warned, then the longest
    median lead; when none qualifies, the fewest false warnings per day, then warned, then lead.

    >>> s = lambda warned, lead, false: Score(warned, 10, lead, false, 4, 0)
    >>> choose([s(10, 6.0, 4), s(10, 5.0, 2), s(10, 5.0, 1), s(9, 9.0, 0)])   # 1 and 2 tie: the first
    1
    >>> choose([s(10, 6.0, 4), s(9, 9.0, 3)])                                 # none under 0.5 a day
    1
    """
    ok = [i for i, s in enumerate(scores) if s.false_per_day <= max_false_per_day]
    if ok:
        return max(ok, key=lambda i: (scores[i].warned_share, scores[i].lead_min, -i))
    return max(range(len(scores)), key=lambda i: (-scores[i].false_per_day, scores[i].warned_share,
                                                   scores[i].lead_min, -i))


# --------------------------------------------------------------------------- report


def fmt(s: Score) -> str:
    return (f"lead {s.lead_min:.2f} min, warned {s.warned}/{s.incidents}, false {s.false}/{s.days} days = "
            f"{s.false_per_day:.2f}/day, early {s.early}")


def by_kind(ramps: list[RampRun], days: list[DayRun], pick) -> list[str]:
    """Lines per ramp family (after calm, after bursts), kind and minutes, and per benign pattern;
    ``pick(seed)`` is the setting index used."""
    lines = []
    for after, family in ((False, "ramp"), (True, "ramp-after-bursts")):
        mine = [r for r in ramps if r.after_bursts == after]
        for kind in TARGETS:
            for minutes in sorted({r.minutes for r in mine}):
                lead = [v for r in mine if r.kind == kind and r.minutes == minutes for v in leads([r], pick(r.seed), False)]
                if lead:
                    lines.append(f"{family}-{kind}-{minutes}m: median lead {statistics.median(lead):.2f} min, "
                                 f"warned {sum(1 for v in lead if v > 0)}/{len(lead)}")
            slow = [v for r in mine if r.kind == kind for v in leads([r], pick(r.seed))]
            if slow:
                lines.append(f"{family}-{kind}, ramps >= {SLOW_MINUTES} min: median lead "
                             f"{statistics.median(slow):.2f} min, warned {sum(1 for v in slow if v > 0)}/{len(slow)}")
        every = [v for r in mine for v in leads([r], pick(r.seed))]
        if every:
            lines.append(f"**{family}, all kinds, ramps >= {SLOW_MINUTES} min**: median lead "
                         f"{statistics.median(every):.2f} min, warned {sum(1 for v in every if v > 0)}/{len(every)}, "
                         f"warnings of the ramping series before the ramp {sum(r.early[pick(r.seed)] for r in mine)}")
    for pattern in sorted({d.pattern for d in days}):
        mine = [d for d in days if d.pattern == pattern]
        n = sum(len(d.warnings[pick(d.seed)]) for d in mine)
        lines.append(f"benign {pattern}: {n} false warnings / {len(mine)} days = {n / len(mine):.2f}/day")
    return lines


def plan(seeds, patterns, settings, workdir, cache: Path | None = None) -> list[tuple]:
    # ramps first: their record + replay take longest, so the pool's last jobs are short
    # ramps after bursts first: they are the longest recordings
    specs = [("ramp", (ramp_after_bursts(kind, m, s), kind, m, s), settings, workdir, cache) for s in seeds
             for m in reversed(AFTER_BURSTS_MINUTES) for kind in TARGETS]
    specs += [("ramp", (name, kind, m, s), settings, workdir, cache) for s in seeds
              for name, kind, m in reversed(ramp_scenarios())]
    specs += [("day", (loso_day(p, s), p, s), settings, workdir, cache) for s in seeds for p in patterns]
    return specs


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.early_warning_loso", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="small", help="knob settings to choose among")
    parser.add_argument("--final", action="store_true",
                        help="also score the setting chosen on all development seeds on the final seeds (once)")
    parser.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 2), help="worker processes")
    parser.add_argument("--save", type=Path, help="write the report here (and its JSON beside it)")
    parser.add_argument("--cache", type=Path, help="keep each recording's forecast samples, deadlines and replay "
                        "warnings here, so a later run with other settings skips record and replay")
    parser.add_argument("--final-from", type=Path, help="skip the development folds: score the setting a saved "
                        "run (its --save JSON) chose on all development seeds on the final seeds, once")
    args = parser.parse_args(argv)
    if args.final_from:
        return final_from(args, argv)
    settings = grid_settings(GRIDS[args.grid])
    command = " ".join([".venv/bin/python -m bench.early_warning_loso", *argv])
    out: list[str] = [f"`{command}`", ""]

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    say(f"{len(settings)} settings of {', '.join(GRIDS[args.grid])}; defaults: {label(settings[0])}")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="headroom-ew-loso-") as tmp:
        specs = plan(LOSO_DEV_SEEDS, LOSO_DEV_PATTERNS, settings, tmp, args.cache)
        final_specs = plan(LOSO_FINAL_SEEDS, LOSO_FINAL_PATTERNS, None, tmp, args.cache) if args.final else []
        with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            results = list(pool.map(_job, specs))
            dev_ramps = [r for r in results if isinstance(r, RampRun)]
            dev_days = [r for r in results if isinstance(r, DayRun)]
            say(f"development: {len(results)} recordings in {time.perf_counter() - began:.0f} s")

            say("\n## Leave-one-seed-out (development seeds; each fold chooses on the other four)")
            chosen_by_seed = {}
            pooled = {"lead": [], "false": 0, "days": 0, "early": 0}
            for seed in LOSO_DEV_SEEDS:
                train_r = [r for r in dev_ramps if r.seed != seed]
                train_d = [d for d in dev_days if d.seed != seed]
                pick = choose([score(train_r, train_d, i) for i in range(len(settings))])
                chosen_by_seed[seed] = pick
                test_r = [r for r in dev_ramps if r.seed == seed]
                test_d = [d for d in dev_days if d.seed == seed]
                test = score(test_r, test_d, pick)
                default = score(test_r, test_d, 0)
                say(f"- fold {seed}: chose {label(settings[pick])} (on seeds {[s for s in LOSO_DEV_SEEDS if s != seed]}: "
                    f"{fmt(score(train_r, train_d, pick))})")
                say(f"  held-out seed {seed}: {fmt(test)} | defaults: {fmt(default)}")
                after = [r for r in test_r if r.after_bursts]
                say(f"  ... of which ramps after bursts: {fmt(score(after, [], pick))} | defaults: {fmt(score(after, [], 0))}")
                pooled["lead"] += leads(test_r, pick)
                pooled["false"] += test.false
                pooled["days"] += test.days
                pooled["early"] += test.early
            lead = pooled["lead"]
            pooled_score = Score(sum(1 for v in lead if v > 0), len(lead), statistics.median(lead), pooled["false"],
                                 pooled["days"], pooled["early"])
            say(f"- **pooled over the held-out folds**: {fmt(pooled_score)}")
            dflt = score(dev_ramps, dev_days, 0)
            say(f"- same seeds, defaults (no choice): {fmt(dflt)}")
            say("\nPer kind (held-out folds, each with its fold's choice):")
            for line in by_kind(dev_ramps, dev_days, lambda s: chosen_by_seed[s]):
                say(f"  - {line}")
            say("\nEvery setting on all development seeds (in-sample):")
            all_scores = [score(dev_ramps, dev_days, i) for i in range(len(settings))]
            for i, s in enumerate(all_scores):
                say(f"  - {label(settings[i])}: {fmt(s)}")
            final_pick = choose(all_scores)
            say(f"\nChosen on all development seeds: {label(settings[final_pick])}")
            mismatches = sum(r.mismatches for r in dev_ramps)
            say(f"check: ramping series whose `headroom replay` warning differs from the bench's default run: "
                f"{mismatches}")
            for d in dev_days:
                for i in sorted({0, final_pick}):
                    if d.warnings[i]:
                        say(f"  [{label(settings[i])}] {d.scenario} seed {d.seed}: {d.warnings[i]}")

            final_data = {}
            if args.final:
                final_settings = [settings[0]] + ([settings[final_pick]] if final_pick else [])
                final_specs = [(k, a, final_settings, w, c) for k, a, _, w, c in final_specs]
                t0 = time.perf_counter()
                final = list(pool.map(_job, final_specs))
                f_ramps = [r for r in final if isinstance(r, RampRun)]
                f_days = [r for r in final if isinstance(r, DayRun)]
                at = len(final_settings) - 1
                say(f"\n## Final check, seeds {list(LOSO_FINAL_SEEDS)}, patterns {list(LOSO_FINAL_PATTERNS)} "
                    f"({len(final)} recordings in {time.perf_counter() - t0:.0f} s), scored once")
                say(f"- **chosen ({label(settings[final_pick])})**: {fmt(score(f_ramps, f_days, at))}")
                if at:
                    say(f"- defaults, for comparison only: {fmt(score(f_ramps, f_days, 0))}")
                for seed in LOSO_FINAL_SEEDS:
                    say(f"  - seed {seed}: {fmt(score([r for r in f_ramps if r.seed == seed], [d for d in f_days if d.seed == seed], at))}")
                say("Per kind (chosen setting):")
                for line in by_kind(f_ramps, f_days, lambda s: at):
                    say(f"  - {line}")
                for d in f_days:
                    if d.warnings[at]:
                        say(f"  {d.scenario} seed {d.seed}: {d.warnings[at]}")
                say(f"check: replay mismatches {sum(r.mismatches for r in f_ramps)}")
                final_data = {"settings": final_settings, "ramps": [r.__dict__ for r in f_ramps],
                              "days": [d.__dict__ for d in f_days]}
    say(f"\n{time.perf_counter() - began:.0f} s with {args.jobs} processes")
    if args.save:
        args.save.write_text("\n".join(out) + "\n")
        args.save.with_suffix(".json").write_text(json.dumps({
            "command": command, "settings": settings, "chosen_by_fold": {str(k): v for k, v in chosen_by_seed.items()},
            "chosen": final_pick, "ramps": [r.__dict__ for r in dev_ramps], "days": [d.__dict__ for d in dev_days],
            "final": final_data}, indent=1))
    return 0


def final_from(args, argv: list[str]) -> int:
    """The final check alone, for the setting a saved development run chose (the same report lines)."""
    saved = json.loads(args.final_from.read_text())
    chosen = saved["settings"][saved["chosen"]]
    final_settings = [saved["settings"][0]] + ([chosen] if saved["chosen"] else [])
    lines = [f"`.venv/bin/python -m bench.early_warning_loso {' '.join(argv)}`", "",
             f"setting chosen on all development seeds by `{saved['command']}`: {label(chosen)}"]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="headroom-ew-loso-") as tmp:
        specs = plan(LOSO_FINAL_SEEDS, LOSO_FINAL_PATTERNS, final_settings, tmp, args.cache)
        with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            final = list(pool.map(_job, specs))
    f_ramps = [r for r in final if isinstance(r, RampRun)]
    f_days = [r for r in final if isinstance(r, DayRun)]
    at = len(final_settings) - 1
    lines.append(f"## Final check, seeds {list(LOSO_FINAL_SEEDS)}, patterns {list(LOSO_FINAL_PATTERNS)}, scored once")
    lines.append(f"- **chosen ({label(chosen)})**: {fmt(score(f_ramps, f_days, at))}")
    if at:
        lines.append(f"- defaults, for comparison only: {fmt(score(f_ramps, f_days, 0))}")
    for seed in LOSO_FINAL_SEEDS:
        lines.append(f"  - seed {seed}: {fmt(score([r for r in f_ramps if r.seed == seed], [d for d in f_days if d.seed == seed], at))}")
    lines += [f"  - {line}" for line in by_kind(f_ramps, f_days, lambda s: at)]
    lines += [f"  {d.scenario} seed {d.seed}: {d.warnings[at]}" for d in f_days if d.warnings[at]]
    lines.append(f"check: replay mismatches {sum(r.mismatches for r in f_ramps)}")
    lines.append(f"{time.perf_counter() - began:.0f} s with {args.jobs} processes")
    print("\n".join(lines))
    if args.save:
        args.save.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
