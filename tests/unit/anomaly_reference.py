"""The default detector's round step as it was written in numpy before it was compiled
(detector/anomaly/kernel.py): an independent oracle for the compiled loop, test-only.

Every round holds at most one sample per series and is computed with whole-column numpy
operations, so it shares no code with the kernel but the state's layout.
"""

from __future__ import annotations

import numpy as np

from detector.anomaly.core import (
    CL_AGE, CL_LEN, CL_SUM, CL_SUM2, DEV, EXCESS, EXCESS2, HOLD_LEFT, INTERVAL, LONG, MEAN, N, N_CAL, N_CLU, N_FIXED, PEAK,
    RATE, RUN, SEAS_ERR, SHORT, SPREAD, STEP, STEP_SHORT, STUCK, T_FIRST, T_LAST, X_LAST, Y_LAST, ColumnarState,
)

_LN10 = float(np.log(10.0))
_F32_MAX = float(np.finfo(np.float32).max)


def reference_run(state: ColumnarState, rows: np.ndarray, t: np.ndarray, x: np.ndarray,
                  deviation: np.ndarray | None = None) -> np.ndarray:
    """Many samples of many series, round by round (each series' k-th sample in round k); with
    ``deviation``, each sample's deviation from its expected level is written there."""
    rows = np.asarray(rows, dtype=np.intp)
    t, x = np.asarray(t, dtype=np.float64), np.asarray(x, dtype=np.float64)
    out = np.empty(len(rows))
    for idx in rounds(rows):
        if deviation is not None:
            deviation[idx] = reference_deviation(state, rows[idx], t[idx], x[idx])
        with np.errstate(over="ignore"):  # the property test feeds ±1e300: overflow to inf is expected
            out[idx] = reference_step(state, rows[idx], t[idx], x[idx])
    return out


