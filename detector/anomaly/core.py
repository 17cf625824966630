"""The default per-series detector: one row of state per series, in numpy arrays.

Every series owns one row of a float64 matrix (scalars) and one row of two
small matrices for its seasonal profile (float32 values, uint8 visit counts).
A batch of samples from many series is scored, then learned, sample by sample
in one compiled loop (:mod:`detector.anomaly.kernel`), in order within each
series. A single series fed one sample at a time goes through exactly the same
code.

What one sample ``x`` at time ``t`` does to its series:

1. **Tests, before learning.** Once two periods have been seen, and if the
   seasonal profile (value by time-of-period bin, a day by default) explains
   the series better than a flat level does, ``x`` is first deseasonalized
   (``y = x - profile[bin]``); else ``y = x``. Three scale-free statistics are
   computed against the state *before* ``y`` is learned:

   - *spike*: distance of ``y`` from the short-term level, in units of the
     series' typical step (mean absolute first difference);
   - *shift*: distance of the short-term level from the long-term level, in
     units of the typical spread around the (seasonal) expectation;
   - *volatility*: the log ratio of the recent step size to the long-run one
     (a series gone suddenly flat, or suddenly noisy);
   - *stuck* (``stuck=True``, the default; off in the ``classic`` model): the length of the current run of exact
     repeats of the raw value
     (0 when it changed), on a series that has moved before: a sensor or an
     exporter that stopped updating. A noisy series that moves every sample
     drifts from its expected path only slowly when it freezes, so the other
     tests see it late; its run of repeats is impossible at once. A series that
     repeats itself routinely (quantized, idle at 0) learns how long its runs
     get, like every other test.

2. **Calibrate each test on the series' own history.** A test's value is
   turned into a tail probability by a peaks-over-threshold model: above
   ``u = mean + tail_k * deviation`` of its own history, excesses follow a
   generalized Pareto distribution whose mean and shape come from the running
   first and second moments of the excesses (method of moments), so
   ``log10 p = log10(rate) - log10(1 + shape * excess / scale) / shape``.
   The shape is kept in ``[0, shape_max]``: 0 is the exponential tail (a
   series with light tails is judged as before); a series whose history has
   heavy tails (bursty counts, traffic) gets a heavier tail, so its routine
   bursts are not ten-decade surprises while a burst far beyond its history
   still is. The bound stays below 1/4, where the moment estimate stops being
   reliable (its variance needs the fourth moment); within that range its value
   was chosen on NAB's development split (0.1 to 0.175 score alike there, 0.25
   gives back most of the gain).
   The surprise of the sample is the largest ``-log10 p`` over the tests, less
   ``log10`` of the number of tests (Bonferroni). The union bound only needs
   the tests that can fire on this sample: the stuck test can only on a repeat,
   so a sample that changed pays for three tests, and a repeat splits the
   budget, ``stuck_share`` to the stuck test and the rest to the other three
   (a weighted Bonferroni). The run test's tail scale is at least one sample:
   on a series that never repeated, each repeat then adds ``1/ln 10`` decade
   over the tail's base, so a continuous series that freezes alarms within a
   few samples rather than at its first repeat.

   *Declustering* (``decluster=r``; the default is ``decluster=1`` with
   ``decluster_weight=10``, chosen in issue 11's eighth round; off in the
   ``classic`` model). Without it every sample of an excursion is an
   exceedance that teaches the excess moments, so one long excursion (a frozen
   sensor's run of repeats, a sustained shift) widens the tail as much as many
   separate ones, while it is happening. With it, as extreme-value practice
   does (runs declustering), exceedances fewer than ``r`` quiet samples apart
   form one cluster, which teaches the excess moments once, when it ends: the
   mean of its excesses and the mean of their squares, with weight
   ``1 - (1 - a)^min(L, decluster_weight)`` for a cluster of ``L``
   exceedances, ``a`` the per-sample weight (``decluster_weight=0``: ``a``, as
   one sample). So during the cluster the tail it is judged against stays the
   one learned before it; an excursion that recurs (a daily step) is learned
   about as fast as without declustering, while one long excursion teaches at
   most ``decluster_weight`` samples' worth, after it has ended. The
   exceedance rate still counts every exceedance, per sample, as without
   declustering, so the tail's base of a series with long excursions is the
   one it has without declustering.

   **Per unit of time, not per sample.** A series scraped every 15 s makes 20
   tests in the time a 5-minute series makes one, so a per-sample tail
   probability means 20 times the false alarms per day there. The surprise is
   therefore expressed per ``interval_ref`` seconds (five minutes): it gains
   ``log10(interval / interval_ref)``, with ``interval`` the series' running
   mean sample interval (gaps clipped), i.e. the Bonferroni correction for the
   number of samples per reference interval. A 5-minute series is unchanged,
   an hourly one gains 1.08 decades, a 15-second one loses 1.3.

   The published score is ``surprise / decades`` clipped to [0, 1]: a score of
   0.5 means a tail probability of 10^-(decades/2) per five minutes on this
   series' own history, on every series. After an alarm, for ``hold`` samples
   (the detector's own statistics adapt per sample, so the transient an
   incident leaves in them lasts a number of samples, not a time), only the
   part of the surprise above the (linearly fading) alarm's own surprise is
   news: one incident is one onset. A sample whose news reaches ``alarm``
   decades is an alarm: the hold restarts, fading from its surprise. So a
   surprise that climbs sample by sample publishes its first sample over
   ``alarm`` and then only what it climbs above that.

3. **Learn, protected.** A sample whose surprise passes ``protect`` decades
   teaches the baseline (long level, scales, profile) with ``protect_weight``
   only, and any deviation beyond ``clip`` scales teaches the scales only
   ``protect_weight`` of its excess (a Huber-like bound that, unlike the
   calibrated surprise, does not get used to a burst of outliers), so an
   incident does not become the norm; the short-term level always follows, and
   a change that lasts is learned in the end. The tests' own statistics
   (step 2) learn from every sample, winsorized: they *should* get used to a
   series whose history is spiky, which is what keeps one threshold fair
   across series.

Warm-up: the first ``warmup`` samples of a series score 0.0 (and are learned).
A constant series has zero scales: its tests are measured against a tiny
floor, so it scores 0 while it stays constant and high when it moves.
NaN and infinite values (staleness markers among them) score 0.0 and teach
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# the state's layout lives with the compiled step that reads it: 15 scalar columns
# (N, T_FIRST, ..., RUN), then per test: mean, deviation, exceedance rate, mean
# excess, mean squared excess
from detector.anomaly.kernel import (  # noqa: F401  (re-exported: tests and benches read columns by name)
    CL_AGE, CL_LEN, CL_SUM, CL_SUM2, EXCESS, EXCESS2, HOLD_LEFT, INTERVAL, LONG, MEAN, N, N_CAL, N_FIXED, PEAK, RATE, RUN, SEAS_ERR, SHORT, SPREAD,
    STEP, STEP_SHORT, T_FIRST, T_LAST, X_LAST, Y_LAST, DEV, N_CLU, KernelParams, score_samples,
)
from detector.anomaly.kernel import STUCK as _KERNEL_STUCK

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
TESTS = ("spike", "shift", "volatility", "stuck")
STUCK = TESTS.index("stuck")
assert STUCK == _KERNEL_STUCK and len(TESTS) == STUCK + 1, "the compiled step's test columns follow TESTS"


@dataclass(frozen=True)
class Params:
    """The detector's configuration: one for every series, no per-series tuning."""

    warmup: int = 100  # samples scored 0.0 while the statistics settle
    short_alpha: float = 0.3  # short-term level
    long_alpha: float = 0.003  # long-term level and scales
    vol_alpha: float = 0.1  # recent step size
    profile_alpha: float = 0.1  # per visit of a profile bin
    stat_alpha: float = 0.002  # mean and deviation of each test
    tail_k: float = 2.0  # the tail starts at mean + tail_k * deviation
    stuck: bool = True  # add the stuck test to ``tests`` (the ``classic`` model has it off)
    stuck_share: float = 0.1  # on a repeat, the stuck test's share of the false-alarm budget
    tail_alpha: float = 0.005  # exceedance rate and mean excess
    # runs declustering of each test's excess moments (0: off, the ``classic`` model): exceedances fewer than
    # ``decluster`` quiet samples apart are one cluster, which teaches the mean of its excesses and of their
    # squares once, when it ends; the exceedance rate still counts every exceedance
    decluster: int = 1
    # a declustered cluster of L exceedances teaches as min(L, decluster_weight) samples would (0: as one)
    decluster_weight: int = 10
    decades: float = 10.0  # score 1.0 at a tail probability of 10^-decades (per interval_ref)
    shape_max: float = 0.15  # upper bound of the tail shape (0: exponential tails only)
    interval_ref: float = 300.0  # tail probabilities per this many seconds (0: per sample)
    interval_alpha: float = 0.01  # running mean of the sample interval ...
    interval_clip: float = 4.0  # ... a gap counts as at most this many mean intervals
    protect: float = 5.0  # decades of surprise above which a sample is an anomaly ...
    protect_weight: float = 0.05  # ... and teaches the baseline with this weight only
    clip: float = 3.0  # deviations beyond clip * scale teach the scales protect_weight of the excess
    protect_hold: bool = False  # whether the whole hold after an alarm is protected
    protect_calibration: bool = False  # whether anomalies also teach the tests' statistics less
    hold: int = 150  # samples after an alarm during which only a larger surprise is news
    alarm: float = 3.0  # decades of surprise that make an alarm
    min_rate: float = 0.05  # the exceedance rate is not believed below this
    settle: int = 10  # samples before the tests' own statistics start learning
    winsor: float = 50.0  # a test value teaches at most q + winsor * (excess + deviation)
    tests: tuple[str, ...] = TESTS[:3]
    # the seasonal period in seconds and its bin count; the profile is used once
    # two periods are seen and it explains the series better than a flat level
    season_gain: float = 1.0
    period: float = DAY_S
    bins: int = 144
    rel_floor: float = 1e-9  # scale floor relative to the level's magnitude
    abs_floor: float = 1e-12


