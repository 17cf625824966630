"""Trend forecasts on irregular event time: exponentially discounted linear regression.

Each series keeps a straight line fitted by weighted least squares in which a
sample of age ``a`` seconds weighs ``exp(-a / tau)``: Brown's linear
exponential smoothing (which *is* discounted least squares on a linear trend),
written in continuous time so that irregular timestamps and gaps need no
special case. A gap of several ``tau`` simply forgets the past.

The fit is kept as eleven floats per series (88 bytes), updated in O(1) per sample:

* ``t``: time of the newest sample (the origin of the local time axis ``u``);
* ``w``: total weight; ``mu``: weighted mean of ``u`` (<= 0); ``mx``: weighted mean of the value;
* ``cuu``, ``cux``, ``cxx``: weighted co-moments about those means (Welford form,
  so large values with small changes, a queue of 10000 moving by 3, lose no precision);
* ``q0``, ``q1``, ``q2``: moments of the *squared* weights (``sum w^2 u^k``), which give
  the exact sampling variance of the fitted line under white noise;
* ``e``: a short average of standardised one-step-ahead errors (see below).

From them: slope ``b = cux / cuu``, level now ``L = mx - b mu``, the residual
variance ``s2 = (cxx - b cux) / (w - 2 q0 / w)``, and the variance of the fitted
line at ``h`` seconds ahead, ``s2 * sum w_i^2 c_i(h)^2`` with ``c_i`` the
estimator's weights, a quadratic in ``h``. Quantiles use Student's t with
``n_eff - 2`` degrees of freedom, ``n_eff = w^2 / q0`` (Kish's effective size).

A fixed discount lags when a trend changes: ten minutes into a ramp that
follows an hour of flat data, a 10-minute discount still sees mostly the flat
part and under-estimates the slope. So each sample's one-step-ahead error,
divided by its predicted sd, feeds a short average ``e`` (discount ``tau / 4``);
when it leaves its expected range (``adapt_sigmas``, default 2.5 sds), the past
is down-weighted to a quarter at once (a variable forgetting factor, as in
adaptive recursive least squares). On a straight line with white noise it trips
about once in 500 samples; after a change it trips a few times in a row and the
fit follows the new trend within a few minutes. Estimates need ``min_samples``
effective samples, so a series that keeps changing shape (a burst and its
drain) may have none for a few samples: no estimate rather than a wild one.
``adapt_sigmas=None`` turns it off.

Two intervals, for two questions:

* :meth:`TrendForecaster.forecast` is a *prediction* interval for the value a
  sample at ``h`` will show: the line's uncertainty plus the noise;
* :meth:`TrendForecaster.time_to_bound` is the interval of the time at which the
  *trend* reaches the bound (Fieller's interval: the times where the bound lies
  inside the confidence band of the line), so it is asymmetric, short on the
  near side and long on the far side, and opens to infinity when the slope is
  not clearly non-zero.

One implementation serves both APIs: :class:`TrendBank` keeps the fields as
numpy columns indexed by series row and updates many series per call;
:class:`TrendForecaster` is one series, the same code on a one-row bank, so the
two agree bit for bit.

>>> f = TrendForecaster(tau_s=600)
>>> for i in range(40):                      # +2 per 15 s, exactly
...     f.learn_one(15.0 * i, 100 + 2.0 * i)
>>> mean, lower, upper = f.forecast(150)
>>> round(mean, 6), round(f.slope * 15, 6)
(198.0, 2.0)
>>> eta, low, high = f.time_to_bound(400)     # 400 - 178 = 222 more, at 2/15 per second
>>> round(eta, 3), round(low, 3), round(high, 3)
(1665.0, 1665.0, 1665.0)
>>> f.time_to_bound(0, "down") is None        # heading away from 0
True
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

FIELDS = ("t", "w", "mu", "mx", "cuu", "cux", "cxx", "q0", "q1", "q2", "e")
T, W, MU, MX, CUU, CUX, CXX, Q0, Q1, Q2, E = range(len(FIELDS))
STATE_BYTES = len(FIELDS) * 8
"""Bytes of trend state per series."""

FORGET = 0.25
"""Share of the past kept when the line stops explaining the data."""
UP, DOWN = 1, -1
_DIRECTIONS = {"up": UP, "down": DOWN, UP: UP, DOWN: DOWN}


def direction_sign(direction: str | int) -> int:
    """``+1`` for ``"up"`` (bound above, value rising), ``-1`` for ``"down"``."""
    try:
        return _DIRECTIONS[direction]
    except (KeyError, TypeError):
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}") from None


def _empty(n: int) -> np.ndarray:
    state = np.zeros((len(FIELDS), n))
    state[T] = np.nan  # no sample yet
    return state


def _learn(s: np.ndarray, t: np.ndarray, x: np.ndarray, tau: float) -> np.ndarray:
    """State columns ``s`` (fields x n) after one sample ``(t, x)`` per column; returns new columns.

    Ages every column by ``dt = t - s.t`` (discount ``exp(-dt / tau)``, time axis
    shifted so the new sample sits at ``u = 0``) and adds the sample with weight 1.
    """
    dt = t - s[T]
    dt = np.where(np.isnan(dt), 0.0, dt)  # first sample of a series
    d = np.exp(dt * (-1.0 / tau))
    d2 = d * d
    w, q0, q1 = s[W] * d, s[Q0], s[Q1]
    mu = s[MU] - dt
    out = np.empty_like(s)
    out[T] = t
    out[E] = s[E]
    out[Q2] = d2 * (s[Q2] - 2.0 * dt * q1 + dt * dt * q0)
    out[Q1] = d2 * (q1 - dt * q0)
    out[Q0] = d2 * q0 + 1.0
    w1 = w + 1.0
    du = -mu
    dx = x - s[MX]
    mu1 = mu + du / w1
    mx1 = s[MX] + dx / w1
    out[W] = w1
    out[MU] = mu1
    out[MX] = mx1
    out[CUU] = s[CUU] * d - du * mu1
    out[CUX] = s[CUX] * d + du * (x - mx1)
    out[CXX] = s[CXX] * d + dx * (x - mx1)
    return out


class _Fit:
    """The fitted line of some columns: level, slope, residual variance, band coefficients."""

    __slots__ = ("level", "slope", "s2", "a0", "a1", "a2", "n_eff", "ready", "k")

    def __init__(self, s: np.ndarray, min_samples: float, z: float | None = None) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            w, mu, cuu, q0, q1, q2 = s[W], s[MU], s[CUU], s[Q0], s[Q1], s[Q2]
            self.n_eff = w * w / q0
            self.ready = (self.n_eff >= min_samples) & (cuu > 0)
            slope = np.where(self.ready, s[CUX] / cuu, 0.0)
            self.slope = slope
            self.level = s[MX] - slope * mu
            sse = np.maximum(s[CXX] - slope * s[CUX], 0.0)
            dof = w - 2.0 * q0 / w
            self.s2 = np.where(self.ready, sse / dof, np.nan)
            # var(line at h) / s2 = A + 2 B (h - mu) + C (h - mu)^2
            a = q0 / (w * w)
            b = (q1 - mu * q0) / (w * cuu)
            c = (q2 - 2.0 * mu * q1 + mu * mu * q0) / (cuu * cuu)
            self.a0 = self.s2 * (a - 2.0 * b * mu + c * mu * mu)
            self.a1 = self.s2 * (b - c * mu)
            self.a2 = self.s2 * c
            self.k = None if z is None else _student_t(z, self.n_eff - 2.0)

    def line_var(self, h: np.ndarray | float) -> np.ndarray:
        return np.maximum(self.a0 + 2.0 * self.a1 * h + self.a2 * h * h, 0.0)

    def take(self, pick: np.ndarray) -> _Fit:
        """The fit of some of these columns (a mask or positions), without fitting them again."""
        out = _Fit.__new__(_Fit)
        for name in _Fit.__slots__:
            value = getattr(self, name)
            setattr(out, name, None if value is None else value[pick])
        return out


def _adapt(s: np.ndarray, t: np.ndarray, x: np.ndarray, tau: float, sigmas: float,
           min_samples: float) -> tuple[np.ndarray, np.ndarray]:
    """Forget faster where the line has stopped explaining the data (a ramp begins, a trend turns).

    Before a sample is learned, its one-step-ahead error is standardised by the
    prediction's own sd and averaged with discount time ``tau / 4`` into field
    ``e``. A correct line keeps that average near 0 (sd ``sqrt((1-d)/(1+d))``);
    beyond ``sigmas`` of those sds the past is largely forgotten (every weight
    times :data:`FORGET`, so new samples count 4x more) and ``e`` starts again.
    Uniform scaling leaves the current fit unchanged: only the following samples
    move it faster, and the intervals widen as the effective sample shrinks.
    Returns the new columns and, per column, 0 where it kept its past, else the sign of
    the drift that made it forget (+1: the data ran above the line, -1: below it).
    """
    dt = t - s[T]
    dt = np.where(np.isnan(dt), 0.0, dt)
    fit = _Fit(s, min_samples)
    predicted = fit.level + fit.slope * dt
    dust = 1e-9 * (np.abs(x) + np.abs(predicted))  # rounding, not noise: exact lines stay exact
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - predicted) / (np.sqrt(fit.line_var(dt) + fit.s2) + dust)
    z = np.clip(np.where(fit.ready & ~np.isnan(z), z, 0.0), -5.0, 5.0)
    d = np.exp(dt * (-4.0 / tau))
    e = s[E] * d + (1.0 - d) * z
    trip = fit.ready & (dt > 0) & (np.abs(e) > sigmas * np.sqrt((1.0 - d) / (1.0 + d)))
    out = s.copy()
    out[E] = np.where(trip, 0.0, e)
    if trip.any():
        keep = np.where(trip, FORGET, 1.0)
        for field in (W, CUU, CUX, CXX):
            out[field] *= keep
        for field in (Q0, Q1, Q2):
            out[field] *= keep * keep
    return out, np.where(trip, np.sign(e), 0.0)


def _student_t(z: float, nu: np.ndarray) -> np.ndarray:
    """Student's t quantile from the normal one (Cornish-Fisher, 3 terms; good for nu >= 3)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        nu = np.maximum(nu, 1.0)
        z2 = z * z
        return z + (z2 * z + z) / (4 * nu) + (5 * z2 * z2 * z + 16 * z2 * z + 3 * z) / (96 * nu * nu) + (
            3 * z2**3 * z + 19 * z2 * z2 * z + 17 * z2 * z - 15 * z
        ) / (384 * nu**3)


