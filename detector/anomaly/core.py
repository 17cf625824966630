"""The default per-series detector as numpy columns: one row of state per series.

Every series owns one row of a float64 matrix (scalars) and one row of two
small matrices for its seasonal profile (float32 values, uint8 visit counts).
A batch of samples from many series is cut into *rounds*, each holding at most
one sample per series (a series' k-th sample of the batch goes to round k), and
every round is scored, then learned, with a few dozen vectorized numpy
operations over the series it touches. A single series fed one sample at a time
goes through exactly the same code.

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
   - *stuck* (with ``stuck=True``, the ``machine`` model): the length of the current run of exact repeats of the raw value
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
   news: one incident is one onset.

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

DAY_S = 86_400.0
WEEK_S = 7 * DAY_S
_LN10 = float(np.log(10.0))
_F32_MAX = float(np.finfo(np.float32).max)
TESTS = ("spike", "shift", "volatility", "stuck")
STUCK = TESTS.index("stuck")


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
    stuck: bool = False  # add the stuck test to ``tests`` (the ``machine`` model has it)
    stuck_share: float = 0.1  # on a repeat, the stuck test's share of the false-alarm budget
    tail_alpha: float = 0.005  # exceedance rate and mean excess
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


# scalar columns
(
    N, T_FIRST, Y_LAST, SHORT, LONG, STEP, SPREAD, STEP_SHORT, SEAS_ERR, PEAK, HOLD_LEFT, INTERVAL, T_LAST,
    X_LAST, RUN,
) = range(15)
N_FIXED = 15
# then per test: mean, deviation, exceedance rate, mean excess, mean squared excess
MEAN, DEV, RATE, EXCESS, EXCESS2 = range(5)
N_CAL = 5


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
        # calibration columns for the stuck test only where it is used (it is the last test)
        self.n_tests = len(TESTS) if STUCK in self.test_ids else STUCK
        self.n_scalars = N_FIXED + N_CAL * self.n_tests
        self.scalars = np.zeros((self.capacity, self.n_scalars), dtype=np.float64)
        self.profiles = np.zeros((self.capacity, self.params.bins), dtype=np.float32)
        self.visits = np.zeros((self.capacity, self.params.bins), dtype=np.uint8)

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

    # ------------------------------------------------------------------ one round

    def step(self, rows: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Score, then learn, one sample for each of ``rows`` (distinct). Returns scores."""
        finite = np.isfinite(x)
        if not finite.all():
            scores = np.zeros(len(rows))
            keep = np.nonzero(finite)[0]
            if len(keep):
                scores[keep] = self.step(rows[keep], t[keep], x[keep])
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
        stats = np.empty((len(rows), nt))
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
        cal = s[:, N_FIXED:].reshape(len(rows), nt, N_CAL)
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
            base + self._tail(np.maximum(stats - q, 0.0), m1, np.maximum(cal[:, :, EXCESS2], m1 * m1)),
            base * _clamp((stats - mean) / (q - mean), 0.0, 1.0),
        )
        total = self._bonferroni(surprise, stuck > 0)
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
        s[:, STEP] += np.where(first, 0.0, la * (self._huber(step, s[:, STEP], n) - s[:, STEP]))
        s[:, STEP_SHORT] = np.where(first, 0.0, step_short)
        s[:, SPREAD] += la * (self._huber(np.abs(x - s[:, LONG]), s[:, SPREAD], n) - s[:, SPREAD])
        s[:, SEAS_ERR] += la * (self._huber(np.abs(x - s[:, LONG] - prof), s[:, SEAS_ERR], n) - s[:, SEAS_ERR])
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
        cal[:, :, RATE] += ta * (over - cal[:, :, RATE])
        excess = np.maximum(capped - q, 0.0)
        cal[:, :, EXCESS] += np.where(over, ta * (excess - cal[:, :, EXCESS]), 0.0)
        cal[:, :, EXCESS2] += np.where(over, ta * (excess * excess - cal[:, :, EXCESS2]), 0.0)
        s[:, N_FIXED:] = cal.reshape(len(rows), -1)
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

    def _bonferroni(self, surprise: np.ndarray, repeat: np.ndarray) -> np.ndarray:
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

    def _tail(self, excess: np.ndarray, m1: np.ndarray, m2: np.ndarray) -> np.ndarray:
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

    def _huber(self, size: np.ndarray, scale: np.ndarray, n: np.ndarray) -> np.ndarray:
        """What a deviation teaches a scale: in full up to ``clip`` scales, beyond that
        ``protect_weight`` of the excess (so a series that starts moving is learned)."""
        p = self.params
        if p.clip <= 0:
            return size
        cap = p.clip * scale
        clipped = np.minimum(size, cap) + p.protect_weight * np.maximum(size - cap, 0.0)
        return np.where(n < p.warmup, size, clipped)

    def run(self, rows: np.ndarray, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Score many samples of many series, in order within each series."""
        rows = np.asarray(rows, dtype=np.intp)
        t = np.asarray(t, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        out = np.empty(len(rows))
        for idx in rounds(rows):
            out[idx] = self.step(rows[idx], t[idx], x[idx])
        return out

    # Snapshots (detector.snapshot) carry every other attribute; these follow from the params.
    SNAPSHOT_SKIP = frozenset({"params", "test_ids", "n_tests", "n_scalars"})


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
