"""Nested leave-one-category-out (bench/nab_loco.py): knobs are never chosen on the category scored."""

import numpy as np

from bench import nab_loco


def _corpus():
    nab = nab_loco.load_scorer(nab_loco.NAB)
    geoms = {
        "a/1.csv": nab_loco._toy_geom(nab, 200, [(100, 119)]),
        "b/1.csv": nab_loco._toy_geom(nab, 200, [(100, 119)]),
        "c/1.csv": nab_loco._toy_geom(nab, 200, [(100, 119)]),
    }
    # a and b: the anomaly scores 0.8 at the window's start, nothing else passes 0.5;
    # c: the anomaly only reaches 0.6 and a false positive scores 0.7
    base = {r: np.zeros(200) for r in geoms}
    base["a/1.csv"][101] = base["b/1.csv"][101] = 0.8
    base["c/1.csv"][101] = 0.6
    base["c/1.csv"][60] = 0.7
    return nab, geoms, base


def test_held_out_threshold_is_chosen_on_the_other_categories():
    nab, geoms, scores = _corpus()
    out = nab_loco.loco(nab, geoms, {"m": scores}, ["m"])
    held = out["held_out"]["categories"]
    # c held out: a and b choose 0.8, which misses c's window (0.6) and its false positive (0.7)
    assert held["c"]["threshold"] == 0.8
    assert held["c"]["detected"] == 0 and held["c"]["fp_rows"] == 0
    assert held["c"]["normalized"] == 0.0
    # in-sample, one threshold for all: 0.6 catches every window at the cost of c's false positive
    ins = out["in_sample"]
    assert ins["threshold"] == 0.6
    assert ins["categories"]["c"]["detected"] == 1 and ins["categories"]["c"]["fp_rows"] == 1
    assert out["held_out"]["category_mean"] < ins["category_mean"]


def test_model_choice_is_made_without_the_held_out_category():
    nab, geoms, good = _corpus()
    bad = {r: np.zeros(200) for r in geoms}
    bad["c/1.csv"][101] = 0.9  # only helps on c
    out = nab_loco.loco(nab, geoms, {"good": good, "bad": bad}, ["good", "bad"])
    held = out["held_out"]["categories"]
    assert held["c"]["model"] == "good"  # chosen on a and b, where "bad" finds nothing
    assert held["a"]["model"] == "good"


def test_raw_scores_are_cached_and_match_score_csv(tmp_path):
    import csv

    from pipelines.score_csv_cli import score_file

    data = tmp_path / "data" / "cat"
    data.mkdir(parents=True)
    rng = np.random.default_rng(3)
    with open(data / "f.csv", "w") as f:
        f.write("timestamp,value\n")
        for i, v in enumerate(rng.normal(size=400)):
            f.write(f"2020-01-01 00:{i // 60:02d}:{i % 60:02d},{v + (8 if i == 300 else 0)}\n")
    cand = nab_loco.Candidate("default", "default")
    cache = tmp_path / "cache"
    first = nab_loco.raw_scores(tmp_path / "data", "cat/f.csv", cand, cache)
    assert len(list(cache.iterdir())) == 1
    again = nab_loco.raw_scores(tmp_path / "data", "cat/f.csv", cand, cache)
    np.testing.assert_array_equal(first, again)
    score_file(str(data / "f.csv"), str(tmp_path / "out.csv"))
    with open(tmp_path / "out.csv") as f:
        expected = [float(r["anomaly_score"]) for r in csv.DictReader(f)]
    np.testing.assert_array_equal(first, expected)
    assert first[300] > 0.3


def test_param_trials_apply_to_every_loco_candidate():
    import argparse

    import pytest

    from bench import nab

    assert nab.param_changes(["warmup=288", "protect_hold=yes"]) == (("warmup", 288), ("protect_hold", True))
    with pytest.raises(SystemExit, match="unknown parameter"):
        nab.param_changes(["warm_up=1"])
    cands = nab.candidates(argparse.Namespace(param=["warmup=288"]))
    assert [c.model for c in cands] == ["default", "weekly"]
    assert all(c.params == (("warmup", 288),) for c in cands)
    assert nab.candidates(argparse.Namespace(param=[])) == nab_loco.CANDIDATES
    chosen = nab.candidates(argparse.Namespace(param=[], choose=["shape_max=0.1,0.2"]))
    assert chosen[:2] == nab_loco.CANDIDATES
    assert [(c.model, c.params) for c in chosen[2:]] == [("default", (("shape_max", 0.1),)),
                                                         ("default", (("shape_max", 0.2),))]
