"""The default detector's per-sample step, compiled: one pass over a batch, sample by sample.

:mod:`detector.anomaly.core` describes what a sample does to its series (test, calibrate, learn).
That step is written for one sample at a time in ``_kernel.pyx`` (Cython, built by ``pip install``),
so a batch costs a loop over its samples instead of a few hundred numpy calls per *round* (each
series' k-th sample); this module names the state's layout and the params as the loop takes them.
With numpy, a round over a message's few hundred series paid about 200 µs of call overhead whatever
its size, and a catch-up message of 10 samples per series paid it ten times.

Samples are taken in the order given; a series' samples must be in time order among themselves,
and series are independent, so this equals the round-by-round order. The arithmetic is the same
operation for operation, with numpy's NaN rules for ``maximum`` / ``minimum`` (a NaN wins); only
the transcendental functions (``log``, ``log10``, ``log1p``, the C library's) may round differently
from numpy's vectorized ones, in the last bit.

>>> import numpy as np
>>> from detector.anomaly.core import ColumnarState, Params
>>> state = ColumnarState(Params(warmup=5), capacity=1)
>>> scores = state.run(np.zeros(40, dtype=np.intp), 60.0 * np.arange(40), np.r_[np.ones(39), 50.0])
>>> float(scores[:39].max()), bool(scores[39] > 0.5)
(0.0, True)
"""

from __future__ import annotations

from typing import NamedTuple

from detector.anomaly._kernel import LAYOUT, counter_rates, score_samples  # noqa: F401  (the compiled loops)

# The state's layout, as the compiled module was built with it: scalar columns of
# ColumnarState.scalars, then per test N_CAL calibration fields (detector.anomaly.core keeps the names), then,
# with declustering only, per test N_CLU fields of its open cluster of exceedances (its age in samples since its
# last exceedance, its number of exceedances, and the sums of their excesses and of their squares).
(N, T_FIRST, Y_LAST, SHORT, LONG, STEP, SPREAD, STEP_SHORT, SEAS_ERR, PEAK, HOLD_LEFT, INTERVAL, T_LAST, X_LAST, RUN,
 N_FIXED, MEAN, DEV, RATE, EXCESS, EXCESS2, N_CAL, STUCK, CL_AGE, CL_LEN, CL_SUM, CL_SUM2, N_CLU) = LAYOUT


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
    n_tests: int  # columns of tests (3, 4 with the stuck test's)
    n_active: int  # how many tests take part in the union bound
    active: tuple[bool, bool, bool, bool]  # which tests take part
    decluster: float  # 0: every exceedance teaches the excess moments; r >= 1: a cluster ends after r quiet samples
    decluster_weight: float  # a cluster of L exceedances teaches its mean excess as min(L, c) samples would (0: as one)
