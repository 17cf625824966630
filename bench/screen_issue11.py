"""Issue 11, second round: screen detector variants on development data only, with the bench's own functions.

    nice -n 10 .venv/bin/python -m bench.screen_issue11 [--only LABEL ...] [--jobs 2] [--json F]

For each variant (a set of :class:`~detector.anomaly.Params` changes of the default model):

- NAB dev split: :func:`bench.nab_loco.run` with the variant as the only candidate (each fold chooses the
  threshold), so in-sample and LOCO held-out figures as ``--loco`` gives them;
- machine corpus, development seeds 1, 2, 3 only: in-sample (threshold swept on the three seeds) and
  leave-one-seed-out (:func:`bench.nab_loco.loco` over the seeds), windows found and false-positive rows at
  the in-sample threshold.

The held-out seeds (101-103) and the blind seeds are never scored here: ``--blind SEEDS`` scores only
``bench.nab_corpus.evaluate`` of two variants (the default and the one chosen), once, at the end.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench import machine_corpus, nab_corpus, nab_loco

DAY = 86_400.0
# label -> Params changes of the default model; written before any of them was scored
VARIANTS: dict[str, tuple[tuple[str, object], ...]] = {
    "default": (),
    "stuck": (("stuck", True),),
    "sustain 0.5": (("sustain_share", 0.5),),
    "sustain 0.25": (("sustain_share", 0.25),),
    "sustain 0.75": (("sustain_share", 0.75),),
    "stuck + sustain 0.5": (("stuck", True), ("sustain_share", 0.5)),
    "shift 1h + 6h": (("mid_s", 3600.0), ("slow_s", 6 * 3600.0)),
    "stuck + shift 1h + 6h": (("stuck", True), ("mid_s", 3600.0), ("slow_s", 6 * 3600.0)),
}


def screen(label: str, params=None) -> dict:
    params = VARIANTS[label] if params is None else params
    cand = nab_loco.Candidate(label.replace(" ", "_"), "default", tuple(params))
    nab = nab_loco.run(nab_loco.NAB, nab_loco.NAB / "labels" / "windows_dev.json", [cand], progress=lambda *_: None)
    nab_mod = nab_loco.load_scorer(nab_loco.NAB)
    dev_w = machine_corpus.write(nab_corpus.ROOT, machine_corpus.DEV_SEEDS)
    dev = sorted(json.loads(dev_w.read_text()))
    geoms = nab_mod.load_geometry(str(nab_corpus.ROOT), str(dev_w), dev)
    scores = nab_corpus._scores(nab_corpus.ROOT, dev, cand, nab_loco.CACHE)
    thr, dev_norm = nab_loco.best_threshold(nab_mod, geoms, scores, dev)
    loso = nab_loco.loco(nab_mod, geoms, {cand.label: scores}, [cand.label])
    at = nab_loco.category_figures(nab_mod, geoms, scores, dev, thr)
    kinds = {k: nab_loco.category_figures(nab_mod, geoms, scores, rs, thr) for k, rs in nab_corpus.by_kind(dev).items()}
    return {
        "label": label,
        "params": [list(p) for p in params],
        "nab_in_sample": nab["in_sample"]["normalized"],
        "nab_loco_mean": nab["held_out"]["category_mean"],
        "nab_loco": {c: f["normalized"] for c, f in nab["held_out"]["categories"].items()},
        "machine_dev_in_sample": dev_norm,
        "machine_loso_mean": loso["held_out"]["category_mean"],
        "machine_loso": {c: f["normalized"] for c, f in loso["held_out"]["categories"].items()},
        "machine_dev_windows": f"{at['detected']}/{at['windows']}",
        "machine_dev_fp_rows": at["fp_rows"],
        "machine_dev_threshold": thr,
        "kinds_dev": {k: (f["normalized"], f"{f['detected']}/{f['windows']}", f["fp_rows"]) for k, f in kinds.items()},
    }


def row(r: dict) -> str:
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    loco = " / ".join(f(v) for c, v in r["nab_loco"].items() if v is not None)
    loso = " / ".join(f(v) for v in r["machine_loso"].values())
    return (f"| {r['label']} | {f(r['nab_in_sample'])} | {f(r['nab_loco_mean'])} ({loco}) | "
            f"{f(r['machine_dev_in_sample'])} | **{f(r['machine_loso_mean'])}** ({loso}) | "
            f"{r['machine_dev_windows']}, {r['machine_dev_fp_rows']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    labels = a.only or list(VARIANTS)
    machine_corpus.write(nab_corpus.ROOT, machine_corpus.DEV_SEEDS)  # once, before the workers read it
    with ProcessPoolExecutor(a.jobs) as pool:
        results = list(pool.map(screen, labels))
    print("| variant | NAB in-sample | NAB LOCO held-out mean (art / adx / traffic / tweets) | machine dev in-sample "
          "| machine dev LOSO mean (s1 / s2 / s3) | dev windows, FP rows |")
    print("|---|---:|---|---:|---|---|")
    for r in results:
        print(row(r))
    for r in results:
        print(r["label"], {k: v for k, v in r["kinds_dev"].items()})
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