def _time_to_bound(fit: _Fit, bound: np.ndarray, sign: np.ndarray, max_h: float) -> tuple[np.ndarray, ...]:
    """(eta, low, high) per column; NaN where the trend does not reach the bound within ``max_h``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g0 = sign * (fit.level - bound)  # < 0: the bound is still ahead
        g0 = np.where(g0 >= -1e-9 * (np.abs(fit.level) + np.abs(bound)), np.maximum(g0, 0.0), g0)  # float dust
        s = sign * fit.slope
        eta = np.where(g0 >= 0, 0.0, np.where(s > 0, -g0 / s, np.inf))
        ok = fit.ready & (eta <= max_h)
        # Fieller: times h where |g0 + s h| <= k sd(h), i.e. A h^2 + 2 B h + C <= 0
        k2 = fit.k * fit.k
        a = s * s - k2 * fit.a2
        b = g0 * s - k2 * fit.a1
        c = g0 * g0 - k2 * fit.a0
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        q = -(b + np.copysign(sq, b))
        ra, rb = q / a, c / q
        lo, hi = np.fmin(ra, rb), np.fmax(ra, rb)
        low = np.where(a > 0, lo, hi)
        high = np.where(a > 0, hi, np.inf)
        low = np.where((c <= 0) | ((a < 0) & (disc < 0)) | np.isnan(low), 0.0, low)
        high = np.where(np.isnan(high), np.inf, high)
        low = np.minimum(np.maximum(low, 0.0), eta)
        high = np.maximum(high, eta)
        nan = np.full_like(eta, np.nan)
        return np.where(ok, eta, nan), np.where(ok, low, nan), np.where(ok, high, nan)


def _group_ranks(rows: np.ndarray) -> np.ndarray:
    """Occurrence number of each entry among equal rows, in input order: [5, 3, 5, 5] -> [0, 0, 1, 2]."""
    n = rows.shape[0]
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = sorted_rows[1:] != sorted_rows[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n) - first
    return ranks


class TrendBank:
    """Trend state of many series as numpy columns, indexed by row.

    ``tau_s``: discount time (a sample ``tau_s`` old weighs ``1/e``); ``level``: the
    central probability of every interval; ``min_samples``: effective samples
    before any estimate; ``max_horizon_s``: farther ETAs are reported as none;
    ``adapt_sigmas``: how far the recent errors may drift before the past is
    forgotten faster (None: never).

    >>> bank = TrendBank(tau_s=600)
    >>> rows = bank.add(3)
    >>> t = np.arange(20) * 15.0
    >>> for ti in t:                                   # rising, flat, falling
    ...     _ = bank.learn_many(rows, np.full(3, ti), np.array([ti, 50.0, 100 - ti / 10]))
    >>> eta, low, high = bank.time_to_bound_many(rows, np.array([600.0, 100.0, 0.0]), np.array([1, 1, -1]))
    >>> eta.round(1).tolist()
    [315.0, nan, 715.0]
    >>> bank.nbytes_per_series
    88
    """

    def __init__(self, tau_s: float = 600.0, level: float = 0.8, min_samples: float = 16.0,
                 max_horizon_s: float = 6 * 3600.0, adapt_sigmas: float | None = 2.5, capacity: int = 1024) -> None:
        if not tau_s > 0:
            raise ValueError(f"tau_s must be > 0 seconds, got {tau_s!r}")
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1 (e.g. 0.8), got {level!r}")
        self.tau_s = float(tau_s)
        self.level = float(level)
        self.min_samples = max(float(min_samples), 3.0)
        self.max_horizon_s = float(max_horizon_s)
        self.adapt_sigmas = float(adapt_sigmas) if adapt_sigmas else None
        self._z = NormalDist().inv_cdf(0.5 + self.level / 2)
        self._state = _empty(max(int(capacity), 1))
        self.forgot = np.zeros(self._state.shape[1], dtype=np.int8)
        """Per row, whether its fit forgot its past since the flag was last cleared (a change was
        detected): 0 no, +1 because the data ran above the line, -1 below it (the latest such change)."""
        self._size = 0

    # ------------------------------------------------------------------ rows

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes_per_series(self) -> int:
        return STATE_BYTES

    @property
    def nbytes(self) -> int:
        """Bytes of state allocated (capacity, not just rows in use)."""
        return int(self._state.nbytes)

    def add(self, n: int = 1) -> np.ndarray:
        """Allocate ``n`` fresh rows; returns their indices."""
        need = self._size + n
        if need > self._state.shape[1]:
            grown = _empty(max(need, 2 * self._state.shape[1]))
            grown[:, : self._size] = self._state[:, : self._size]
            self._state = grown
            self.forgot = np.concatenate([self.forgot, np.zeros(grown.shape[1] - self.forgot.shape[0], dtype=np.int8)])
        rows = np.arange(self._size, need, dtype=np.int64)
        self._size = need
        return rows

    def reset(self, rows: np.ndarray) -> None:
        """Forget everything learned by ``rows`` (a series went stale or restarted)."""
        self._state[:, rows] = _empty(len(np.atleast_1d(rows)))
        self.forgot[rows] = 0

    def state(self, rows: np.ndarray) -> np.ndarray:
        """A copy of the state columns of ``rows`` (fields x rows), e.g. for a snapshot."""
        return self._state[:, rows].copy()

    def load(self, rows: np.ndarray, columns: np.ndarray) -> None:
        """Restore state columns saved by :meth:`state`."""
        self._state[:, rows] = columns

    def last_time(self, rows: np.ndarray) -> np.ndarray:
        return self._state[T, rows]

    # ------------------------------------------------------------------ learning

    def learn_unique(self, rows: np.ndarray, t_s: np.ndarray, x: np.ndarray) -> np.ndarray:
        """One sample per row (rows distinct). Returns the mask of samples learned.

        Skipped: non-finite values (NaN, staleness markers, Inf) and samples not
        newer than the row's last one (duplicates, retries, out of order).
        """
        rows = np.asarray(rows, dtype=np.int64)
        t_s = np.asarray(t_s, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        last = self._state[T, rows]
        keep = np.isfinite(x) & ~(t_s <= last)  # NaN last (new row) compares False
        if not keep.all():
            rows, t_s, x = rows[keep], t_s[keep], x[keep]
        if rows.shape[0]:
            cols = self._state[:, rows]
            if self.adapt_sigmas is not None:
                cols, drift = _adapt(cols, t_s, x, self.tau_s, self.adapt_sigmas, self.min_samples)
                tripped = drift != 0
                if tripped.any():
                    self.forgot[rows[tripped]] = drift[tripped]
            self._state[:, rows] = _learn(cols, t_s, x, self.tau_s)
        return keep

    def learn_many(self, rows: np.ndarray, t_s: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Samples of any rows, a row's samples in time order. Returns the mask of samples learned.

        Rows that repeat are applied in rounds (first sample of every row, then
        the second, ...), so a batch of 1000 series x 10 samples costs 10
        vectorized updates, and the result equals learning one sample at a time.
        """
        rows = np.asarray(rows, dtype=np.int64)
        t_s = np.asarray(t_s, dtype=np.float64)
        x = np.asarray(x, dtype=np.float64)
        if rows.shape[0] == 0:
            return np.zeros(0, dtype=bool)
        ranks = _group_ranks(rows)
        top = int(ranks.max())
        if top == 0:
            return self.learn_unique(rows, t_s, x)
        learned = np.zeros(rows.shape[0], dtype=bool)
        for r in range(top + 1):
            pick = np.flatnonzero(ranks == r)
            learned[pick] = self.learn_unique(rows[pick], t_s[pick], x[pick])
        return learned

    # ------------------------------------------------------------------ estimates

    def fit(self, rows: np.ndarray) -> _Fit:
        """The fitted lines of ``rows`` as they stand; the ``*_many`` estimates accept it back as
        ``fit=`` so that one evaluation of many estimates fits once."""
        return _Fit(self._state[:, np.asarray(rows, dtype=np.int64)], self.min_samples, self._z)

    def level_slope(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fitted value at each row's last sample time, and slope per second (0 until warmed up)."""
        fit = self.fit(rows)
        return fit.level, fit.slope

    def forecast_many(self, rows: np.ndarray, horizon_s: np.ndarray | float) -> tuple[np.ndarray, ...]:
        """(mean, lower, upper) of a sample ``horizon_s`` after each row's last one.

        A prediction interval: the line's uncertainty and the residual noise.
        Rows not yet warmed up get their current mean and infinite bounds.
        """
        fit = self.fit(rows)
        h = np.asarray(horizon_s, dtype=np.float64)
        mean = fit.level + fit.slope * h
        with np.errstate(invalid="ignore"):
            half = fit.k * np.sqrt(fit.line_var(h) + fit.s2)
        half = np.where(fit.ready, half, np.inf)
        return mean, mean - half, mean + half

    def time_to_bound_many(self, rows: np.ndarray, bound: np.ndarray | float, direction: np.ndarray | int | str = UP,
                           fit: _Fit | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eta, eta_low, eta_high) in seconds after each row's last sample, NaN where none.

        ``direction`` is +1/-1 (or ``"up"``/``"down"``) per row or for all. The
        ETA is when the fitted trend meets the bound; ``eta_low``/``eta_high``
        bound it at the bank's ``level`` (``eta_high`` may be ``inf``). 0 when
        the trend is already at or past the bound; NaN when it heads away, is
        flat, would take longer than ``max_horizon_s``, or is not warmed up.
        """
        sign = direction_sign(direction) if isinstance(direction, str) else np.asarray(direction, dtype=np.float64)
        fit = self.fit(rows) if fit is None else fit
        return _time_to_bound(fit, np.asarray(bound, dtype=np.float64), sign, self.max_horizon_s)


    def distance_many(self, rows: np.ndarray, bound: np.ndarray | float, direction: np.ndarray | int | str = UP,
                      fit: _Fit | None = None) -> np.ndarray:
        """How far the bound still is, in sds of a sample now (<= 0: at or past it; NaN: not warmed up).

        Used to tell "at the bound" from "moved away": a series that reached its
        bound and stays there, flat and noisy, has a distance within a few sds.
        """
        sign = direction_sign(direction) if isinstance(direction, str) else np.asarray(direction, dtype=np.float64)
        fit = self.fit(rows) if fit is None else fit
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.asarray(bound, dtype=np.float64)
            gap = sign * (bound - fit.level)
            sd = np.sqrt(fit.line_var(0.0) + fit.s2) + 1e-9 * (np.abs(fit.level) + np.abs(bound))
            out = np.where(gap <= 0, np.minimum(gap, 0.0), gap / sd)
        return np.where(fit.ready, out, np.nan)

    def ready_many(self, rows: np.ndarray) -> np.ndarray:
        """Rows warmed up enough to estimate (``min_samples`` effective samples, time spread)."""
        return self.fit(rows).ready

    def quantile_many(self, rows: np.ndarray) -> np.ndarray:
        """The t quantile each row's intervals use (depends on its effective sample size)."""
        return self.fit(rows).k

    # Snapshots (detector.snapshot) carry every other attribute; these come from the constructor.
    SNAPSHOT_SKIP = frozenset({"tau_s", "level", "min_samples", "max_horizon_s", "adapt_sigmas", "_z"})


class TrendForecaster:
    """One series' trend, river-style: ``learn_one(t_s, x)``, ``forecast(horizon_s)``.

    Same parameters and same arithmetic as :class:`TrendBank` (it is a one-row bank).

    >>> f = TrendForecaster(tau_s=300, level=0.9)
    >>> for i in range(60):                            # a noisy ramp: +1/s, noise +-3
    ...     f.learn_one(10.0 * i, 10.0 * i + (3 if i % 2 else -3))
    >>> mean, lower, upper = f.forecast(60)
    >>> lower < 650 < upper, round(mean)
    (True, 650)
    >>> eta, low, high = f.time_to_bound(1000)
    >>> low < 410 < high
    True
    """

    __slots__ = ("_bank", "_row")

    def __init__(self, tau_s: float = 600.0, level: float = 0.8, min_samples: float = 16.0,
                 max_horizon_s: float = 6 * 3600.0, adapt_sigmas: float | None = 2.5) -> None:
        self._bank = TrendBank(tau_s, level, min_samples, max_horizon_s, adapt_sigmas, capacity=1)
        self._row = self._bank.add(1)

    def learn_one(self, t_s: float, x: float) -> None:
        """Learn one sample at event time ``t_s`` (seconds). Non-finite or not-newer samples are ignored."""
        self._bank.learn_unique(self._row, np.array([t_s], dtype=np.float64), np.array([x], dtype=np.float64))

    def forecast(self, horizon_s: float) -> tuple[float, float, float]:
        """(mean, lower, upper) of a sample ``horizon_s`` seconds after the last one."""
        mean, lower, upper = self._bank.forecast_many(self._row, float(horizon_s))
        return float(mean[0]), float(lower[0]), float(upper[0])

    def time_to_bound(self, bound: float, direction: str = "up") -> tuple[float, float, float] | None:
        """(eta_s, eta_low_s, eta_high_s) until the trend reaches ``bound``; None when it does not head there.

        ``eta_high_s`` is ``inf`` when the slope is too uncertain to promise an upper limit.
        """
        eta, low, high = self._bank.time_to_bound_many(self._row, float(bound), direction_sign(direction))
        if math.isnan(eta[0]):
            return None
        return float(eta[0]), float(low[0]), float(high[0])

    @property
    def level(self) -> float:
        """The fitted value at the last sample's time."""
        return float(self._bank.level_slope(self._row)[0][0])

    @property
    def slope(self) -> float:
        """The fitted slope, per second (0 until warmed up)."""
        return float(self._bank.level_slope(self._row)[1][0])

    @property
    def nbytes(self) -> int:
        return STATE_BYTES
