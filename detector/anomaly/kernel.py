"""The default detector's per-sample step, compiled: one pass over a batch, sample by sample.

:mod:`detector.anomaly.core` describes what a sample does to its series (test, calibrate, learn).
This module is that step written for one sample at a time and compiled with numba, so a batch
costs a loop over its samples instead of a few hundred numpy calls per *round* (each series' k-th
sample). With numpy, a round over a message's few hundred series paid about 200 µs of call
overhead whatever its size, and a catch-up message of 10 samples per series paid it ten times.

Samples are taken in the order given; a series' samples must be in time order among themselves,
and series are independent, so this equals the round-by-round order. The arithmetic is the same
operation for operation, with numpy's NaN rules for ``maximum`` / ``minimum`` (a NaN wins); only
the transcendental functions (``log``, ``log10``, ``log1p``) may round differently from numpy's
vectorized ones, in the last bit.

>>> import numpy as np
>>> from detector.anomaly.core import ColumnarState, Params
>>> state = ColumnarState(Params(warmup=5), capacity=1)
>>> scores = state.run(np.zeros(40, dtype=np.intp), 60.0 * np.arange(40), np.r_[np.ones(39), 50.0])
>>> float(scores[:39].max()), bool(scores[39] > 0.5)
(0.0, True)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

# scalar columns of ColumnarState.scalars (detector.anomaly.core keeps the names)
N, T_FIRST, Y_LAST, SHORT, LONG, STEP, SPREAD, STEP_SHORT, SEAS_ERR, PEAK, HOLD_LEFT, INTERVAL, T_LAST, X_LAST, RUN = (
    range(15))
N_FIXED = 15
MEAN, DEV, RATE, EXCESS, EXCESS2 = range(5)
N_CAL = 5
STUCK = 3
_LN10 = float(np.log(10.0))
_F32_MAX = float(np.finfo(np.float32).max)


class KernelParams(NamedTuple):
    """:class:`detector.anomaly.core.Params` as the compiled step takes them (plain numbers)."""

    warmup: float
    short_alpha: float
    long_alpha: float
    vol_alpha: float
    profile_alpha: float
    stat_alpha: float
    tail_k: float
    stuck_share: float
    tail_alpha: float
    decades: float
    shape_max: float
    interval_ref: float
    interval_alpha: float
    interval_clip: float
    protect: float
    protect_weight: float
    clip: float
    protect_hold: bool
    protect_calibration: bool
    hold: float
    alarm: float
    min_rate: float
    settle: float
    winsor: float
    season_gain: float
    period: float
    bins: int
    rel_floor: float
    abs_floor: float
    n_tests: int  # columns of tests (3, or 4 with the stuck test's)
    n_active: int  # how many tests take part in the union bound
    active: tuple[bool, bool, bool, bool]  # which tests take part


@njit(cache=True, inline="always")
def _max(a: float, b: float) -> float:
    """``np.maximum`` of two floats: a NaN on either side wins."""
    return a if (a >= b or a != a) else b


@njit(cache=True, inline="always")
def _min(a: float, b: float) -> float:
    """``np.minimum`` of two floats: a NaN on either side wins."""
    return a if (a <= b or a != a) else b


@njit(cache=True, inline="always")
def _clamp(x: float, low: float, high: float) -> float:
    return _min(high, _max(low, x))


@njit(cache=True, inline="always")
def _floor_divide(a: float, b: float) -> float:
    """``np.floor_divide`` of two floats (b != 0): Python's and numpy's divmod-based floor."""
    mod = np.fmod(a, b)
    div = (a - mod) / b
    if mod != 0.0 and ((b < 0.0) != (mod < 0.0)):
        div -= 1.0
    if div != 0.0:
        floor = math.floor(div)
        if div - floor > 0.5:
            floor += 1.0
        return floor
    return math.copysign(0.0, a / b)


@njit(cache=True, inline="always")
def _remainder(a: float, b: float) -> float:
    """``np.remainder`` of two floats (b != 0): the sign of the divisor."""
    mod = np.fmod(a, b)
    if mod != 0.0:
        if (b < 0.0) != (mod < 0.0):
            mod += b
        return mod
    return math.copysign(0.0, b)


@njit(cache=True, inline="always")
def _huber(size: float, scale: float, n: float, kp: KernelParams) -> float:
    """What a deviation teaches a scale (see ColumnarState._huber)."""
    if kp.clip <= 0.0:
        return size
    cap = kp.clip * scale
    clipped = _min(size, cap) + kp.protect_weight * _max(size - cap, 0.0)
    return size if n < kp.warmup else clipped


@njit(cache=True, inline="always")
def _tail(excess: float, m1: float, m2: float, kp: KernelParams) -> float:
    """``-log10`` of the generalized Pareto survival of ``excess`` (see ColumnarState._tail)."""
    if kp.shape_max <= 0.0:
        return excess / (m1 * _LN10)
    var = _max(m2 - m1 * m1, 1e-300)
    xi = _clamp(0.5 * (1.0 - m1 * m1 / var), 1e-9, kp.shape_max)
    return np.log1p(xi * excess / (m1 * (1.0 - xi))) / (xi * _LN10)


@njit(cache=True)
def score_samples(scalars: np.ndarray, profiles: np.ndarray, visits: np.ndarray, rows: np.ndarray,
                  t: np.ndarray, x: np.ndarray, kp: KernelParams) -> np.ndarray:
    """Score, then learn, each sample ``(rows[i], t[i], x[i])`` in order; returns the scores.

    ``scalars``, ``profiles`` and ``visits`` are ColumnarState's arrays, updated in place.
    """
    out = np.zeros(len(rows))
    nt = kp.n_tests
    stats = np.empty(4)
    surprise = np.empty(4)
    over = np.zeros(4, dtype=np.bool_)
    q = np.empty(4)
    scale = np.empty(4)
    dev = np.empty(4)
    bin_width = kp.period / kp.bins
    log_active = np.log10(float(kp.n_active))
    has_stuck = nt > STUCK
    stuck_in_bound = has_stuck and kp.active[STUCK]
    log_others = np.log10(float(kp.n_active - 1)) if kp.n_active > 1 else 0.0
    log_keep = np.log10(1.0 - kp.stuck_share)
    log_share = np.log10(kp.stuck_share)
    for i in range(len(rows)):
        xi = x[i]
        if not np.isfinite(xi):
            continue  # scores 0 and teaches nothing
        r = rows[i]
        ti = t[i]
        s = scalars[r]
        n = s[N]
        first = n == 0.0
        if first:  # a new series starts at its first value, with no spread yet
            s[SHORT] = xi
            s[LONG] = xi
            s[Y_LAST] = xi
            s[T_FIRST] = ti
        floor = kp.rel_floor * abs(s[LONG]) + kp.abs_floor

        # 1. the tests, against the state before x, on the deseasonalized value y
        b = int(_remainder(_floor_divide(ti, bin_width), float(kp.bins)))
        prof = float(profiles[r, b])
        ready = ((ti - s[T_FIRST]) >= 2.0 * kp.period) and (s[SEAS_ERR] < kp.season_gain * s[SPREAD])
        y = xi - prof if ready else xi
        spread = s[SEAS_ERR] if ready else s[SPREAD]
        stats[0] = abs((y - s[SHORT]) / (s[STEP] + floor))
        new_short = s[SHORT] + kp.short_alpha * (y - s[SHORT])
        stats[1] = abs((new_short - s[LONG]) / (spread + floor))
        step = abs(y - s[Y_LAST])
        step_short = s[STEP_SHORT] + kp.vol_alpha * (step - s[STEP_SHORT])
        stats[2] = abs(np.log((step_short + floor) / (s[STEP] + floor)))
        run = 0.0
        stuck = 0.0
        if has_stuck:  # the run of exact repeats of the raw value, on a series that has moved before
            run = s[RUN] + 1.0 if (xi == s[X_LAST] and not first) else 0.0
            stuck = run if s[STEP] > floor else 0.0
            stats[STUCK] = abs(stuck)

        # 2. calibrate each test on its own history
        for j in range(nt):
            stats[j] = _min(stats[j], 1e12)
            c = N_FIXED + j * N_CAL
            mean = s[c + MEAN]
            dev[j] = s[c + DEV] + 1e-9
            q[j] = mean + kp.tail_k * dev[j]
            rate = _clamp(s[c + RATE], kp.min_rate, 0.5)
            base = -np.log10(rate)
            over[j] = stats[j] > q[j]
            scale[j] = s[c + EXCESS]
            if j == STUCK:  # a run is counted in samples: its tail scale is at least one
                scale[j] = _max(scale[j], 1.0)
            m1 = scale[j] + 1e-9
            if over[j]:
                surprise[j] = base + _tail(_max(stats[j] - q[j], 0.0), m1, _max(s[c + EXCESS2], m1 * m1), kp)
            else:
                surprise[j] = base * _clamp((stats[j] - mean) / (q[j] - mean), 0.0, 1.0)

        # the most surprising test, less the union bound over the tests that could fire
        if not stuck_in_bound:
            top = -np.inf
            seen = False
            for j in range(nt):
                if kp.active[j]:
                    top = surprise[j] if not seen else _max(top, surprise[j])
                    seen = True
            total = top - log_active
        else:
            repeat = stuck > 0.0
            if kp.n_active == 1:
                total = surprise[STUCK] if repeat else 0.0
            else:
                top = -np.inf
                seen = False
                for j in range(nt):
                    if kp.active[j] and j != STUCK:
                        top = surprise[j] if not seen else _max(top, surprise[j])
                        seen = True
                main = top - log_others
                if repeat:
                    total = _max(main + log_keep, surprise[STUCK] + log_share)
                else:
                    total = main
        if kp.interval_ref > 0.0:  # per interval_ref seconds, once an interval is known
            total = total + (np.log10(_max(s[INTERVAL], 1e-3) / kp.interval_ref) if n >= 2.0 else 0.0)
        total = _max(total, 0.0)
        if not n >= kp.warmup:
            total = 0.0
        if kp.hold > 0.0:
            fading = s[PEAK] * s[HOLD_LEFT] / kp.hold
            news = _max(total - fading, 0.0)
            if news >= kp.alarm:
                s[PEAK] = total
                s[HOLD_LEFT] = kp.hold
            else:
                s[HOLD_LEFT] = _max(s[HOLD_LEFT] - 1.0, 0.0)
        else:
            news = total
        out[i] = _clamp(news / kp.decades, 0.0, 1.0)

        # 3. learn, with the samples judged anomalous down-weighted
        incident = (total >= kp.protect) or ((s[HOLD_LEFT] > 0.0) and kp.protect_hold)
        w = kp.protect_weight if incident else 1.0
        young = 1.0 / (n + 1.0)  # running means while young, then exponential
        la = _max(kp.long_alpha, young) * w
        s[SHORT] = new_short
        s[STEP] += 0.0 if first else la * (_huber(step, s[STEP], n, kp) - s[STEP])
        s[STEP_SHORT] = 0.0 if first else step_short
        s[SPREAD] += la * (_huber(abs(xi - s[LONG]), s[SPREAD], n, kp) - s[SPREAD])
        s[SEAS_ERR] += la * (_huber(abs(xi - s[LONG] - prof), s[SEAS_ERR], n, kp) - s[SEAS_ERR])
        v = visits[r, b]
        pa = _max(kp.profile_alpha, 1.0 / (v + 1.0)) * w
        profiles[r, b] = _clamp(prof + pa * ((xi - s[LONG]) - prof), -_F32_MAX, _F32_MAX)
        visits[r, b] = min(v, 254) + 1
        s[LONG] += la * (xi - prof - s[LONG])
        s[Y_LAST] = y
        s[X_LAST] = xi
        s[RUN] = run
        # the tests' own statistics learn every sample, from the settle-th on, winsorized
        m = _max(n - kp.settle, 0.0)
        cw = w if kp.protect_calibration else 1.0
        learning = n >= kp.settle
        sa = (_max(kp.stat_alpha, 1.0 / (m + 1.0)) if learning else 0.0) * cw
        ta = (_max(kp.tail_alpha, 1.0 / (m + 1.0)) if learning else 0.0) * cw
        for j in range(nt):
            c = N_FIXED + j * N_CAL
            cap = q[j] + kp.winsor * (scale[j] + dev[j])
            capped = stats[j] if m == 0.0 else _min(stats[j], cap)
            d = capped - s[c + MEAN]
            s[c + MEAN] += sa * d
            s[c + DEV] += sa * (abs(d) - s[c + DEV])
            s[c + RATE] += ta * ((1.0 if over[j] else 0.0) - s[c + RATE])
            excess = _max(capped - q[j], 0.0)
            s[c + EXCESS] += ta * (excess - s[c + EXCESS]) if over[j] else 0.0
            s[c + EXCESS2] += ta * (excess * excess - s[c + EXCESS2]) if over[j] else 0.0
        # the mean sample interval: a running mean, then exponential; a long gap counts
        # as interval_clip intervals at most
        gap = _max(ti - s[T_LAST], 0.0)
        if n >= 2.0:
            gap = _min(gap, kp.interval_clip * s[INTERVAL])
        ia = _max(kp.interval_alpha, 1.0 / _max(n, 1.0))
        s[INTERVAL] = 0.0 if first else s[INTERVAL] + ia * (gap - s[INTERVAL])
        s[T_LAST] = ti
        s[N] = n + 1.0
    return out


@njit(cache=True)
def counter_rates(last_t: np.ndarray, last_v: np.ndarray, rows: np.ndarray, t: np.ndarray,
                  v: np.ndarray) -> np.ndarray:
    """Per-second rates of counter samples ``(rows[i], t[i], v[i])`` in order (NaN where no earlier
    sample is known); ``last_t`` / ``last_v`` (each series' last finite sample) are updated in place.
    A decrease is a reset: the increase is the new value itself."""
    out = np.empty(len(rows))
    for i in range(len(rows)):
        r = rows[i]
        prev_t = last_t[r]
        prev_v = last_v[r]
        increase = v[i] - prev_v if v[i] >= prev_v else v[i]
        dt = t[i] - prev_t
        out[i] = increase / dt if dt > 0.0 else np.nan
        if np.isfinite(v[i]):
            last_t[r] = t[i]
            last_v[r] = v[i]
    return out


def warm_up() -> None:
    """Compile (or load from numba's cache) both loops now, before the first batch: the first
    compile takes seconds, which a worker's first message should not wait for."""
    from detector.anomaly.core import ColumnarState, Params  # the state layout and params the worker uses

    for params in (Params(), Params(stuck=True)):
        state = ColumnarState(params, capacity=1)
        state.run(np.zeros(1, dtype=np.intp), np.zeros(1), np.ones(1))
    counter_rates(np.full(1, np.nan), np.full(1, np.nan), np.zeros(1, dtype=np.intp), np.zeros(1), np.ones(1))
