"""Issue 11: screen detector variants on development data only, with the bench's own functions.

    taskset -c 1 nice -n 19 .venv/bin/python -m bench.screen_issue11 [--only LABEL ...] [--dev-seeds 1,2,3,4,5,6]
        [--jobs 1] [--json F]

For each variant (a set of :class:`~detector.anomaly.Params` changes of the ``classic`` model, the default until
the eighth round shipped):

- NAB dev split: :func:`bench.nab_loco.run` with the variant as the only candidate (each fold chooses the
  threshold), so in-sample and LOCO held-out figures as ``--loco`` gives them;
- machine corpus, development seeds only (``--dev-seeds``: 1, 2, 3 in the second round, 1-6 from the third
  on): in-sample (threshold swept on the dev seeds) and leave-one-seed-out (:func:`bench.nab_loco.loco` over
  the seeds), windows found and false-positive rows at the in-sample threshold.

The held-out seeds (101-103) are never scored here. ``--blind SEEDS --variant LABEL`` scores new seeds instead,
with :func:`bench.nab_corpus.evaluate` (thresholds chosen on the dev seeds, frozen), for the variant and the
default in the same run: a rule's step (c), once. Seeds 501-503 (second round) and 701-710 (eighth round) are
spent. Seeds 801-810 are the ninth round's step (c), not run (no variant passed (a) and (b)): still blind; its
rows (``--ninth``, the trial drift test) reproduce at commit 244cc53, the switch was removed after it. ``--pile``
measures the alarm-level pile (sixth round); ``--seventh`` screens the seventh round's threshold
choosers (``--seventh --blind SEEDS``: its step (c), once). ``--eighth`` screens the eighth round's rows that the
code still expresses (the machine corpus as the objective); ``--eighth --blind SEEDS --variant LABEL`` is its step
(c), once: the variant and the default, each at its threshold chosen on the dev seeds and at the one chosen on
NAB's dev split.

The trial switches of rounds 3-7 (the peak and per-cluster rate of declustering, ``decluster_mean``,
``decluster_tests``, ``decluster_min``, the sustained-surprise test, ``hold_rise``, ``alarm_whole``) were removed
once the eighth round shipped, and their rows (``--fourth``, ``--fifth``, ``--sixth``, the third round's
variants, the nested rows) with them. Those rounds' tables in bench/README reproduce at commit 9f66196:
``git worktree add --detach DIR 9f66196``, build the compiled step there, and run this module from DIR.
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench import machine_corpus, nab_corpus, nab_loco

DAY = 86_400.0
# Every round's variants are changes of the default detector of its day, which the eighth round replaced: that
# detector is the catalog's `classic` model now, so "default" below still means it, as in bench/README's tables.
BASE = "classic"
# label -> Params changes of the classic model. Declustering has one behaviour since the eighth round shipped (the
# exceedance rate per sample, a cluster's mean excess weighted by its length up to decluster_weight): the rows
# below are the eighth round's that it expresses. ("decl1 w10" of the fourth round taught a cluster's peak and
# counted clusters in the rate: that row, like rounds 3-7, reproduces at commit 9f66196 only.)
STUCK = (("stuck", True),)
DECL1_W10 = (("decluster", 1), ("decluster_weight", 10))
VARIANTS: dict[str, tuple[tuple[str, object], ...]] = {
    "default": (),  # the catalog's 'classic' model, the default of rounds 3-8
    "stuck": STUCK,  # the catalog's 'machine' model
    "decl1 w10": DECL1_W10,  # the eighth round's "decl1 w10 avg srate"
    "stuck decl1 w10": STUCK + DECL1_W10,  # its "stuck decl1 w10 avg srate": the catalog's 'default' since 9f66196
    # a diagnostic for --pile only (not a candidate): the surprise itself, with no hold at all
    "no hold": (("hold", 0),),
}
# the eighth round's rows still expressible (its "decl1 w10 avg" and "stuck decl1 w10 avg", with the rate per cluster,
# are not)
EIGHTH = ("default", "stuck", "decl1 w10", "stuck decl1 w10")
DEV_SEEDS = machine_corpus.DEV_SEEDS + (4, 5, 6)  # the third round's dev seeds (4-6 were used nowhere before)
NAB_DEV_WINDOWS = nab_loco.NAB / "labels" / "windows_dev.json"


def screen(label: str, params=None, dev_seeds=DEV_SEEDS, chooser: str = "argmax") -> dict:
    """A variant's figures on development data: NAB in-sample and LOCO, machine dev in-sample and LOSO, each
    fold's threshold chosen by ``chooser`` (:func:`bench.nab_loco.choose_threshold`; the seventh round's)."""
    params = VARIANTS[label] if params is None else params
    cand = nab_loco.Candidate(label.replace(" ", "_"), BASE, tuple(params))
    nab = nab_loco.run(nab_loco.NAB, NAB_DEV_WINDOWS, [cand], progress=lambda *_: None, chooser=chooser)
    nab_mod = nab_loco.load_scorer(nab_loco.NAB)
    dev_w = machine_corpus.write(nab_corpus.ROOT, dev_seeds)
    dev = sorted(json.loads(dev_w.read_text()))
    geoms = nab_mod.load_geometry(str(nab_corpus.ROOT), str(dev_w), dev)
    scores = nab_corpus._scores(nab_corpus.ROOT, dev, cand, nab_loco.CACHE)
    thr, dev_norm = nab_loco.best_threshold(nab_mod, geoms, scores, dev, chooser=chooser)
    loso = nab_loco.loco(nab_mod, geoms, {cand.label: scores}, [cand.label], chooser=chooser)
    at = nab_loco.category_figures(nab_mod, geoms, scores, dev, thr)
    kinds = {k: nab_loco.category_figures(nab_mod, geoms, scores, rs, thr) for k, rs in nab_corpus.by_kind(dev).items()}
    return {
        "label": label,
        "params": [list(p) for p in params],
        "nab_threshold": nab["in_sample"]["threshold"],
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
        "fold_thresholds": {c: round(f["threshold"], 4) for c, f in nab["held_out"]["categories"].items()}
        | {f"seed {c}": round(f["threshold"], 4) for c, f in loso["held_out"]["categories"].items()},
    }


def _nab_dev(cand: nab_loco.Candidate):
    """NAB's scorer, the development split's files, their geometry and ``cand``'s raw scores."""
    nab_mod = nab_loco.load_scorer(nab_loco.NAB)
    rels = sorted(json.loads(NAB_DEV_WINDOWS.read_text()))
    geoms = nab_mod.load_geometry(str(nab_loco.NAB), str(NAB_DEV_WINDOWS), rels)
    return nab_mod, rels, geoms, {r: nab_loco.raw_scores(nab_loco.NAB / "data", r, cand) for r in rels}