def reference_deviation(self: ColumnarState, rows: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """One round's signed relative deviations from the expected level (long-term level, plus the seasonal
    profile where it is used), from the state before the round: 0 at it and for a series' first sample,
    ±inf off an expected 0, NaN for a value that is not finite."""
    p = self.params
    s = self.scalars[rows]
    first = s[:, N] == 0
    long, t_first = np.where(first, x, s[:, LONG]), np.where(first, t, s[:, T_FIRST])
    prof = self.profiles[rows, (np.floor_divide(t, p.period / p.bins) % p.bins).astype(np.intp)].astype(np.float64)
    ready = ((t - t_first) >= 2.0 * p.period) & (s[:, SEAS_ERR] < p.season_gain * s[:, SPREAD])
    expected = long + np.where(ready, prof, 0.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        off = (x - expected) / np.abs(expected)
    return np.where(np.isfinite(x), np.where(np.isnan(off), 0.0, off), np.nan)


def reference_step(self: ColumnarState, rows: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The round step as numpy did it: one sample for each of ``rows`` (distinct)."""
    finite = np.isfinite(x)
    if not finite.all():
        scores = np.zeros(len(rows))
        keep = np.nonzero(finite)[0]
        if len(keep):
            scores[keep] = reference_step(self, rows[keep], t[keep], x[keep])
        return scores
    p = self.params
    s = self.scalars[rows]
    n = s[:, N]
    first = n == 0
    if first.any():  # a new series starts at its first value, with no spread yet
        s[first, SHORT] = s[first, LONG] = s[first, Y_LAST] = x[first]
        s[first, T_FIRST] = t[first]
    floor = p.rel_floor * np.abs(s[:, LONG]) + p.abs_floor

    # 1. the tests, against the state before x, on the deseasonalized value y
    b = (np.floor_divide(t, p.period / p.bins) % p.bins).astype(np.intp)
    prof = self.profiles[rows, b].astype(np.float64)
    ready = ((t - s[:, T_FIRST]) >= 2.0 * p.period) & (s[:, SEAS_ERR] < p.season_gain * s[:, SPREAD])
    y = np.where(ready, x - prof, x)
    spread = np.where(ready, s[:, SEAS_ERR], s[:, SPREAD])
    nt = self.n_tests
    stats = np.zeros((len(rows), nt))
    spike = (y - s[:, SHORT]) / (s[:, STEP] + floor)
    new_short = s[:, SHORT] + p.short_alpha * (y - s[:, SHORT])
    shift = (new_short - s[:, LONG]) / (spread + floor)
    step = np.abs(y - s[:, Y_LAST])
    step_short = s[:, STEP_SHORT] + p.vol_alpha * (step - s[:, STEP_SHORT])
    vol = np.log((step_short + floor) / (s[:, STEP] + floor))
    # the run of exact repeats of the raw value, counted on a series that has moved before
    if nt > STUCK:
        run = np.where((x == s[:, X_LAST]) & ~first, s[:, RUN] + 1.0, 0.0)
        stuck = np.where(s[:, STEP] > floor, run, 0.0)
    else:
        run = stuck = np.zeros(len(rows))
    for i, v in enumerate((spike, shift, vol, stuck)[:nt]):
        stats[:, i] = np.abs(v)
    stats = np.minimum(stats, 1e12)

    # 2. calibrate each test on its own history, keep the most surprising
    n_cal = N_FIXED + N_CAL * nt
    cal = s[:, N_FIXED:n_cal].reshape(len(rows), nt, N_CAL)
    mean, dev = cal[:, :, MEAN], cal[:, :, DEV] + 1e-9
    q = mean + p.tail_k * dev
    rate = _clamp(cal[:, :, RATE], p.min_rate, 0.5)
    base = -np.log10(rate)
    over = stats > q
    scale = cal[:, :, EXCESS]
    if nt > STUCK:  # a run is counted in samples: its tail scale is at least one
        scale = scale.copy()
        scale[:, STUCK] = np.maximum(scale[:, STUCK], 1.0)
    m1 = scale + 1e-9
    surprise = np.where(
        over,
        base + _tail(self, np.maximum(stats - q, 0.0), m1, np.maximum(cal[:, :, EXCESS2], m1 * m1)),
        base * _clamp((stats - mean) / (q - mean), 0.0, 1.0),
    )
    total = _bonferroni(self, surprise, stuck > 0)
    if p.interval_ref > 0:  # per interval_ref seconds, once an interval is known
        per_time = np.log10(np.maximum(s[:, INTERVAL], 1e-3) / p.interval_ref)
        total = total + np.where(n >= 2, per_time, 0.0)
    total = np.maximum(total, 0.0)
    warm = n >= p.warmup
    total = np.where(warm, total, 0.0)
    if p.hold > 0:
        fading = s[:, PEAK] * s[:, HOLD_LEFT] / p.hold
        news = np.maximum(total - fading, 0.0)
        alarm = news >= p.alarm
        s[:, PEAK] = np.where(alarm, total, s[:, PEAK])
        s[:, HOLD_LEFT] = np.where(alarm, p.hold, np.maximum(s[:, HOLD_LEFT] - 1, 0))
    else:
        news = total
    scores = _clamp(news / p.decades, 0.0, 1.0)

    # 3. learn, with the samples judged anomalous down-weighted
    incident = (total >= p.protect) | ((s[:, HOLD_LEFT] > 0) & p.protect_hold)
    w = np.where(incident, p.protect_weight, 1.0)
    young = 1.0 / (n + 1.0)  # running means while young, then exponential
    la = np.maximum(p.long_alpha, young) * w
    s[:, SHORT] = new_short
    s[:, STEP] += np.where(first, 0.0, la * (_huber(self, step, s[:, STEP], n) - s[:, STEP]))
    s[:, STEP_SHORT] = np.where(first, 0.0, step_short)
    s[:, SPREAD] += la * (_huber(self, np.abs(x - s[:, LONG]), s[:, SPREAD], n) - s[:, SPREAD])
    s[:, SEAS_ERR] += la * (_huber(self, np.abs(x - s[:, LONG] - prof), s[:, SEAS_ERR], n) - s[:, SEAS_ERR])
    v = self.visits[rows, b]
    pa = np.maximum(p.profile_alpha, 1.0 / (v + 1.0)) * w
    self.profiles[rows, b] = _clamp(prof + pa * ((x - s[:, LONG]) - prof), -_F32_MAX, _F32_MAX)
    self.visits[rows, b] = np.minimum(v, 254) + 1
    s[:, LONG] += la * (x - prof - s[:, LONG])
    s[:, Y_LAST] = y
    s[:, X_LAST] = x
    s[:, RUN] = run
    # the tests' own statistics learn every sample: they are the history
    # (from the settle-th sample on, and winsorized: one outlier moves them
    # by a bounded amount)
    m = np.maximum(n - p.settle, 0.0)
    learning = (n >= p.settle)[:, None]
    cw = (w if p.protect_calibration else np.ones_like(w))[:, None]
    sa = np.where(learning, np.maximum(p.stat_alpha, 1.0 / (m + 1.0))[:, None], 0.0) * cw
    ta = np.where(learning, np.maximum(p.tail_alpha, 1.0 / (m + 1.0))[:, None], 0.0) * cw
    cap = q + p.winsor * (scale + dev)
    capped = np.where(m[:, None] == 0, stats, np.minimum(stats, cap))
    d = capped - cal[:, :, MEAN]
    cal[:, :, MEAN] += sa * d
    cal[:, :, DEV] += sa * (np.abs(d) - cal[:, :, DEV])
    excess = np.maximum(capped - q, 0.0)
    plain = cal.copy()  # every exceedance teaches the tail
    plain[:, :, RATE] += ta * (over - plain[:, :, RATE])
    plain[:, :, EXCESS] += np.where(over, ta * (excess - plain[:, :, EXCESS]), 0.0)
    plain[:, :, EXCESS2] += np.where(over, ta * (excess * excess - plain[:, :, EXCESS2]), 0.0)
    if p.decluster <= 0:
        cal = plain
    else:  # the rate as without declustering; the excess moments once per cluster, when it ends
        learn = np.broadcast_to(learning, over.shape)
        cal[:, :, RATE] = np.where(learn, plain[:, :, RATE], cal[:, :, RATE])
        clu = s[:, n_cal:].reshape(len(rows), nt, N_CLU).copy()
        tc = ta
        if p.decluster_weight > 0:  # as if each of its first decluster_weight exceedances taught the mean
            tc = 1.0 - np.power(1.0 - ta, np.minimum(clu[:, :, CL_LEN], float(p.decluster_weight)))
        _decluster(p.decluster, clu, cal, over, excess, tc, learn)
        s[:, n_cal:] = clu.reshape(len(rows), -1)
    s[:, N_FIXED:n_cal] = cal.reshape(len(rows), -1)
    # the mean sample interval: a running mean, then exponential; one long
    # gap (an outage, a restart) counts as interval_clip intervals at most
    gap = np.maximum(t - s[:, T_LAST], 0.0)
    gap = np.where(n >= 2, np.minimum(gap, p.interval_clip * s[:, INTERVAL]), gap)
    ia = np.maximum(p.interval_alpha, 1.0 / np.maximum(n, 1.0))
    s[:, INTERVAL] = np.where(first, 0.0, s[:, INTERVAL] + ia * (gap - s[:, INTERVAL]))
    s[:, T_LAST] = t
    s[:, N] = n + 1
    self.scalars[rows] = s
    return scores

def _decluster(r: int, clu: np.ndarray, cal: np.ndarray, over: np.ndarray, excess: np.ndarray, tc: np.ndarray,
               learn: np.ndarray) -> None:
    """Runs declustering of the excess moments, in place on ``clu`` (rows x tests x (age, length, sums)) and
    ``cal``: a cluster starts at an exceedance when none is open, and teaches the mean of its excesses and of
    their squares once it has been quiet for ``r`` samples (with weight ``tc``); only samples that learn
    (``learn``) touch any of it."""
    age, length, total, total2 = clu[:, :, CL_AGE], clu[:, :, CL_LEN], clu[:, :, CL_SUM], clu[:, :, CL_SUM2]
    start = over & (age == 0.0)
    grown = np.where(over, 1.0, np.where(age > 0.0, age + 1.0, age))
    ends = learn & ~over & (age > 0.0) & (grown > r)
    with np.errstate(invalid="ignore", divide="ignore"):  # no open cluster: 0 / 0, never used
        m1, m2 = total / length, total2 / length
    cal[:, :, EXCESS] = np.where(ends, cal[:, :, EXCESS] + tc * (m1 - cal[:, :, EXCESS]), cal[:, :, EXCESS])
    cal[:, :, EXCESS2] = np.where(ends, cal[:, :, EXCESS2] + tc * (m2 - cal[:, :, EXCESS2]), cal[:, :, EXCESS2])
    new_age = np.where(ends, 0.0, grown)
    # exceedances in the open cluster, and the sums of their excesses and squared excesses
    new_length = np.where(over, np.where(start, 1.0, length + 1.0), np.where(ends, 0.0, length))
    new_total = np.where(over, np.where(start, excess, total + excess), np.where(ends, 0.0, total))
    new_total2 = np.where(over, np.where(start, excess * excess, total2 + excess * excess), np.where(ends, 0.0, total2))
    clu[:, :, CL_AGE] = np.where(learn, new_age, age)
    clu[:, :, CL_LEN] = np.where(learn, new_length, length)
    clu[:, :, CL_SUM] = np.where(learn, new_total, total)
    clu[:, :, CL_SUM2] = np.where(learn, new_total2, total2)


def _bonferroni(self: ColumnarState, surprise: np.ndarray, repeat: np.ndarray) -> np.ndarray:
    """The largest surprise less the union bound's share of each test: the stuck
    test takes part only on a repeat, with ``stuck_share`` of the budget there."""
    ids = self.test_ids
    if STUCK not in ids:
        return np.max(surprise[:, ids], axis=1) - np.log10(len(ids))
    others = [i for i in ids if i != STUCK]
    if not others:
        return np.where(repeat, surprise[:, STUCK], 0.0)
    main = np.max(surprise[:, others], axis=1) - np.log10(len(others))
    w = self.params.stuck_share
    on_repeat = np.maximum(main + np.log10(1.0 - w), surprise[:, STUCK] + np.log10(w))
    return np.where(repeat, on_repeat, main)

def _tail(self: ColumnarState, excess: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """``-log10`` of the generalized Pareto survival of ``excess`` (the part of
    the surprise above the tail's base), from the mean ``m1`` and mean square
    ``m2`` of past excesses: shape ``xi = (1 - m1^2 / var) / 2`` in
    ``[0, shape_max]``, scale ``m1 * (1 - xi)``; ``xi = 0`` is the exponential."""
    p = self.params
    if p.shape_max <= 0:
        return excess / (m1 * _LN10)
    var = np.maximum(m2 - m1 * m1, 1e-300)
    with np.errstate(over="ignore"):  # a variance near 0 gives -inf here, clipped to the exponential tail
        xi = _clamp(0.5 * (1.0 - m1 * m1 / var), 1e-9, p.shape_max)
    return np.log1p(xi * excess / (m1 * (1.0 - xi))) / (xi * _LN10)

def _huber(self: ColumnarState, size: np.ndarray, scale: np.ndarray, n: np.ndarray) -> np.ndarray:
    """What a deviation teaches a scale: in full up to ``clip`` scales, beyond that
    ``protect_weight`` of the excess (so a series that starts moving is learned)."""
    p = self.params
    if p.clip <= 0:
        return size
    cap = p.clip * scale
    clipped = np.minimum(size, cap) + p.protect_weight * np.maximum(size - cap, 0.0)
    return np.where(n < p.warmup, size, clipped)


def _clamp(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``np.clip(x, low, high)``, bit for bit (NaN and the sign of 0 too), at a fraction of its fixed
    cost: a round over a message's few hundred series pays per numpy call, and np.clip's Python
    wrapper costs several of the ufuncs it stands for.

    >>> x = np.array([-0.0, 0.5, 2.0, np.nan])
    >>> _clamp(x, 0.0, 1.0).tolist(), np.clip(x, 0.0, 1.0).tolist()
    ([-0.0, 0.5, 1.0, nan], [-0.0, 0.5, 1.0, nan])
    """
    return np.minimum(high, np.maximum(low, x))


def rounds(rows: np.ndarray) -> list[np.ndarray]:
    """Cut a batch into rounds: round k holds each series' k-th sample (positions, in order).

    >>> [r.tolist() for r in rounds(np.array([4, 4, 7, 4]))]
    [[0, 2], [1], [3]]
    """
    rows = np.asarray(rows)
    if len(rows) == 0:
        return []
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.r_[0, np.nonzero(np.diff(sorted_rows))[0] + 1]
    rank_sorted = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    if rank_sorted.max() == 0:
        return [np.arange(len(rows))]
    rank = np.empty(len(rows), dtype=np.intp)
    rank[order] = rank_sorted
    by_round = np.argsort(rank, kind="stable")
    bounds = np.r_[0, np.nonzero(np.diff(rank[by_round]))[0] + 1, len(rows)]
    return [by_round[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
