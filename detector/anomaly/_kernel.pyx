# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The default detector's per-sample step and counters' rates, compiled (see detector/anomaly/kernel.py).

Written for one sample at a time, in the order given, over ColumnarState's arrays in place. Every
operation is the one numpy did on the round's columns: ``_max`` / ``_min`` keep numpy's rule that a
NaN wins, and division is IEEE division (``cdivision``), inf and NaN included.
"""

import numpy as np

from libc.math cimport INFINITY, NAN, copysign, fabs, floor, fmod, isfinite, log, log10, log1p, pow

# scalar columns and calibration fields: detector/anomaly/kernel.py names them, and checks LAYOUT at import
cdef enum:
    N = 0
    T_FIRST = 1
    Y_LAST = 2
    SHORT = 3
    LONG = 4
    STEP = 5
    SPREAD = 6
    STEP_SHORT = 7
    SEAS_ERR = 8
    PEAK = 9
    HOLD_LEFT = 10
    INTERVAL = 11
    T_LAST = 12
    X_LAST = 13
    RUN = 14
    N_FIXED = 15
    MEAN = 0
    DEV = 1
    RATE = 2
    EXCESS = 3
    EXCESS2 = 4
    N_CAL = 5
    STUCK = 3
    N_TESTS_MAX = 4
    CL_AGE = 0
    CL_LEN = 1
    CL_SUM = 2
    CL_SUM2 = 3
    N_CLU = 4

LAYOUT = (N, T_FIRST, Y_LAST, SHORT, LONG, STEP, SPREAD, STEP_SHORT, SEAS_ERR, PEAK, HOLD_LEFT, INTERVAL, T_LAST, X_LAST, RUN, N_FIXED, MEAN, DEV, RATE, EXCESS, EXCESS2, N_CAL, STUCK, CL_AGE, CL_LEN, CL_SUM, CL_SUM2, N_CLU)

cdef double _LN10 = log(10.0)
cdef double _F32_MAX = <double>np.finfo(np.float32).max


cdef inline double _max(double a, double b) noexcept nogil:
    return a if (a >= b or a != a) else b


cdef inline double _min(double a, double b) noexcept nogil:
    return a if (a <= b or a != a) else b


cdef inline double _clamp(double x, double low, double high) noexcept nogil:
    return _min(high, _max(low, x))


cdef inline double _floor_divide(double a, double b) noexcept nogil:
    """numpy's floor_divide of two floats (b != 0)."""
    cdef double mod = fmod(a, b)
    cdef double div = (a - mod) / b
    cdef double fl
    if mod != 0.0 and ((b < 0.0) != (mod < 0.0)):
        div -= 1.0
    if div != 0.0:
        fl = floor(div)
        if div - fl > 0.5:
            fl += 1.0
        return fl
    return copysign(0.0, a / b)


cdef inline double _remainder(double a, double b) noexcept nogil:
    """numpy's remainder of two floats (b != 0): the sign of the divisor."""
    cdef double mod = fmod(a, b)
    if mod != 0.0:
        if (b < 0.0) != (mod < 0.0):
            mod += b
        return mod
    return copysign(0.0, b)


cdef inline double _huber(double size, double scale, double n, double clip, double protect_weight,
                          double warmup) noexcept nogil:
    cdef double cap, clipped
    if clip <= 0.0:
        return size
    cap = clip * scale
    clipped = _min(size, cap) + protect_weight * _max(size - cap, 0.0)
    return size if n < warmup else clipped


cdef inline double _tail(double excess, double m1, double m2, double shape_max) noexcept nogil:
    cdef double var, xi
    if shape_max <= 0.0:
        return excess / (m1 * _LN10)
    var = _max(m2 - m1 * m1, 1e-300)
    xi = _clamp(0.5 * (1.0 - m1 * m1 / var), 1e-9, shape_max)
    return log1p(xi * excess / (m1 * (1.0 - xi))) / (xi * _LN10)


