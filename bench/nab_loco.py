"""Nested leave-one-category-out (LOCO): NAB figures for data no knob was chosen on.

The in-sample NAB figure chooses the threshold on the very files it scores.
Here, for each category of a NAB-layout corpus, every knob (the threshold,
and which model of a small candidate list) is chosen on the *other*
categories by NAB's own sweep, then applied frozen to the held-out category;
the held-out figures per category and their mean are reported next to the
in-sample ones (same profile, same per-category normalization, so the two
columns compare like for like).

Each file is scored once per model and its raw scores are cached on disk
(keyed by the model, its parameters, the detector's source and the data file),
so choosing thresholds never re-scores anything and a second run is instant.

>>> import numpy as np
>>> nab = load_scorer(NAB)
>>> geoms = {"a/x.csv": _toy_geom(nab, 100, [(50, 59)]), "b/y.csv": _toy_geom(nab, 100, [(70, 79)])}
>>> scores = {"a/x.csv": np.r_[np.zeros(52), 0.9, np.zeros(47)],
...           "b/y.csv": np.r_[np.zeros(30), 0.95, np.zeros(69)]}
>>> thr, norm = best_threshold(nab, geoms, scores, ["a/x.csv"])
>>> float(thr), round(norm, 1)
(0.9, 98.9)
>>> held = category_figures(nab, geoms, scores, ["b/y.csv"], thr)
>>> held["detected"], held["fp_rows"]  # the false positive at row 30 passes 0.9, the window is missed
(0, 1)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# ../shared/nab of the main checkout; a worktree (/work/wt/<name>) finds it further up
NAB = next((p / "shared" / "nab" for p in REPO.parents if (p / "shared" / "nab").is_dir()), REPO.parent / "shared" / "nab")
CACHE = Path(tempfile.gettempdir()) / "headroom-raw-scores"
PROFILE = "standard"


def load_scorer(nab: Path):
    """NAB's stand-alone scorer (``score.py`` of the split) as a module: sweep, geometry, profiles."""
    if not (nab / "score.py").is_file():  # say where it was looked for, not a bare FileNotFoundError
        raise FileNotFoundError(f"NAB split not found: no score.py in {nab} (looked for shared/nab in every "
                                f"folder above {REPO}; pass the split's path, or check out beside ../shared)")
    spec = importlib.util.spec_from_file_location("nab_score", nab / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _toy_geom(nab_mod, n: int, windows: list[tuple[int, int]]):
    """A FileGeom without a data file (for examples and tests): n rows, windows as row ranges."""
    import datetime as dt

    stamps = [(dt.datetime(2020, 1, 1) + dt.timedelta(minutes=5 * i)).isoformat() for i in range(n)]
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
        f.write("timestamp,value\n" + "".join(f"{s},0\n" for s in stamps))
    try:
        return nab_mod.FileGeom("toy", f.name, [(stamps[a], stamps[b]) for a, b in windows])
    finally:
        Path(f.name).unlink()


@dataclass(frozen=True)
class Candidate:
    """One model configuration the protocol may choose: a catalog model, optionally with Params changed."""

    label: str
    model: str
    params: tuple[tuple[str, object], ...] = ()

    def scorer_model(self) -> str:
        """The catalog name to score with (registering the Params variant for this process)."""
        if not self.params:
            return self.model
        import dataclasses

        from detector.anomaly import MODELS, ColumnarState

        name = f"{self.model}+" + "-".join(f"{k}{v}" for k, v in self.params)
        if name not in MODELS:
            tuned = dataclasses.replace(MODELS[self.model]().params, **dict(self.params))
            MODELS[name] = lambda: ColumnarState(tuned)
        return name


# the knobs LOCO chooses besides the threshold: which seasonal profile
CANDIDATES = (Candidate("default", "default"), Candidate("weekly", "weekly"))
BASELINES = (Candidate("river-gaussian", "river-gaussian"),)


def _source_digest() -> str:
    h = hashlib.sha1()
    # the compiled step's source too: a change there changes scores with no .py changed
    for path in sorted((REPO / "detector" / "anomaly").glob("*.py")) + sorted((REPO / "detector" / "anomaly").glob("*.pyx")):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def raw_scores(data: Path, rel: str, cand: Candidate, cache: Path = CACHE, counter: bool = False) -> np.ndarray:
    """Scores of every row of ``data/rel`` by ``cand``, streamed as ``headroom score-csv`` does; cached."""
    from detector.anomaly import AnomalyScorer
    from pipelines.score_csv_cli import read_chunks

    path = data / rel
    stat = path.stat()
    key = hashlib.sha1(
        json.dumps([cand.model, [list(p) for p in cand.params], _source_digest(), str(path), stat.st_size,
                    stat.st_mtime_ns, counter], default=str).encode()
    ).hexdigest()
    cached = cache / f"{key}.npy"
    if cached.exists():
        return np.load(cached)
    scorer = AnomalyScorer(cand.scorer_model(), counter=lambda key: counter)
    row = scorer.rows_for([b"loco"])
    parts = [scorer.score(np.repeat(row, len(vals)), secs, vals) for _, _, secs, vals in read_chunks(str(path))]
    out = np.concatenate(parts) if parts else np.zeros(0)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.{id(out)}.npy"
    np.save(tmp, out)
    tmp.replace(cached)
    return out


def _bounds(nab_mod, geoms: dict, rels: Sequence[str], profile: str) -> tuple[float, float]:
    prof = nab_mod.DEFAULT_PROFILES[profile]
    null = -prof["fnWeight"] * sum(geoms[r].n_scorable_windows for r in rels)
    perfect = prof["tpWeight"] * sum(geoms[r].n_windows for r in rels)
    return null, perfect


# How a fold turns NAB's score-vs-threshold curve into one threshold (issue 11, seventh round). The parameters are
# fixed here, a priori, never chosen on data: a score is surprise / decades (10), so 0.01 is 0.1 decade.
SMOOTH_HALF_WIDTH = 0.01  # "smooth": argmax of the curve averaged over [t - 0.01, t + 0.01]
PLATEAU_POINTS = 1.0  # "plateau": centre of the widest threshold interval within 1 normalized point of the best
CHOOSERS = ("argmax", "smooth", "plateau")


def _curve(thr_desc: np.ndarray, tot_desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sweep's step function ascending: ``f(t) = g[k]`` for ``a[k-1] < t <= a[k]`` (``g[0]`` for t <= a[0]).

    ``tot_desc[j]`` is the total when every row scoring >= ``thr_desc[j]`` is a detection, and it holds for every
    threshold in ``(thr_desc[j + 1], thr_desc[j]]``.
    """
    return thr_desc[::-1].astype(float), tot_desc[::-1].astype(float)


def choose_threshold(thr_desc, tot_desc, chooser: str = "argmax", scale: float = 1.0) -> float:
    """One threshold from a sweep's curve (``nab_mod.sweep``'s output: thresholds descending, raw totals).

    ``scale``: raw score per normalized point (``(perfect - null) / 100``), for ``plateau``'s tolerance.

    - ``argmax``: the first maximum, i.e. the highest threshold among ties, as NAB's scorer does. It is always
      the score of some row, usually a window's maximum, so a slightly higher threshold loses that window.
    - ``smooth``: the argmax of the curve averaged over ``[t - h, t + h]`` (h = :data:`SMOOTH_HALF_WIDTH`), so a
      threshold is preferred where its neighbours score well too; thresholds searched in [0, 1].
    - ``plateau``: the centre of the widest interval of thresholds (within [0, 1]) whose score is within
      :data:`PLATEAU_POINTS` normalized points of the best.

    >>> thr = np.array([1.1, 0.9, 0.5, 0.2])     # a 1-row spike at 0.9 (worth 10), a broad good range below 0.5
    >>> tot = np.array([0.0, 10.0, 9.0, 2.0])    # f = 10 on (0.5, 0.9], 9 on (0.2, 0.5], 2 below 0.2
    >>> choose_threshold(thr, tot, "argmax")
    0.9
    >>> round(choose_threshold(thr, tot, "plateau", scale=1.0), 6)  # f >= 9 on (0.2, 0.9]: its centre
    0.55
    """
    thr_desc, tot_desc = np.asarray(thr_desc, float), np.asarray(tot_desc, float)
    if chooser == "argmax":
        return float(thr_desc[int(np.argmax(tot_desc))])
    a, g = _curve(thr_desc, tot_desc)
    lo_dom, hi_dom = 0.0, 1.0
    if chooser == "smooth":
        h = SMOOTH_HALF_WIDTH
        lo = min(a[0], lo_dom) - 2 * h - 1.0  # the integral's origin: below anything evaluated
        widths = np.diff(np.r_[lo, a])
        cum = np.cumsum(g * widths)  # cum[k] = integral of f from lo to a[k]

        def integral(t):
            k = np.searchsorted(a, t, side="left")  # f(t) = g[k] just left of a[k]
            inside = k < len(a)
            kk = np.minimum(k, len(a) - 1)
            prev_pos = np.where(kk > 0, a[np.maximum(kk - 1, 0)], lo)
            prev_cum = np.where(kk > 0, cum[np.maximum(kk - 1, 0)], 0.0)
            return np.where(inside, prev_cum + g[kk] * (t - prev_pos), cum[-1] + g[-1] * (t - a[-1]))

        # the average is piecewise linear with kinks at a[k] +- h: its maximum is at one of them (or a bound)
        cand = np.unique(np.clip(np.r_[a - h, a + h, lo_dom, hi_dom], lo_dom, hi_dom))
        avg = (integral(cand + h) - integral(cand - h)) / (2 * h)
        best = avg.max()
        return float(cand[np.nonzero(avg >= best - 1e-9 * max(1.0, abs(best)))[0][-1]])  # highest among ties
    if chooser == "plateau":
        ok = g >= g.max() - PLATEAU_POINTS * scale - 1e-9
        # interval k is (a[k-1], a[k]], clipped to the domain; runs of good intervals join
        left = np.clip(np.r_[lo_dom, a[:-1]], lo_dom, hi_dom)
        right = np.clip(a, lo_dom, hi_dom)
        right[-1] = hi_dom  # above the last threshold (1.1) nothing is detected: the same value up to 1.0
        best_w, best_c, k = -1.0, float(thr_desc[int(np.argmax(tot_desc))]), 0
        while k < len(g):
            if not ok[k]:
                k += 1
                continue
            j = k
            while j + 1 < len(g) and ok[j + 1]:
                j += 1
            w = right[j] - left[k]
            if w >= best_w:  # the highest run among equally wide ones
                best_w, best_c = w, 0.5 * (left[k] + right[j])
            k = j + 1
        return float(best_c)
    raise ValueError(f"unknown chooser {chooser!r} (one of {CHOOSERS})")


def curve_value(thr_desc, tot_desc, t: float) -> float:
    """The sweep's total at threshold ``t`` (rows scoring >= t are detections)."""
    a, g = _curve(np.asarray(thr_desc, float), np.asarray(tot_desc, float))
    return float(g[min(int(np.searchsorted(a, t, side="left")), len(a) - 1)])


def best_threshold(nab_mod, geoms: dict, scores: dict, rels: Sequence[str], profile: str = PROFILE,
                   chooser: str = "argmax") -> tuple[float, float]:
    """NAB's exact sweep over ``rels``: (threshold chosen by ``chooser``, normalized score there)."""
    sub = {r: geoms[r] for r in rels}
    thr, tot = nab_mod.sweep(sub, {r: scores[r] for r in rels}, nab_mod.DEFAULT_PROFILES[profile])
    null, perfect = _bounds(nab_mod, geoms, rels, profile)
    t = choose_threshold(thr, tot, chooser, scale=(perfect - null) / 100.0 if perfect != null else 1.0)
    val = curve_value(thr, tot, t)
    norm = 100.0 * (val - null) / (perfect - null) if perfect != null else float("nan")
    return float(t), float(norm)


def category_figures(nab_mod, geoms: dict, scores: dict, rels: Sequence[str], threshold: float,
                     profile: str = PROFILE) -> dict:
    """Raw score, windows detected, false-positive rows and normalized score of ``rels`` at a frozen threshold."""
    prof = nab_mod.DEFAULT_PROFILES[profile]
    files = [nab_mod.score_at_threshold(geoms[r], scores[r], threshold, prof) for r in rels]
    raw = sum(f["score"] for f in files)
    null, perfect = _bounds(nab_mod, geoms, rels, profile)
    return {
        "raw": raw,
        "windows": sum(f["windows"] for f in files),
        "detected": sum(f["windows_detected"] for f in files),
        "fp_rows": sum(f["fp_rows"] for f in files),
        "normalized": 100.0 * (raw - null) / (perfect - null) if perfect != null else None,
        "threshold": threshold,
    }


def by_category(rels: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rels:
        out.setdefault(r.split("/")[0], []).append(r)
    return dict(sorted(out.items()))


def loco(nab_mod, geoms: dict, scores_by: dict[str, dict], candidates: Sequence[str], profile: str = PROFILE,
         chooser: str = "argmax") -> dict:
    """Nested leave-one-category-out over ``geoms``' categories.

    ``scores_by[label][rel]``: raw scores per candidate. For each category,
    the (candidate, threshold) with the best normalized score on the other
    categories is chosen, and applied to the held-out one. The in-sample
    figures use ``candidates[0]`` with the threshold swept on everything. ``chooser``
    (:func:`choose_threshold`) turns each sweep into a threshold, in-sample and in every fold.
    """
    rels = sorted(geoms)
    cats = by_category(rels)
    first = candidates[0]
    thr_in, norm_in = best_threshold(nab_mod, geoms, scores_by[first], rels, profile, chooser)
    in_sample = {c: category_figures(nab_mod, geoms, scores_by[first], rs, thr_in, profile) for c, rs in cats.items()}
    held_out = {}
    for c, rs in cats.items():
        train = [r for r in rels if r.split("/")[0] != c]
        trials = [(best_threshold(nab_mod, geoms, scores_by[label], train, profile, chooser), -i, label)
                  for i, label in enumerate(candidates)]
        (thr, train_norm), _, label = max(trials, key=lambda x: (x[0][1], x[1]))
        fig = category_figures(nab_mod, geoms, scores_by[label], rs, thr, profile)
        held_out[c] = fig | {"model": label, "train_normalized": train_norm}

    def mean(figs: dict) -> float | None:
        vals = [f["normalized"] for f in figs.values() if f["normalized"] is not None]
        return statistics.fmean(vals) if vals else None

    return {
        "profile": profile,
        "in_sample": {"normalized": norm_in, "threshold": thr_in, "model": first,
                      "categories": in_sample, "category_mean": mean(in_sample)},
        "held_out": {"categories": held_out, "category_mean": mean(held_out)},
    }


def run(nab: Path, windows: Path, candidates: Sequence[Candidate], cache: Path = CACHE,
        profile: str = PROFILE, progress=print, chooser: str = "argmax") -> dict:
    """Score (or load from the cache) every file with every candidate, then :func:`loco`."""
    nab_mod = load_scorer(nab)
    rels = sorted(json.loads(windows.read_text()))
    geoms = nab_mod.load_geometry(str(nab), str(windows), rels)
    scores_by = {}
    for cand in candidates:
        progress(f"raw scores of {len(rels)} files with {cand.label} (cache {cache}) ...")
        scores_by[cand.label] = {r: raw_scores(nab / "data", r, cand, cache) for r in rels}
    return loco(nab_mod, geoms, scores_by, [c.label for c in candidates], profile, chooser)


def table(result: dict, title: str):
    """A rich Table: per category, in-sample and held-out normalized, windows, false-positive rows."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("category", "in-sample", "held-out", "held-out model", "held-out thr", "windows found", "FP rows"):
        t.add_column(col, justify="left" if col == "category" else "right")

    def fmt(v):
        return "-" if v is None else f"{v:.1f}"

    ins, held = result["in_sample"], result["held_out"]
    for c, h in held["categories"].items():
        i = ins["categories"][c]
        t.add_row(c, fmt(i["normalized"]), fmt(h["normalized"]), h["model"], f"{h['threshold']:.4g}",
                  f"{h['detected']}/{h['windows']}", str(h["fp_rows"]))
    t.add_row("mean of categories", fmt(ins["category_mean"]), fmt(held["category_mean"]), "", "", "", "")
    t.add_row("whole split (in-sample sweep)", fmt(ins["normalized"]), "", ins["model"], f"{ins['threshold']:.4g}", "", "")
    return t