def pile(label: str, dev_seeds=DEV_SEEDS, lo: float = 0.20, hi: float = 0.40, step: float = 0.01) -> dict:
    """The alarm-level pile (sixth round): each window's maximum score and the scores of the rows outside windows
    (the candidate false-positive rows), binned over [lo, hi), on the NAB dev split and the machine dev seeds."""
    import numpy as np

    cand = nab_loco.Candidate(label.replace(" ", "_"), BASE, VARIANTS[label])
    nab_mod = nab_loco.load_scorer(nab_loco.NAB)
    dev_w = machine_corpus.write(nab_corpus.ROOT, dev_seeds)
    edges = np.round(np.arange(lo, hi + step / 2, step), 6)
    out = {"label": label, "edges": edges.tolist()}
    for corpus, root, windows in (("nab", nab_loco.NAB, NAB_DEV_WINDOWS), ("machine", nab_corpus.ROOT, dev_w)):
        rels = sorted(json.loads(windows.read_text()))
        geoms = nab_mod.load_geometry(str(root), str(windows), rels)
        maxima, outside = [], []
        for r in rels:
            counter = corpus == "machine" and machine_corpus.is_counter_file(r)
            sc, g = nab_loco.raw_scores(root / "data", r, cand, counter=counter), geoms[r]
            outside.append(sc[g.scored & (g.win_id < 0)])
            maxima += [float(sc[a:b + 1].max()) for a, b in g.windows if g.scored[a:b + 1].any()]
        out[corpus] = {"windows": len(maxima), "window_maxima": np.histogram(maxima, edges)[0].tolist(),
                       "outside_rows": np.histogram(np.concatenate(outside), edges)[0].tolist(),
                       "maxima_near": sorted(round(m, 3) for m in maxima if lo <= m < hi)}
    return out


def _assert_blind(seeds: list[int], dev_seeds) -> None:
    """Refuse seeds that were looked at before: the dev and held-out seeds, and the blind seeds already spent."""
    spent = set(dev_seeds) | set(machine_corpus.HELD_OUT_SEEDS) | {501, 502, 503} | set(range(701, 711))
    assert not set(seeds) & spent, f"seeds {sorted(set(seeds) & spent)} are not blind"