@dataclass
class ColumnarState:
    """State of ``capacity`` series, one row each."""

    params: Params
    capacity: int = 0
    scalars: np.ndarray = field(init=False)
    profiles: np.ndarray = field(init=False)
    visits: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        unknown = set(self.params.tests) - set(TESTS)
        if unknown:
            raise ValueError(f"unknown anomaly tests {sorted(unknown)}; known: {list(TESTS)}")
        names = tuple(self.params.tests) + (("stuck",) if self.params.stuck and "stuck" not in self.params.tests else ())
        self.test_ids = [TESTS.index(name) for name in names]
        # calibration columns for the stuck test only where used (it is the last one)
        self.n_tests = STUCK + 1 if STUCK in self.test_ids else STUCK
        self.n_scalars = N_FIXED + N_CAL * self.n_tests
        if self.params.decluster < 0:
            raise ValueError(f"decluster is a number of quiet samples (0: off), not {self.params.decluster}")
        if self.params.decluster_weight < 0:
            raise ValueError(f"decluster_weight is a number of samples (0: as one), not {self.params.decluster_weight}")
        if self.params.decluster > 0:  # each test's open cluster (its age, length and sums of excesses)
            self.n_scalars += N_CLU * self.n_tests
        self.scalars = np.zeros((self.capacity, self.n_scalars), dtype=np.float64)
        self.profiles = np.zeros((self.capacity, self.params.bins), dtype=np.float32)
        self.visits = np.zeros((self.capacity, self.params.bins), dtype=np.uint8)
        p = self.params
        self.kernel_params = KernelParams(  # the params as the compiled loop takes them
            float(p.warmup), p.short_alpha, p.long_alpha, p.vol_alpha, p.profile_alpha, p.stat_alpha, p.tail_k,
            p.stuck_share, p.tail_alpha, p.decades, p.shape_max, p.interval_ref, p.interval_alpha, p.interval_clip,
            p.protect, p.protect_weight, p.clip, bool(p.protect_hold), bool(p.protect_calibration), float(p.hold),
            p.alarm, p.min_rate, float(p.settle), p.winsor, p.season_gain, float(p.period), int(p.bins), p.rel_floor,
            p.abs_floor, self.n_tests, len(self.test_ids), tuple(i in self.test_ids for i in range(len(TESTS))),
            float(p.decluster), float(p.decluster_weight))

    @property
    def bytes_per_series(self) -> int:
        return self.n_scalars * 8 + self.params.bins * 5

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        for name in ("scalars", "profiles", "visits"):
            old = getattr(self, name)
            new = np.zeros((capacity, old.shape[1]), dtype=old.dtype)
            new[: self.capacity] = old
            setattr(self, name, new)
        self.capacity = capacity

    def reset(self, rows: np.ndarray) -> None:
        self.scalars[rows] = 0.0
        self.profiles[rows] = 0.0
        self.visits[rows] = 0

    # ------------------------------------------------------------------ scoring

    def run(self, rows: np.ndarray, t: np.ndarray, x: np.ndarray, deviation: np.ndarray | None = None) -> np.ndarray:
        """Score, then learn, each sample ``(rows[i], t[i], x[i])``, in order within each series;
        returns the scores. A series may appear any number of times. With ``deviation`` (a float64
        array as long as ``x``), each sample's signed relative deviation from the level it was
        expected at goes there (see :func:`detector.anomaly.kernel.score_samples`)."""
        rows = np.ascontiguousarray(rows, dtype=np.intp)
        t = np.ascontiguousarray(t, dtype=np.float64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        return score_samples(self.scalars, self.profiles, self.visits, rows, t, x, self.kernel_params, deviation)

    # Snapshots (detector.snapshot) carry every other attribute; these follow from the params.
    SNAPSHOT_SKIP = frozenset({"params", "test_ids", "n_tests", "n_scalars", "kernel_params"})

    def restore_state(self, state: dict) -> None:
        """Load a snapshot's state (:func:`detector.snapshot.apply`), refusing one of another layout.

        The generic check compares dtypes and ranks only; a state matrix with other columns (another
        set of tests, another profile) would be misread by the compiled step, which does not check
        its bounds, so the shapes are checked here first.
        """
        from detector.snapshot import SnapshotError, apply_attributes

        want = {"scalars": self.n_scalars, "profiles": self.params.bins, "visits": self.params.bins}
        capacity = state.get("capacity")
        for name, columns in want.items():
            value = state.get(name)
            shape = getattr(value, "shape", None)
            if shape is not None and (len(shape) != 2 or shape[1] != columns or shape[0] != capacity):
                raise SnapshotError(f"ColumnarState.{name}: snapshot of another layout: shape {tuple(shape)}, "
                                    f"this code has ({capacity}, {columns}) for its params")
        apply_attributes(self, state)