cdef inline double _calibrate(double* s, int j, double stat, double tail_k, double min_rate, double shape_max,
                              double* q, double* scale, double* dev, bint* over) noexcept nogil:
    """Test ``j``'s value as ``-log10`` of its tail probability on the series' own history (q, scale, dev and
    over are kept for learning)."""
    cdef Py_ssize_t c = N_FIXED + j * N_CAL
    cdef double mean = s[c + MEAN]
    cdef double rate, base, m1
    dev[j] = s[c + DEV] + 1e-9
    q[j] = mean + tail_k * dev[j]
    rate = _clamp(s[c + RATE], min_rate, 0.5)
    base = -log10(rate)
    over[j] = stat > q[j]
    scale[j] = s[c + EXCESS]
    if j == STUCK:  # a run is counted in samples: its tail scale is at least one
        scale[j] = _max(scale[j], 1.0)
    m1 = scale[j] + 1e-9
    if over[j]:
        return base + _tail(_max(stat - q[j], 0.0), m1, _max(s[c + EXCESS2], m1 * m1), shape_max)
    return base * _clamp((stat - mean) / (q[j] - mean), 0.0, 1.0)


def score_samples(double[:, ::1] scalars, float[:, ::1] profiles, unsigned char[:, ::1] visits,
                  Py_ssize_t[::1] rows, double[::1] t, double[::1] x, kp, double[::1] deviation=None):
    """Score, then learn, each sample ``(rows[i], t[i], x[i])`` in order; returns the scores.

    With ``deviation`` (an array as long as ``x``), each sample's signed relative deviation from the level it
    was expected at is written there: ``(x - expected) / |expected|``, ``expected`` the long-term level plus
    the seasonal profile where the profile is used, before ``x`` is learned; 0 at the expected level (a
    series' first sample included), ±inf off an expected 0, NaN for a value that is not finite."""
    cdef Py_ssize_t n_samples = rows.shape[0]
    cdef double decluster = kp.decluster
    cdef double decluster_weight = kp.decluster_weight
    # with declustering, each test's open cluster (N_CLU fields) follows the calibration columns
    cdef Py_ssize_t clusters = N_FIXED + N_CAL * <Py_ssize_t>kp.n_tests
    cdef Py_ssize_t width = clusters + (N_CLU * <Py_ssize_t>kp.n_tests if decluster > 0.0 else 0)
    # the loop does not check bounds: the state must have the layout the params give it
    if (scalars.shape[1] != width or profiles.shape[1] != kp.bins
            or visits.shape[1] != kp.bins or profiles.shape[0] != scalars.shape[0]
            or visits.shape[0] != scalars.shape[0]):
        raise ValueError(f"state of another layout: scalars {scalars.shape[0]}x{scalars.shape[1]}, profiles "
                         f"{profiles.shape[0]}x{profiles.shape[1]}, visits {visits.shape[0]}x{visits.shape[1]} "
                         f"for {kp.n_tests} tests{' declustered' if decluster > 0.0 else ''} and {kp.bins} bins")
    out_array = np.zeros(n_samples)
    cdef double[::1] out = out_array
    # the params, once per call
    cdef double warmup = kp.warmup, short_alpha = kp.short_alpha, long_alpha = kp.long_alpha
    cdef double vol_alpha = kp.vol_alpha, profile_alpha = kp.profile_alpha, stat_alpha = kp.stat_alpha
    cdef double tail_k = kp.tail_k, stuck_share = kp.stuck_share, tail_alpha = kp.tail_alpha
    cdef double decades = kp.decades, shape_max = kp.shape_max, interval_ref = kp.interval_ref
    cdef double interval_alpha = kp.interval_alpha, interval_clip = kp.interval_clip, protect = kp.protect
    cdef double protect_weight = kp.protect_weight, clip = kp.clip, hold = kp.hold, alarm = kp.alarm
    cdef double min_rate = kp.min_rate, settle = kp.settle, winsor = kp.winsor, season_gain = kp.season_gain
    cdef double period = kp.period, rel_floor = kp.rel_floor, abs_floor = kp.abs_floor
    cdef bint protect_hold = kp.protect_hold, protect_calibration = kp.protect_calibration
    cdef Py_ssize_t bins = kp.bins
    cdef int nt = kp.n_tests, n_active = kp.n_active
    cdef bint active[N_TESTS_MAX]
    cdef int j
    for j in range(N_TESTS_MAX):
        active[j] = kp.active[j]
    cdef double stats[N_TESTS_MAX]
    cdef double surprise[N_TESTS_MAX]
    cdef bint over[N_TESTS_MAX]
    cdef double q[N_TESTS_MAX]
    cdef double scale[N_TESTS_MAX]
    cdef double dev[N_TESTS_MAX]
    for j in range(N_TESTS_MAX):
        stats[j] = 0.0
        surprise[j] = 0.0
    cdef double bin_width = period / bins
    cdef double log_active = log10(<double>n_active)
    cdef bint has_stuck = nt > STUCK
    cdef bint stuck_in_bound = has_stuck and active[STUCK]
    cdef double log_others = log10(<double>(n_active - 1)) if n_active > 1 else 0.0
    cdef double log_keep = log10(1.0 - stuck_share)
    cdef double log_share = log10(stuck_share)
    cdef Py_ssize_t i, r, b, c, k
    cdef double xi, ti, n, floor_, prof, y, spread, new_short, step, step_short, run, stuck, mean, rate, base, m1
    cdef double top, total, main, fading, news, w, young, la, pa, m, cw, sa, ta, cap, capped, d, excess, gap, ia
    cdef double m1_cluster, m2_cluster, tc
    cdef bint first, ready, seen, repeat, incident, learning, start
    cdef unsigned char v
    cdef double* s
    cdef Py_ssize_t n_rows = scalars.shape[0]
    if t.shape[0] != n_samples or x.shape[0] != n_samples:
        raise ValueError(f"{n_samples} rows, {t.shape[0]} times and {x.shape[0]} values")
    cdef bint has_deviation = deviation is not None
    if has_deviation and deviation.shape[0] != n_samples:
        raise ValueError(f"{n_samples} samples and {deviation.shape[0]} deviations")
    cdef double expected, off
    for i in range(n_samples):
        if rows[i] < 0 or rows[i] >= n_rows:
            raise ValueError(f"row {rows[i]} of a state of {n_rows} rows")
    with nogil:
        for i in range(n_samples):
            xi = x[i]
            if not isfinite(xi):
                if has_deviation:
                    deviation[i] = NAN
                continue  # scores 0 and teaches nothing
            r = rows[i]
            ti = t[i]
            s = &scalars[r, 0]
            n = s[N]
            first = n == 0.0
            if first:  # a new series starts at its first value, with no spread yet
                s[SHORT] = xi
                s[LONG] = xi
                s[Y_LAST] = xi
                s[T_FIRST] = ti
            floor_ = rel_floor * fabs(s[LONG]) + abs_floor

            # 1. the tests, against the state before x, on the deseasonalized value y
            b = <Py_ssize_t>_remainder(_floor_divide(ti, bin_width), <double>bins)
            prof = <double>profiles[r, b]
            ready = ((ti - s[T_FIRST]) >= 2.0 * period) and (s[SEAS_ERR] < season_gain * s[SPREAD])
            y = xi - prof if ready else xi
            if has_deviation:  # against the level the tests judge y by, in the raw frame
                expected = s[LONG] + (prof if ready else 0.0)
                off = (xi - expected) / fabs(expected)
                deviation[i] = 0.0 if off != off else off  # 0/0: at an expected 0
            spread = s[SEAS_ERR] if ready else s[SPREAD]
            stats[0] = fabs((y - s[SHORT]) / (s[STEP] + floor_))
            new_short = s[SHORT] + short_alpha * (y - s[SHORT])
            stats[1] = fabs((new_short - s[LONG]) / (spread + floor_))
            step = fabs(y - s[Y_LAST])
            step_short = s[STEP_SHORT] + vol_alpha * (step - s[STEP_SHORT])
            stats[2] = fabs(log((step_short + floor_) / (s[STEP] + floor_)))
            run = 0.0
            stuck = 0.0
            if has_stuck:  # the run of exact repeats of the raw value, on a series that has moved before
                run = s[RUN] + 1.0 if (xi == s[X_LAST] and not first) else 0.0
                stuck = run if s[STEP] > floor_ else 0.0
                stats[STUCK] = fabs(stuck)

            # 2. calibrate each test on its own history
            for j in range(nt):
                stats[j] = _min(stats[j], 1e12)
                surprise[j] = _calibrate(s, j, stats[j], tail_k, min_rate, shape_max, q, scale, dev, over)

            # the most surprising test, less the union bound over the tests that could fire
            if not stuck_in_bound:
                top = -INFINITY
                seen = False
                for j in range(nt):
                    if active[j]:
                        top = surprise[j] if not seen else _max(top, surprise[j])
                        seen = True
                total = top - log_active
            else:
                repeat = stuck > 0.0
                if n_active == 1:
                    total = surprise[STUCK] if repeat else 0.0
                else:
                    top = -INFINITY
                    seen = False
                    for j in range(nt):
                        if active[j] and j != STUCK:
                            top = surprise[j] if not seen else _max(top, surprise[j])
                            seen = True
                    main = top - log_others
                    if repeat:
                        total = _max(main + log_keep, surprise[STUCK] + log_share)
                    else:
                        total = main
            if interval_ref > 0.0:  # per interval_ref seconds, once an interval is known
                total = total + (log10(_max(s[INTERVAL], 1e-3) / interval_ref) if n >= 2.0 else 0.0)
            total = _max(total, 0.0)
            if not n >= warmup:
                total = 0.0
            if hold > 0.0:
                fading = s[PEAK] * s[HOLD_LEFT] / hold
                news = _max(total - fading, 0.0)
                if news >= alarm:
                    s[PEAK] = total
                    s[HOLD_LEFT] = hold
                else:
                    s[HOLD_LEFT] = _max(s[HOLD_LEFT] - 1.0, 0.0)
            else:
                news = total
            out[i] = _clamp(news / decades, 0.0, 1.0)

            # 3. learn, with the samples judged anomalous down-weighted
            incident = (total >= protect) or ((s[HOLD_LEFT] > 0.0) and protect_hold)
            w = protect_weight if incident else 1.0
            young = 1.0 / (n + 1.0)  # running means while young, then exponential
            la = _max(long_alpha, young) * w
            s[SHORT] = new_short
            s[STEP] += 0.0 if first else la * (_huber(step, s[STEP], n, clip, protect_weight, warmup) - s[STEP])
            s[STEP_SHORT] = 0.0 if first else step_short
            s[SPREAD] += la * (_huber(fabs(xi - s[LONG]), s[SPREAD], n, clip, protect_weight, warmup) - s[SPREAD])
            s[SEAS_ERR] += la * (_huber(fabs(xi - s[LONG] - prof), s[SEAS_ERR], n, clip, protect_weight, warmup) - s[SEAS_ERR])
            v = visits[r, b]
            pa = _max(profile_alpha, 1.0 / (v + 1.0)) * w
            profiles[r, b] = _clamp(prof + pa * ((xi - s[LONG]) - prof), -_F32_MAX, _F32_MAX)
            visits[r, b] = (v if v < 254 else 254) + 1
            s[LONG] += la * (xi - prof - s[LONG])
            s[Y_LAST] = y
            s[X_LAST] = xi
            s[RUN] = run
            # the tests' own statistics learn every sample, from the settle-th on, winsorized
            m = _max(n - settle, 0.0)
            cw = w if protect_calibration else 1.0
            learning = n >= settle
            sa = (_max(stat_alpha, 1.0 / (m + 1.0)) if learning else 0.0) * cw
            ta = (_max(tail_alpha, 1.0 / (m + 1.0)) if learning else 0.0) * cw
            for j in range(nt):
                c = N_FIXED + j * N_CAL
                cap = q[j] + winsor * (scale[j] + dev[j])
                capped = stats[j] if m == 0.0 else _min(stats[j], cap)
                d = capped - s[c + MEAN]
                s[c + MEAN] += sa * d
                s[c + DEV] += sa * (fabs(d) - s[c + DEV])
                excess = _max(capped - q[j], 0.0)
                # the exceedance rate counts every exceedance, declustered or not
                s[c + RATE] += ta * ((1.0 if over[j] else 0.0) - s[c + RATE])
                if decluster <= 0.0:  # every exceedance teaches the excess moments
                    s[c + EXCESS] += ta * (excess - s[c + EXCESS]) if over[j] else 0.0
                    s[c + EXCESS2] += ta * (excess * excess - s[c + EXCESS2]) if over[j] else 0.0
                elif learning:
                    # runs declustering: exceedances less than `decluster` quiet samples apart are one cluster,
                    # which teaches the excess moments once, when it ends: the mean of its excesses and of their
                    # squares, weighted as min(L, decluster_weight) samples would be (as one with decluster_weight 0)
                    k = clusters + j * N_CLU
                    if over[j]:
                        start = s[k + CL_AGE] == 0.0
                        s[k + CL_AGE] = 1.0
                        s[k + CL_LEN] = 1.0 if start else s[k + CL_LEN] + 1.0
                        s[k + CL_SUM] = excess if start else s[k + CL_SUM] + excess
                        s[k + CL_SUM2] = excess * excess if start else s[k + CL_SUM2] + excess * excess
                    elif s[k + CL_AGE] > 0.0:
                        s[k + CL_AGE] += 1.0
                        if s[k + CL_AGE] > decluster:  # the cluster ended
                            m2_cluster = s[k + CL_SUM2] / s[k + CL_LEN]
                            m1_cluster = s[k + CL_SUM] / s[k + CL_LEN]
                            if decluster_weight > 0.0:
                                tc = 1.0 - pow(1.0 - ta, _min(s[k + CL_LEN], decluster_weight))
                            else:
                                tc = ta
                            s[c + EXCESS] += tc * (m1_cluster - s[c + EXCESS])
                            s[c + EXCESS2] += tc * (m2_cluster - s[c + EXCESS2])
                            s[k + CL_AGE] = 0.0
                            s[k + CL_LEN] = 0.0
                            s[k + CL_SUM] = 0.0
                            s[k + CL_SUM2] = 0.0
            # the mean sample interval: a running mean, then exponential; a long gap counts
            # as interval_clip intervals at most
            gap = _max(ti - s[T_LAST], 0.0)
            if n >= 2.0:
                gap = _min(gap, interval_clip * s[INTERVAL])
            ia = _max(interval_alpha, 1.0 / _max(n, 1.0))
            s[INTERVAL] = 0.0 if first else s[INTERVAL] + ia * (gap - s[INTERVAL])
            s[T_LAST] = ti
            s[N] = n + 1.0

    return out_array


def counter_rates(double[::1] last_t, double[::1] last_v, Py_ssize_t[::1] rows, double[::1] t, double[::1] v):
    """Per-second rates of counter samples in order (NaN where no earlier sample is known); updates
    each series' last finite sample in place. A decrease is a reset: the increase is the new value."""
    cdef Py_ssize_t n_samples = rows.shape[0], i, r
    out_array = np.empty(n_samples)
    cdef double[::1] out = out_array
    cdef double prev_t, prev_v, increase, dt
    with nogil:
        for i in range(n_samples):
            r = rows[i]
            prev_t = last_t[r]
            prev_v = last_v[r]
            increase = v[i] - prev_v if v[i] >= prev_v else v[i]
            dt = t[i] - prev_t
            out[i] = increase / dt if dt > 0.0 else NAN
            if isfinite(v[i]):
                last_t[r] = t[i]
                last_v[r] = v[i]
    return out_array