def blind_at_thresholds(seeds: list[int], rows, dev_seeds, out: Path | None) -> None:
    """Blind seeds scored once, each row ``(name, candidate, chooser)`` at two frozen thresholds: the one its chooser
    picks on the dev seeds, and the one it picks on NAB's whole dev split (the kind that ships)."""
    _assert_blind(seeds, dev_seeds)
    dev_w, held_w = machine_corpus.write(nab_corpus.ROOT, dev_seeds), machine_corpus.write(nab_corpus.ROOT, seeds)
    dev, held = sorted(json.loads(dev_w.read_text())), sorted(json.loads(held_w.read_text()))
    results = {}
    for name, cand, ch in rows:
        nab_mod, nab_rels, nab_geoms, nab_scores = _nab_dev(cand)
        geoms = (nab_mod.load_geometry(str(nab_corpus.ROOT), str(dev_w), dev)
                 | nab_mod.load_geometry(str(nab_corpus.ROOT), str(held_w), held))
        scores = nab_corpus._scores(nab_corpus.ROOT, dev + held, cand, nab_loco.CACHE)
        thr_dev, _ = nab_loco.best_threshold(nab_mod, geoms, scores, dev, chooser=ch)
        thr_nab, _ = nab_loco.best_threshold(nab_mod, nab_geoms, nab_scores, nab_rels, chooser=ch)
        results[name] = {}
        for at, thr in (("dev-seed threshold", thr_dev), ("NAB-dev threshold", thr_nab)):
            fig = nab_loco.category_figures(nab_mod, geoms, scores, held, thr)
            per_seed = {c: nab_loco.category_figures(nab_mod, geoms, scores, rs, thr)["normalized"]
                        for c, rs in nab_loco.by_category(held).items()}
            results[name][at] = {"threshold": thr, "normalized": fig["normalized"], "detected": fig["detected"],
                                 "windows": fig["windows"], "fp_rows": fig["fp_rows"], "per_seed": per_seed}
            print(f"| {name} | {at} | {thr:.4f} | {fig['normalized']:.1f} | {fig['detected']}/{fig['windows']} | "
                  f"{fig['fp_rows']} | {' / '.join(f'{v:.1f}' for v in per_seed.values())} |")
    if out:
        out.write_text(json.dumps(results, indent=1))


def seventh_blind(seeds: list[int], choosers, dev_seeds, out: Path | None) -> None:
    """The seventh round's step (c), once: blind seeds scored by the default detector at each chooser's threshold
    chosen on the dev seeds, and at the one it chooses on NAB's whole dev split (the shipped kind)."""
    cand = nab_loco.Candidate("default", BASE)
    blind_at_thresholds(seeds, [(ch, cand, ch) for ch in choosers], dev_seeds, out)


def seventh_shift(choosers, deltas=(-0.01, -0.005, -0.003, -0.001, 0.0, 0.001, 0.003, 0.005, 0.01)) -> dict:
    """A diagnostic of the seventh round (not deciding): each chooser's NAB LOCO fold thresholds moved by each
    delta, and the held-out mean there; how close a procedure sits to a cliff."""
    import statistics

    nab_mod, rels, geoms, scores = _nab_dev(nab_loco.Candidate("default", BASE))
    cats = nab_loco.by_category(rels)
    out = {}
    for ch in choosers:
        fold = {c: nab_loco.best_threshold(nab_mod, geoms, scores, [r for r in rels if r.split("/")[0] != c],
                                           chooser=ch)[0] for c in cats}
        out[ch] = {}
        for d in deltas:
            vals = [nab_loco.category_figures(nab_mod, geoms, scores, rs, fold[c] + d)["normalized"]
                    for c, rs in cats.items()]
            out[ch][d] = statistics.fmean(v for v in vals if v is not None)
    return out


def row(r: dict) -> str:
    f = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    loco = " / ".join(f(v) for c, v in r["nab_loco"].items() if v is not None)
    loso = " / ".join(f(v) for v in r["machine_loso"].values())
    return (f"| {r['label']} | {f(r['nab_in_sample'])} | {f(r['nab_loco_mean'])} ({loco}) | "
            f"{f(r['machine_dev_in_sample'])} | **{f(r['machine_loso_mean'])}** ({loso}) | "
            f"{r['machine_dev_windows']}, {r['machine_dev_fp_rows']} |")


