"""NAB on the development split: ``headroom score-csv``'s code over every file, then NAB's scorer.

    .venv/bin/python -m bench.nab [--model NAME] [--param NAME=VALUE ...] [--runs N]
                                  [--save-thresholds] [--thresholds F]
    .venv/bin/python -m bench.nab --loco [--json F]
    .venv/bin/python -m bench.nab --corpus machine [--dev-seeds 1,2,3] [--held-out-seeds 101,102,103]

Every data file of ``../shared/nab/data`` is streamed row by row through
:func:`pipelines.score_csv_cli.score_file` (one configuration for all files, no
look-ahead), into ``RESULTS/<detector>/<category>/<detector>_<file>.csv`` under
a temporary directory; then ``../shared/nab/score.py`` scores them as the split's
README says. A baseline is measured in the same run: river's GaussianScorer,
one per file, guarded for constant series (the README's reference row).

Printed: standard / low-FP / low-FN normalized scores and the thresholds the
scorer chose, and per category the windows detected, false-positive rows and
the category's own normalized standard score (its raw score against its own
null and perfect detectors). ``--save-thresholds`` keeps the chosen thresholds
in bench/nab_thresholds.json; ``--thresholds F`` applies frozen ones instead
of sweeping (the honest protocol for data not tuned on). ``--loco`` reports
nested leave-one-category-out figures instead (:mod:`bench.nab_loco`): every
knob chosen on the other categories, scored on the held-out one.
``--corpus machine`` scores the generated machine-metrics corpus instead
(:mod:`bench.nab_corpus`): development seeds, then held-out seeds with the
threshold frozen. ``--param`` runs the
default model with some of its :class:`~detector.anomaly.Params` changed (an
ablation, e.g. ``--param shape_max=0 --param interval_ref=0`` for the detector
without its generalized Pareto tails and per-time calibration), registered for
this run only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines.score_csv_cli import score_file

REPO = Path(__file__).resolve().parent.parent
# ../shared/nab of the main checkout; a worktree (/work/wt/<name>) finds it further up
NAB = next((p / "shared" / "nab" for p in REPO.parents if (p / "shared" / "nab").is_dir()), REPO.parent / "shared" / "nab")
THRESHOLDS = REPO / "bench" / "nab_thresholds.json"
PROFILES = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
PROFILE_WEIGHTS = {
    "standard": (1.0, 1.0),
    "reward_low_FP_rate": (1.0, 1.0),
    "reward_low_FN_rate": (1.0, 2.0),
}  # (tp, fn) weights, as in config/profiles.json
BASELINE = ("rivergaussian", "river-gaussian")


def ablation(model: str, params: list[str]) -> tuple[str, str]:
    """Register ``model`` with some Params changed, for this run only; (detector name, model name)."""
    import dataclasses

    from detector.anomaly import MODELS, ColumnarState, Params

    base = MODELS[model]().params
    fields = {f.name: f for f in dataclasses.fields(Params)}
    changes = {}
    for item in params:
        name, _, text = item.partition("=")
        if name not in fields:
            raise SystemExit(f"--param {item}: unknown parameter; known: {sorted(fields)}")
        kind = type(getattr(base, name))
        changes[name] = (text.lower() in ("1", "true", "yes")) if kind is bool else kind(text)
    tuned = dataclasses.replace(base, **changes)
    tag = "-".join(f"{k.replace('_', '')}{v}" for k, v in changes.items())
    name = f"{model}+{tag}"
    MODELS[name] = lambda: ColumnarState(tuned)
    detector = "headroom" + ("" if model == "default" else model.replace("_", "").replace("-", "")) + "-" + tag
    return detector, name


def data_files(nab: Path) -> list[str]:
    windows = json.loads((nab / "labels" / "windows_dev.json").read_text())
    return sorted(windows)


def score_all(nab: Path, results: Path, detector: str, model: str) -> float:
    """Score every file with one model; returns the seconds it took."""
    start = time.perf_counter()
    for rel in data_files(nab):
        category, name = rel.split("/")
        out = results / detector / category / f"{detector}_{name}"
        out.parent.mkdir(parents=True, exist_ok=True)
        score_file(str(nab / "data" / rel), str(out), model)
    return time.perf_counter() - start


def run_scorer(nab: Path, results: Path, detectors: list[str], out_json: Path,
               save: Path | None, frozen: Path | None) -> tuple[list[str], str]:
    cmd = [
        sys.executable, str(nab / "score.py"), "--nab-root", str(nab),
        "--windows", str(nab / "labels" / "windows_dev.json"),
        "--results-dir", str(results), "-d", ",".join(detectors), "--per-file", "--json", str(out_json),
    ]
    if save is not None:
        cmd += ["--save-thresholds", str(save)]
    if frozen is not None:
        cmd += ["--thresholds", str(frozen)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return cmd, done.stdout


def per_category(profile: dict, name: str) -> dict[str, dict]:
    tp_w, fn_w = PROFILE_WEIGHTS[name]
    cats: dict[str, dict] = {}
    for rel, f in profile["per_file"].items():
        c = cats.setdefault(rel.split("/")[0], {"raw": 0.0, "windows": 0, "detected": 0, "fp_rows": 0})
        c["raw"] += f["score"]
        c["windows"] += f["windows"]
        c["detected"] += f["windows_detected"]
        c["fp_rows"] += f["fp_rows"]
    for c in cats.values():
        null, perfect = -fn_w * c["windows"], tp_w * c["windows"]
        c["normalized"] = 100.0 * (c["raw"] - null) / (perfect - null) if c["windows"] else None
    return cats


def report(console: Console, results: dict, labels: dict[str, str], seconds: dict[str, list[float]]) -> dict:
    summary = {}
    table = Table(title="NAB dev split (normalized; 100 = perfect, 0 = null detector)")
    for col in ("detector", "model", "standard", "low FP", "low FN", "thresholds", "scoring s/run"):
        table.add_column(col, justify="right" if col not in ("detector", "model") else "left")
    for det, r in results.items():
        pr = r["profiles"]
        table.add_row(
            det, labels[det], *(f"{pr[p]['normalized']:.2f}" for p in PROFILES),
            "/".join(f"{pr[p]['threshold']:.4g}" for p in PROFILES),
            f"{statistics.median(seconds[det]):.1f}",
        )
        summary[det] = {p: pr[p]["normalized"] for p in PROFILES} | {
            "thresholds": {p: pr[p]["threshold"] for p in PROFILES},
            "categories": {c: v for c, v in per_category(pr["standard"], "standard").items()},
        }
    console.print(table)
    cat_table = Table(title="Per category, standard profile: windows detected, FP rows, normalized")
    cat_table.add_column("category")
    for det in results:
        cat_table.add_column(det, justify="right")
    cats = sorted(summary[next(iter(summary))]["categories"])
    for c in cats:
        cells = []
        for det in results:
            v = summary[det]["categories"][c]
            norm = "-" if v["normalized"] is None else f"{v['normalized']:.1f}"
            cells.append(f"{v['detected']}/{v['windows']}  fp {v['fp_rows']}  {norm}")
        cat_table.add_row(c, *cells)
    console.print(cat_table)
    return summary


def measure_cost(console: Console, n_series: int = 10_000, seconds: float = 3.0) -> dict:
    """Samples per second on one core: the default model's batch API against river per sample.

    Messages like the receiver's: 2000 series x 1 sample and 1000 series x 10
    samples, drawn from ``n_series`` series; river's models are timed with a
    ``score_one`` then ``learn_one`` per sample, in the same run.
    """
    import numpy as np

    from detector.anomaly import AnomalyScorer, make_model

    rng = np.random.default_rng(0)
    out: dict[str, float] = {}

    def batch_rate(per_msg_series: int, per_series: int) -> float:
        scorer = AnomalyScorer("default", counter=lambda key: False)
        rows_all = scorer.rows_for([b"s%d" % i for i in range(n_series)])
        done, t = 0, 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            pick = rng.choice(rows_all, per_msg_series, replace=False)
            rows = np.repeat(pick, per_series)
            stamps = np.tile(np.arange(per_series, dtype=float), per_msg_series) * 15.0 + t * 15.0 * per_series
            scorer.score(rows, stamps, rng.normal(size=len(rows)))
            done += len(rows)
            t += 1
        return done / (time.perf_counter() - start)

    out["default batch 2000x1"] = batch_rate(2000, 1)
    out["default batch 1000x10"] = batch_rate(1000, 10)
    scorer = AnomalyScorer("default", counter=lambda key: False)
    single = scorer.rows_for([b"one"])
    xs = rng.normal(size=20_000)
    start = time.perf_counter()
    scorer.score(np.repeat(single, len(xs)), np.arange(len(xs)) * 15.0, xs)
    out["default one series (score-csv)"] = len(xs) / (time.perf_counter() - start)
    for name in ("river-gaussian", "river-hst"):
        model = make_model(name)
        model.grow(100)
        rows = np.arange(100)
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.run(rows, np.full(100, n * 15.0), rng.normal(size=100))
            n += 1
        out[f"{name} per sample"] = 100 * n / (time.perf_counter() - start)
    table = Table(title=f"Anomaly scoring cost, one core ({n_series} series for the batch rows)")
    table.add_column("what")
    table.add_column("samples/s", justify="right")
    table.add_column("µs/sample", justify="right")
    for k, v in out.items():
        table.add_row(k, f"{v:,.0f}", f"{1e6 / v:.2f}")
    console.print(table)
    bytes_default = make_model("default").bytes_per_series
    console.print(f"state per series: default {bytes_default} B (+17 B scorer bookkeeping); "
                  f"river-gaussian {make_model('river-gaussian').bytes_per_series} B, "
                  f"river-hst {make_model('river-hst').bytes_per_series} B (pickled)")
    return out


def param_changes(params: list[str]) -> tuple[tuple[str, object], ...]:
    """``--param NAME=VALUE`` items as (name, typed value) pairs, typed by the Params field."""
    import dataclasses

    from detector.anomaly import Params

    base = Params()
    fields = {f.name for f in dataclasses.fields(Params)}
    out = []
    for item in params:
        name, _, text = item.partition("=")
        if name not in fields:
            raise SystemExit(f"--param {item}: unknown parameter; known: {sorted(fields)}")
        kind = type(getattr(base, name))
        out.append((name, (text.lower() in ("1", "true", "yes")) if kind is bool else kind(text)))
    return tuple(out)


def candidates(a) -> tuple:
    """The headroom candidates LOCO chooses among, with ``--param`` changes applied to each (a trial)."""
    from bench import nab_loco

    changes = param_changes(a.param)
    base = nab_loco.CANDIDATES
    if changes:
        tag = "+" + "-".join(f"{k}{v}" for k, v in changes)
        base = tuple(nab_loco.Candidate(c.label + tag, c.model, c.params + changes) for c in base)
    extra = []
    for item in getattr(a, "choose", None) or []:  # more values of one knob, for LOCO to choose among
        name, _, values = item.partition("=")
        for value in values.split(","):
            (change,) = param_changes([f"{name}={value}"])
            cand = base[0]
            extra.append(nab_loco.Candidate(f"{cand.label}+{name}{change[1]}", cand.model, cand.params + (change,)))
    return base + tuple(extra)


def run_loco(console: Console, a) -> dict:
    """``--loco``: the default detector and the river baseline, in-sample against held-out per category."""
    from bench import nab_loco

    windows = a.nab / "labels" / "windows_dev.json"
    summary = {}
    ours = candidates(a)
    for title, cands in ((f"headroom (knobs: threshold, model among {', '.join(c.label for c in ours)})", ours),
                         ("river GaussianScorer (knob: threshold)", nab_loco.BASELINES)):
        if a.no_baseline and cands is nab_loco.BASELINES:
            continue
        result = nab_loco.run(a.nab, windows, cands, progress=console.print)
        console.print(nab_loco.table(result, f"NAB dev split, {title}, standard profile: in-sample vs LOCO held-out"))
        summary[cands[0].label] = result
    if a.json:
        a.json.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return summary


def run_machine(console: Console, a) -> dict:
    """``--corpus machine``: default detector and river baselines on dev and held-out seeds."""
    from bench import nab_corpus, nab_loco

    dev = [int(x) for x in a.dev_seeds.split(",")]
    held = [int(x) for x in a.held_out_seeds.split(",")]
    ours = candidates(argparse.Namespace(param=a.param))[:1]
    nab_thr = nab_loco.run(a.nab, a.nab / "labels" / "windows_dev.json", ours,
                           progress=console.print)["in_sample"]["threshold"]
    models = ours + ((), nab_corpus.MODELS[1:])[not a.no_baseline]
    result = nab_corpus.evaluate(dev, held, models, nab_threshold=nab_thr, progress=console.print)
    for t in nab_corpus.tables(result, dev, held):
        console.print(t)
    if a.json:
        a.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.nab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="anomaly model from the catalog (default: default)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="change one Params field of the model for this run (an ablation); repeatable")
    ap.add_argument("--runs", type=int, default=1, help="score the corpus N times (timings; scores are deterministic)")
    ap.add_argument("--nab", type=Path, default=NAB, help="the NAB split (default ../shared/nab)")
    ap.add_argument("--save-thresholds", nargs="?", const=THRESHOLDS, type=Path, default=None,
                    help=f"keep the chosen thresholds (default file {THRESHOLDS.relative_to(REPO)})")
    ap.add_argument("--thresholds", type=Path, default=None, help="apply these frozen thresholds, no sweep")
    ap.add_argument("--no-baseline", action="store_true", help="skip the river GaussianScorer baseline")
    ap.add_argument("--keep", type=Path, default=None, help="keep the results directory here")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    ap.add_argument("--cost", action="store_true", help="only measure samples/s and state bytes (no NAB)")
    ap.add_argument("--loco", action="store_true",
                    help="nested leave-one-category-out: knobs chosen on the other categories (bench/nab_loco.py)")
    ap.add_argument("--choose", action="append", default=[], metavar="NAME=V1,V2",
                    help="--loco: also let each fold choose among these values of a Params field (default model)")
    ap.add_argument("--corpus", choices=["nab", "machine"], default="nab",
                    help="machine: the generated machine-metrics corpus (bench/machine_corpus.py) instead of NAB's split")
    ap.add_argument("--dev-seeds", default="1,2,3", help="--corpus machine: development seeds")
    ap.add_argument("--held-out-seeds", default="101,102,103", help="--corpus machine: seeds scored only at the end")
    a = ap.parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=130)
    if a.cost:
        return measure_cost(console)
    if a.corpus == "machine":
        return run_machine(console, a)
    if a.loco:
        return run_loco(console, a)
    detector = "headroom" + ("" if a.model == "default" else a.model.replace("_", "").replace("-", ""))
    model = a.model
    if a.param:
        detector, model = ablation(a.model, a.param)
    # frozen thresholds are ours only: the baseline has none saved, so it is left out then
    runs = [(detector, model)] + ([] if a.no_baseline or a.thresholds else [BASELINE])
    labels = dict(runs)
    tmp = Path(tempfile.mkdtemp(prefix="headroom-nab-"))
    try:
        results_dir = tmp / "results"
        seconds: dict[str, list[float]] = {det: [] for det, _ in runs}
        for _ in range(max(1, a.runs)):
            for det, model in runs:
                console.print(f"scoring {len(data_files(a.nab))} files with {model!r} as {det} ...")
                seconds[det].append(score_all(a.nab, results_dir, det, model))
        save = None
        if a.save_thresholds is not None:
            save = tmp / "thresholds.json"
        cmd, out = run_scorer(a.nab, results_dir, [det for det, _ in runs], tmp / "scores.json", save, a.thresholds)
        console.print("$ " + " ".join(cmd), style="dim", soft_wrap=True)
        console.print(out.rstrip(), markup=False, highlight=False)
        results = json.loads((tmp / "scores.json").read_text())
        summary = report(console, results, labels, seconds)
        if save is not None:
            chosen = json.loads(save.read_text())
            a.save_thresholds.write_text(json.dumps({detector: chosen[detector]}, indent=2, sort_keys=True) + "\n")
            console.print(f"thresholds of {detector} saved to {a.save_thresholds}")
        if a.json:
            a.json.write_text(json.dumps(summary, indent=2, default=float) + "\n")
        if a.keep:
            shutil.copytree(results_dir, a.keep, dirs_exist_ok=True)
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
