"""How a fold turns NAB's score-vs-threshold curve into one threshold (bench/nab_loco.choose_threshold)."""

import numpy as np
import pytest

from bench import nab_loco


def _f(thr_desc, tot_desc, t):
    return nab_loco.curve_value(thr_desc, tot_desc, t)


# a narrow spike: 10 on (0.500, 0.505], a broad shoulder worth 9 on (0.30, 0.50], 2 below 0.30, 0 above 0.505
SPIKE = (np.array([1.1, 0.505, 0.5, 0.3]), np.array([0.0, 10.0, 9.0, 2.0]))


def test_curve_value_is_the_sweeps_step_function():
    thr, tot = SPIKE
    assert _f(thr, tot, 0.505) == 10.0  # a row scoring exactly the threshold is a detection
    assert _f(thr, tot, 0.5051) == 0.0
    assert _f(thr, tot, 0.5) == 9.0 and _f(thr, tot, 0.31) == 9.0
    assert _f(thr, tot, 0.3) == 2.0 and _f(thr, tot, 0.0) == 2.0
    assert _f(thr, tot, 1.05) == 0.0


def test_argmax_sits_on_the_spike():
    assert nab_loco.choose_threshold(*SPIKE, "argmax") == 0.505


def test_argmax_takes_the_highest_threshold_among_ties():
    thr, tot = np.array([1.1, 0.8, 0.6, 0.4]), np.array([0.0, 5.0, 5.0, 1.0])
    assert nab_loco.choose_threshold(thr, tot, "argmax") == 0.8


def test_smooth_prefers_a_broad_range_to_an_isolated_spike():
    # 10 on (0.700, 0.705] alone (1 around it), 9 on (0.30, 0.50]
    thr, tot = np.array([1.1, 0.705, 0.7, 0.5, 0.3]), np.array([0.0, 10.0, 1.0, 9.0, 2.0])
    assert nab_loco.choose_threshold(thr, tot, "argmax") == 0.705
    t = nab_loco.choose_threshold(thr, tot, "smooth")
    h = nab_loco.SMOOTH_HALF_WIDTH
    # the whole neighbourhood lies in the broad range (average 9); any window over the spike averages <= 3.25
    assert 0.3 + h - 1e-12 <= t <= 0.5 - h + 1e-12
    assert _f(thr, tot, t) == 9.0


def test_smooth_leans_towards_a_spike_on_a_shoulder():
    # the spike sits on the shoulder: a window holding both averages more than the shoulder alone, so the
    # smoothed choice stays within h of the spike, below it (0.495: the spike's row range plus 0.015 of shoulder)
    t = nab_loco.choose_threshold(*SPIKE, "smooth")
    assert t == pytest.approx(0.505 - nab_loco.SMOOTH_HALF_WIDTH)
    assert _f(*SPIKE, t) == 9.0


def test_smooth_is_the_argmax_of_the_averaged_curve_by_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(3, 40))
        thr = np.r_[1.1, np.sort(rng.uniform(0.05, 0.95, n))[::-1]]
        tot = np.r_[0.0, np.cumsum(rng.normal(0, 1, n))]
        t = nab_loco.choose_threshold(thr, tot, "smooth")
        h = nab_loco.SMOOTH_HALF_WIDTH
        grid = np.linspace(0, 1, 2001)

        def avg(c):  # a Riemann average of the step function over [c - h, c + h]
            u = np.linspace(c - h, c + h, 4001)
            return np.mean([_f(thr, tot, x) for x in u])

        best_grid = max(avg(c) for c in grid[::10])
        assert avg(t) >= best_grid - 0.02 * (np.ptp(tot) + 1)
        assert 0.0 <= t <= 1.0


def test_plateau_takes_the_centre_of_the_widest_run_within_tolerance():
    # scale 1: one normalized point is 1 raw. Best 10 on (0.70, 0.72]; 9.5 (within 1) on (0.20, 0.60]; 5 between
    thr = np.array([1.1, 0.72, 0.70, 0.60, 0.20])
    tot = np.array([0.0, 10.0, 5.0, 9.5, 3.0])
    t = nab_loco.choose_threshold(thr, tot, "plateau", scale=1.0)
    assert t == pytest.approx(0.40)
    # with a tolerance smaller than 0.5 (scale 0.4: one point is 0.4 raw) only the peak's own run qualifies
    t = nab_loco.choose_threshold(thr, tot, "plateau", scale=0.4)
    assert t == pytest.approx(0.71)


def test_plateau_joins_adjacent_good_intervals():
    thr = np.array([1.1, 0.9, 0.8, 0.5, 0.1])
    tot = np.array([0.0, 3.0, 9.6, 10.0, 2.0])  # 9.6 on (0.5, 0.8] and 10 on (0.1, 0.5]: one run (0.1, 0.8]
    assert nab_loco.choose_threshold(thr, tot, "plateau", scale=1.0) == pytest.approx(0.45)


def test_unknown_chooser_is_an_error():
    with pytest.raises(ValueError):
        nab_loco.choose_threshold(*SPIKE, "median")


def test_loco_applies_the_chooser_in_sample_and_in_every_fold():
    nab = nab_loco.load_scorer(nab_loco.NAB)
    geoms = {f"{c}/1.csv": nab_loco._toy_geom(nab, 200, [(100, 119)]) for c in "abc"}
    scores = {r: np.zeros(200) for r in geoms}
    for r, peak in zip(sorted(geoms), (0.8, 0.5, 0.6)):
        scores[r][101] = peak
    scores["c/1.csv"][60] = 0.3  # a false positive far below every window's peak
    arg = nab_loco.loco(nab, geoms, {"m": scores}, ["m"], chooser="argmax")
    pla = nab_loco.loco(nab, geoms, {"m": scores}, ["m"], chooser="plateau")
    # argmax sits on the lowest window peak that catches all (0.5); the plateau of "all three found, no FP" is
    # (0.3, 0.5], whose centre is 0.4
    assert arg["in_sample"]["threshold"] == 0.5
    assert pla["in_sample"]["threshold"] == pytest.approx(0.4)
    for out in (arg, pla):
        whole = nab_loco.category_figures(nab, geoms, scores, sorted(geoms), out["in_sample"]["threshold"])
        assert out["in_sample"]["normalized"] == pytest.approx(whole["normalized"])
    # b held out: argmax on a and c chooses 0.6 and misses b's 0.5; the plateau's centre (0.45) finds it
    assert arg["held_out"]["categories"]["b"]["detected"] == 0
    assert pla["held_out"]["categories"]["b"]["detected"] == 1
