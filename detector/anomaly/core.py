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
   ``decluster_weight=10``, ``decluster_average`` and ``decluster_sample_rate``,
   chosen in issue 11's eighth round; off in the ``classic`` model). Without
   it every sample of an excursion is an exceedance that teaches the tail, so
   one long excursion (a frozen sensor's run of repeats, a sustained shift)
   widens the tail as much as many separate ones, while it is happening. With
   it, as extreme-value practice does (runs declustering), exceedances fewer
   than ``r`` quiet samples apart form one cluster: it counts once in the
   exceedance rate, at its start, and teaches the excess moments once, by its
   peak, when it ends; during the cluster the tail it is judged against stays
   the one learned before it. The excess moments are weighted as every
   sample's are (young series learn fast, by sample count), or with
   ``decluster_mean`` as a running mean over the clusters seen, then
   exponential (few clusters are then not pulled toward the zero start), or
   with ``decluster_weight=c`` as if each of its first ``c`` exceedances had
   taught the peak (weight ``1 - (1 - a)^min(L, c)`` for a cluster of ``L``
   exceedances, ``a`` the per-sample weight): an excursion that recurs (a
   daily step) is learned about as fast as without declustering, while one
   long excursion teaches at most ``c`` samples' worth, after it has ended.
   ``decluster_average`` makes a cluster teach the mean of its excesses (and
   of their squares) rather than its peak. ``decluster_sample_rate`` keeps the
   exceedance rate per sample (only the excess moments are declustered), so
   the base of a series with long excursions is the one it has without
   declustering; ``decluster_min=k`` calibrates per sample until a test has
   seen ``k`` clusters, then declusters from what it has learned.

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
   news: one incident is one onset. Two trial switches (off): with ``hold_rise``
   a surprise above its alarm's own during the hold is the incident growing and
   is published whole (it becomes the alarm), so a climbing surprise publishes
   its peak rather than its first sample over ``alarm``; with ``alarm_whole``
   every alarm publishes its whole surprise, a re-alarm included.

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
    CL_AGE, CL_COUNT, CL_LEN, CL_PEAK, CL_SUM, CL_SUM2, EXCESS, EXCESS2, HOLD_LEFT, INTERVAL, LONG, MEAN, N, N_CAL, N_FIXED, PEAK, RATE, RUN, SEAS_ERR, SHORT, SPREAD,
    STEP, STEP_SHORT, T_FIRST, T_LAST, X_LAST, Y_LAST, DEV, N_CLU, KernelParams, score_samples,
)
from detector.anomaly.kernel import STUCK as _KERNEL_STUCK
from detector.anomaly.kernel import SUSTAIN as _KERNEL_SUSTAIN

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
TESTS = ("spike", "shift", "volatility", "stuck", "sustain")
STUCK = TESTS.index("stuck")
SUSTAIN = TESTS.index("sustain")  # on with sustain_share > 0 only
assert (STUCK, SUSTAIN) == (_KERNEL_STUCK, _KERNEL_SUSTAIN), "the compiled step's test columns follow TESTS"


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
    # runs declustering of each test's exceedances (0: off): exceedances fewer than ``decluster`` quiet
    # samples apart are one cluster, which counts once in the exceedance rate and teaches the tail once,
    # by its peak excess, when it ends (a trial switch of issue 11's third round)
    decluster: int = 1
    # with declustering, the peaks' moments are a running mean over the clusters seen (then exponential
    # with tail_alpha), not weighted by the sample's age as every exceedance is without it
    decluster_mean: bool = False
    decluster_tests: tuple[str, ...] | None = None  # the tests declustered (None: all)
    # with declustering, a cluster of L exceedances teaches its peak as min(L, decluster_weight) samples
    # would (0: as one sample); a trial switch of issue 11's fourth round
    decluster_weight: int = 10
    # with declustering, a cluster teaches the mean of its excesses (and of their squares) instead of its peak
    # (a post-hoc trial switch of the fourth round: the peak taught min(L, cap) times overstates the tail)
    decluster_average: bool = True
    # with declustering, the exceedance rate still counts every exceedance (the per-sample rate, as without
    # declustering), so a series whose excursions last long gets no higher base than one whose excursions are
    # single samples; only the excess moments are declustered (a trial switch of the fifth round)
    decluster_sample_rate: bool = True
    # with declustering, a test calibrates per sample (as without it) until it has seen this many clusters,
    # then declusters from the moments learned so far (0: from the start; a trial switch of the fifth round)
    decluster_min: int = 0
    # a sustained-surprise test (a trial switch, 0: off): each sample's surprise over the instant tests,
    # at most sustain_cap decades, averaged with weight sustain_alpha (about ten samples, as HTM's
    # likelihood), calibrated like the other tests; it takes sustain_share of the false-alarm budget
    sustain_share: float = 0.0
    sustain_alpha: float = 0.1
    sustain_cap: float = 3.0
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
    # during a hold, a surprise above the alarm's own (still rising) is the same incident growing: it is published
    # whole and becomes the alarm, so a surprise that climbs sample by sample publishes its peak, not its first
    # sample over ``alarm`` (a trial switch of issue 11's sixth round: window maxima piled just above ``alarm``)
    hold_rise: bool = False
    # an alarm publishes its whole surprise, not only its part above the fading earlier alarm (a trial switch of
    # the sixth round: a re-alarm's news is just above ``alarm`` whatever the surprise reached)
    alarm_whole: bool = False
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
        unknown = set(self.params.tests) - set(TESTS[:SUSTAIN])
        if unknown:
            raise ValueError(f"unknown anomaly tests {sorted(unknown)}; known: {list(TESTS[:SUSTAIN])}")
        if not 0.0 <= self.params.sustain_share < 1.0:
            raise ValueError(f"sustain_share is a share of the budget in [0, 1), not {self.params.sustain_share}")
        names = tuple(self.params.tests) + (("stuck",) if self.params.stuck and "stuck" not in self.params.tests else ())
        names += ("sustain",) if self.params.sustain_share > 0 else ()
        self.test_ids = [TESTS.index(name) for name in names]
        # calibration columns for the stuck and sustained tests only where used (they are the last ones)
        self.n_tests = SUSTAIN + 1 if SUSTAIN in self.test_ids else STUCK + 1 if STUCK in self.test_ids else STUCK
        if SUSTAIN in self.test_ids:
            self.n_scalars = N_FIXED + N_CAL * self.n_tests + 1  # and the running average
        else:
            self.n_scalars = N_FIXED + N_CAL * self.n_tests
        if set(self.params.decluster_tests or ()) - set(TESTS):
            raise ValueError(f"unknown tests to decluster {self.params.decluster_tests}; known: {list(TESTS)}")
        if self.params.decluster < 0:
            raise ValueError(f"decluster is a number of quiet samples (0: off), not {self.params.decluster}")
        if self.params.decluster_weight < 0 or (self.params.decluster_weight > 0 and self.params.decluster_mean):
            raise ValueError(f"decluster_weight is a number of samples (0: off) and excludes decluster_mean, not "
                             f"{self.params.decluster_weight} with decluster_mean={self.params.decluster_mean}")
        if self.params.decluster_min < 0:
            raise ValueError(f"decluster_min is a number of clusters (0: off), not {self.params.decluster_min}")
        if self.params.decluster > 0:  # each test's open cluster (its peak excess, age, length), and their count
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
            float(p.decluster), bool(p.decluster_mean), p.sustain_share, p.sustain_alpha, p.sustain_cap,
            tuple(p.decluster_tests is None or name in p.decluster_tests for name in TESTS), float(p.decluster_weight),
            bool(p.decluster_average), bool(p.decluster_sample_rate), float(p.decluster_min), bool(p.hold_rise),
            bool(p.alarm_whole))

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

    def run(self, rows: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Score, then learn, each sample ``(rows[i], t[i], x[i])``, in order within each series;
        returns the scores. A series may appear any number of times."""
        rows = np.ascontiguousarray(rows, dtype=np.intp)
        t = np.ascontiguousarray(t, dtype=np.float64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        return score_samples(self.scalars, self.profiles, self.visits, rows, t, x, self.kernel_params)

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