def blind(seeds: list[int], variant: str, dev_seeds, out: Path | None) -> None:
    from rich.console import Console

    _assert_blind(seeds, dev_seeds)
    models = (nab_loco.Candidate(variant.replace(" ", "_"), BASE, VARIANTS[variant]),
              nab_loco.Candidate("default", BASE))
    result = nab_corpus.evaluate(dev_seeds, seeds, models=models)
    console = Console(width=200)
    for t in nab_corpus.tables(result, dev_seeds, seeds):
        console.print(t)
    if out:
        out.write_text(json.dumps(result, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--jobs", type=int, default=1, help="processes (the house rule on 2 shared cores: 1)")
    ap.add_argument("--dev-seeds", default=",".join(map(str, DEV_SEEDS)))
    ap.add_argument("--variant", default="stuck", help="with --blind: the variant scored against the default")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--blind", default=None, help="comma-separated seeds never used before: step (c), once")
    ap.add_argument("--pile", nargs="*", default=None, metavar="LABEL",
                    help="the alarm-level pile of these variants (window maxima, outside rows near 0.30)")
    ap.add_argument("--eighth", action="store_true",
                    help="the eighth round's rows (EIGHTH); with --blind: its step (c), --variant against the default")
    ap.add_argument("--seventh", action="store_true",
                    help="the seventh round: the default detector, each threshold chooser (nab_loco.CHOOSERS)")
    ap.add_argument("--shift", action="store_true",
                    help="with --seventh: NAB LOCO held-out mean with each chooser's fold thresholds shifted")
    a = ap.parse_args()
    dev_seeds = tuple(int(x) for x in a.dev_seeds.split(","))
    if a.seventh:
        choosers = a.only or list(nab_loco.CHOOSERS)
        if a.shift:
            for ch, by in seventh_shift(choosers).items():
                print(ch, " ".join(f"{d:+.3f}: {v:.1f}" for d, v in by.items()))
            return
        if a.blind:
            return seventh_blind([int(x) for x in a.blind.split(",")], choosers, dev_seeds, a.json)
        results = [screen("default", dev_seeds=dev_seeds, chooser=ch) | {"label": ch} for ch in choosers]
        for r in results:
            print(row(r), f"NAB thr {r['nab_threshold']:.4f}, machine dev thr {r['machine_dev_threshold']:.4f}")
        for r in results:
            print(r["label"], "chosen per fold:", r["fold_thresholds"])
        if a.json:
            a.json.write_text(json.dumps(results, indent=1))
        return
    if a.pile is not None:
        for label in a.pile or ["default"]:
            r = pile(label, dev_seeds)
            print(label, "bins", r["edges"])
            for corpus in ("nab", "machine"):
                print(f"  {corpus}: {r[corpus]['windows']} windows; maxima per bin {r[corpus]['window_maxima']}; "
                      f"outside rows per bin {r[corpus]['outside_rows']}")
                print(f"  {corpus} window maxima in range: {r[corpus]['maxima_near']}")
        return
    if a.eighth and a.blind:  # step (c): the variant and the default, each at both of its frozen thresholds
        rows = [(label, nab_loco.Candidate(label.replace(" ", "_"), BASE, VARIANTS[label]), "argmax")
                for label in (a.variant, "default")]
        return blind_at_thresholds([int(x) for x in a.blind.split(",")], rows, dev_seeds, a.json)
    if a.blind:
        return blind([int(x) for x in a.blind.split(",")], a.variant, dev_seeds, a.json)
    labels = a.only or list(EIGHTH)
    machine_corpus.write(nab_corpus.ROOT, dev_seeds)  # once, before the workers read it
    if a.jobs > 1:
        with ProcessPoolExecutor(a.jobs) as pool:
            results = list(pool.map(screen, labels, [None] * len(labels), [dev_seeds] * len(labels)))
    else:
        results = [screen(label, dev_seeds=dev_seeds) for label in labels]
    seeds = " / ".join(f"s{s}" for s in dev_seeds)
    print("| variant | NAB in-sample | NAB LOCO held-out mean (art / adx / traffic / tweets) | machine dev in-sample "
          f"| machine dev LOSO mean ({seeds}) | dev windows, FP rows |")
    print("|---|---:|---|---:|---|---|")
    for r in results:
        print(row(r))
    for r in results:
        print(r["label"], {k: v for k, v in r["kinds_dev"].items()})
    for r in results:
        print(r["label"], "thresholds per fold:", r["fold_thresholds"])
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
