"""The machine corpus (bench/machine_corpus.py) scored by NAB's scorer: dev seeds, then held-out seeds.

For each model (the default detector, river's GaussianScorer and
HalfSpaceTrees, in the same run):

- **dev, in-sample**: the threshold swept on the development seeds, scored there;
- **dev, leave-one-seed-out**: the threshold chosen on the other dev seeds,
  per held-out seed, and their mean;
- **held-out seeds**: the threshold chosen on the dev seeds, frozen; for the
  default detector also the threshold chosen in-sample on NAB's dev split
  (the one a deployment would ship with, chosen on no machine data at all);
- per anomaly kind (windows found, false-positive rows) and per benign event
  (false-positive rows in its benign-only files), at the frozen threshold.

Raw scores are cached as in :mod:`bench.nab_loco`; counters
(``requests_total``) are scored on their rate, as the pipeline does.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench import machine_corpus, nab_loco

ROOT = Path(tempfile.gettempdir()) / "headroom-machine-corpus"
MODELS = (
    nab_loco.Candidate("default", "default"),
    nab_loco.Candidate("river-gaussian", "river-gaussian"),
    nab_loco.Candidate("river-hst", "river-hst"),
)


def _scores(root: Path, rels, cand, cache) -> dict:
    return {r: nab_loco.raw_scores(root / "data", r, cand, cache, counter=machine_corpus.is_counter_file(r))
            for r in rels}


def by_kind(rels) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rels:
        out.setdefault(machine_corpus.kind_of(r), []).append(r)
    return dict(sorted(out.items(), key=lambda kv: (kv[0].startswith("benign"), kv[0])))


def evaluate(dev_seeds, held_seeds, models=MODELS, root: Path = ROOT, cache: Path = nab_loco.CACHE,
             nab_threshold: float | None = None, progress=print) -> dict:
    """Every figure of the module docstring, per model; ``nab_threshold`` applies to the default model."""
    nab_mod = nab_loco.load_scorer(nab_loco.NAB)
    dev_w = machine_corpus.write(root, dev_seeds)
    held_w = machine_corpus.write(root, held_seeds)
    dev = sorted(json.loads(dev_w.read_text()))
    held = sorted(json.loads(held_w.read_text()))
    geoms = nab_mod.load_geometry(str(root), str(dev_w), dev) | nab_mod.load_geometry(str(root), str(held_w), held)
    out = {}
    for cand in models:
        progress(f"raw scores of {len(dev) + len(held)} machine files with {cand.label} ...")
        scores = _scores(root, dev + held, cand, cache)
        thr, dev_norm = nab_loco.best_threshold(nab_mod, geoms, scores, dev)
        loso = nab_loco.loco(nab_mod, {r: geoms[r] for r in dev}, {cand.label: scores}, [cand.label])
        fig = {
            "threshold_dev": thr,
            "dev_in_sample": dev_norm,
            "dev_leave_one_seed_out": {c: f["normalized"] for c, f in loso["held_out"]["categories"].items()},
            "dev_leave_one_seed_out_mean": loso["held_out"]["category_mean"],
            "held_out": nab_loco.category_figures(nab_mod, geoms, scores, held, thr),
            "held_out_seeds": {c: nab_loco.category_figures(nab_mod, geoms, scores, rs, thr)["normalized"]
                               for c, rs in nab_loco.by_category(held).items()},
            "kinds_dev": {k: nab_loco.category_figures(nab_mod, geoms, scores, rs, thr) for k, rs in by_kind(dev).items()},
            "kinds_held_out": {k: nab_loco.category_figures(nab_mod, geoms, scores, rs, thr)
                               for k, rs in by_kind(held).items()},
        }
        if nab_threshold is not None and cand.model == "default":
            fig["nab_threshold"] = nab_threshold
            fig["dev_at_nab_threshold"] = nab_loco.category_figures(nab_mod, geoms, scores, dev, nab_threshold)
            fig["held_out_at_nab_threshold"] = nab_loco.category_figures(nab_mod, geoms, scores, held, nab_threshold)
            fig["kinds_held_out_at_nab_threshold"] = {
                k: nab_loco.category_figures(nab_mod, geoms, scores, rs, nab_threshold) for k, rs in by_kind(held).items()}
        out[cand.label] = fig
    return out


def tables(result: dict, dev_seeds, held_seeds):
    """Two rich Tables: the summary per model, and the per-kind breakdown."""
    from rich.table import Table

    def f(v):
        return "-" if v is None else f"{v:.1f}"

    s = Table(title=f"machine corpus, standard profile: dev seeds {list(dev_seeds)}, held-out seeds {list(held_seeds)}")
    for col in ("model", "dev in-sample", "dev leave-one-seed-out (mean; per seed)", "held-out, dev threshold",
                "held-out, NAB-dev threshold", "thr (dev / NAB)"):
        s.add_column(col, justify="left" if col == "model" else "right")
    for m, r in result.items():
        loso = "; ".join(f(v) for v in r["dev_leave_one_seed_out"].values())
        nab_h = r.get("held_out_at_nab_threshold")
        s.add_row(m, f(r["dev_in_sample"]), f"{f(r['dev_leave_one_seed_out_mean'])} ({loso})",
                  f"{f(r['held_out']['normalized'])} ({r['held_out']['detected']}/{r['held_out']['windows']}, "
                  f"fp {r['held_out']['fp_rows']})",
                  "-" if nab_h is None else f"{f(nab_h['normalized'])} ({nab_h['detected']}/{nab_h['windows']}, "
                                             f"fp {nab_h['fp_rows']})",
                  f"{r['threshold_dev']:.4g}" + (f" / {r['nab_threshold']:.4g}" if "nab_threshold" in r else ""))
    k = Table(title="per kind at each model's dev threshold: NAB score, windows found, FP rows "
                    "(dev seeds | held-out seeds); benign-only files have no window, so no score")

    def cell(fig: dict) -> str:
        score = f"{f(fig['normalized'])} " if fig["windows"] else ""
        return f"{score}{fig['detected']}/{fig['windows']} fp {fig['fp_rows']}"

    k.add_column("kind")
    for m in result:
        k.add_column(m, justify="right")
    for kind in next(iter(result.values()))["kinds_dev"]:
        k.add_row(kind, *(f"{cell(r['kinds_dev'][kind])} | {cell(r['kinds_held_out'][kind])}" for r in result.values()))
    return s, k

