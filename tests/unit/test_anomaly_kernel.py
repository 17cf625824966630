"""The compiled step (detector/anomaly/kernel.py) against the numpy round step it replaced
(tests/unit/anomaly_reference.py): the same scores and state on any input, for every model's
params and the switches the defaults leave off, and counter rates sample by sample."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.anomaly import ColumnarState, CounterState, Params
from detector.anomaly.core import WEEK_S
from detector.anomaly.models import CLASSIC_PARAMS
from detector.anomaly.kernel import score_samples
from tests.unit.anomaly_reference import reference_run

# The kernel's log / log10 / log1p are the C library's, numpy's are its own vectorized ones:
# they may differ in the last bit, and nothing else may.
RTOL, ATOL = 1e-12, 1e-12

def _classic(**changes) -> Params:
    """The detector before issue 11's eighth round (no stuck test, no declustering), with ``changes``: the cases
    below were written as changes of that default."""
    return dataclasses.replace(CLASSIC_PARAMS, **changes)


PARAMS = {
    "default": Params(),
    "classic": CLASSIC_PARAMS,
    "weekly": Params(period=WEEK_S, bins=168),
    "machine": _classic(stuck=True),
    "stuck only": _classic(tests=("stuck",)),
    "spike and stuck": _classic(tests=("spike", "stuck")),
    "switches off": _classic(hold=0, clip=0.0, shape_max=0.0, interval_ref=0.0),
    "switches on": _classic(protect_hold=True, protect_calibration=True, warmup=3, settle=2, hold=5),
    "short period": _classic(period=600.0, bins=12, warmup=5),
    # declustered: several gaps r, weights 0 (one sample's), 3, 10 and 50, with and without the stuck test
    "declustered": _classic(decluster=1),
    "declustered, gap 3, machine": _classic(stuck=True, decluster=3, warmup=5, settle=2),
    "declustered, weighted 10": _classic(decluster=1, decluster_weight=10, warmup=5, settle=2),
    "declustered, gap 2, weighted 3, machine": _classic(stuck=True, decluster=2, decluster_weight=3, settle=2),
    "stuck only, declustered, weighted 50, protected": _classic(stuck=True, tests=("stuck",), decluster=1,
                                                                decluster_weight=50, protect_calibration=True,
                                                                warmup=3, settle=2, hold=5),
    "spike only, declustered, gap 5, weighted 10": _classic(tests=("spike",), decluster=5, decluster_weight=10),
    "declustered, all switches on": _classic(decluster=2, protect_hold=True, protect_calibration=True, warmup=3,
                                           settle=2, hold=5),
    "default, all switches on": Params(protect_hold=True, protect_calibration=True, warmup=3, settle=2, hold=5),
    "default, short period": Params(period=600.0, bins=12, warmup=5, settle=2),
    "declustered, gap 3, weighted 50, short period": _classic(decluster=3, decluster_weight=50, period=600.0, bins=12,
                                                            warmup=5, settle=2),
}

values = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, 1.0, 1.0, np.nan, np.inf, -np.inf, 1e300, -1e300, 5e-324]),
)


def _feed(model: str, data: st.DataObject) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_series = data.draw(st.integers(1, 5), label="series")
    n = data.draw(st.integers(1, 400), label="samples")
    rows = np.array(data.draw(st.lists(st.integers(0, n_series - 1), min_size=n, max_size=n)), dtype=np.intp)
    gaps = np.array(data.draw(st.lists(st.sampled_from([0.0, 15.0, 60.0, 300.0, 3600.0, 86_400.0]), min_size=n,
                                       max_size=n)))
    start = data.draw(st.sampled_from([0.0, 1.7e9, -86_400.0 * 3 + 7.5]), label="start")
    # each series' own clock runs forward (gaps of 0 included: several samples at one time)
    t = np.empty(n)
    clock = {r: start for r in range(n_series)}
    for i, (r, g) in enumerate(zip(rows.tolist(), gaps.tolist())):
        clock[r] += g
        t[i] = clock[r]
    if data.draw(st.booleans(), label="noisy"):
        x = np.random.default_rng(data.draw(st.integers(0, 2**16))).normal(100.0, 5.0, n)
        holes = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=8)), dtype=np.intp)
        x[holes] = np.array(data.draw(st.lists(values, min_size=len(holes), max_size=len(holes))))
    else:
        x = np.array(data.draw(st.lists(values, min_size=n, max_size=n)))
    return rows, t, x


def _assert_same(a: ColumnarState, b: ColumnarState, got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.scalars, b.scalars, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.profiles, b.profiles, rtol=1e-6, atol=0)  # float32: one rounding apart at most
    np.testing.assert_array_equal(a.visits, b.visits)


@settings(max_examples=120, deadline=None)
@given(model=st.sampled_from(sorted(PARAMS)), data=st.data())
def test_the_compiled_step_scores_and_learns_as_the_numpy_rounds_did(model, data):
    rows, t, x = _feed(model, data)
    n_series = int(rows.max()) + 1
    compiled, reference = ColumnarState(PARAMS[model], n_series), ColumnarState(PARAMS[model], n_series)
    # in two batches, so the second starts from learned state
    cut = data.draw(st.integers(0, len(rows)), label="cut")
    dev_got, dev_want = np.full(len(rows), -7.0), np.full(len(rows), -7.0)
    got = np.r_[compiled.run(rows[:cut], t[:cut], x[:cut], dev_got[:cut]),
                compiled.run(rows[cut:], t[cut:], x[cut:], dev_got[cut:])]
    want = np.r_[reference_run(reference, rows[:cut], t[:cut], x[:cut], dev_want[:cut]),
                 reference_run(reference, rows[cut:], t[cut:], x[cut:], dev_want[cut:])]
    _assert_same(compiled, reference, got, want)
    # every sample's deviation is written (none is left at -7), as the reference computes it
    np.testing.assert_allclose(dev_got, dev_want, rtol=RTOL, atol=ATOL)


def test_long_noisy_history_with_an_incident_stays_equal():
    """Thousands of samples: the score path through the tails, the hold and the protection."""
    rng = np.random.default_rng(7)
    n_series, n = 6, 3000
    t = np.repeat(np.arange(n) * 300.0, n_series)
    rows = np.tile(np.arange(n_series), n)
    x = rng.standard_t(3, n * n_series) + 10.0 * np.sin(2 * np.pi * t / 86_400.0)
    x[(t > 2000 * 300.0) & (t < 2050 * 300.0)] += 40.0  # a level shift on every series
    for name in ("default", "classic", "machine", "weekly", "declustered", "declustered, gap 3, machine",
                 "declustered, weighted 10", "declustered, gap 2, weighted 3, machine",
                 "spike only, declustered, gap 5, weighted 10", "declustered, all switches on",
                 "default, all switches on", "default, short period", "declustered, gap 3, weighted 50, short period"):
        a, b = ColumnarState(PARAMS[name], n_series), ColumnarState(PARAMS[name], n_series)
        dev_got, dev_want = np.empty(len(rows)), np.empty(len(rows))
        got, want = a.run(rows, t, x, dev_got), reference_run(b, rows, t, x, dev_want)
        _assert_same(a, b, got, want)
        np.testing.assert_allclose(dev_got, dev_want, rtol=RTOL, atol=ATOL)
        assert got.max() > 0.5  # the shift is found, so the comparison covered the tail path


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_counter_rates_in_one_pass_equal_one_sample_at_a_time(data):
    n = data.draw(st.integers(1, 60))
    rows = np.array(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.intp)
    v = np.array(data.draw(st.lists(values, min_size=n, max_size=n)))
    t = np.cumsum(np.array(data.draw(st.lists(st.sampled_from([0.0, 1.0, 15.0]), min_size=n, max_size=n))))
    batch = CounterState(3).rates(rows, t, v)
    one, single = CounterState(3), []
    for i in range(n):
        single.append(one.rates(rows[i:i + 1], t[i:i + 1], v[i:i + 1])[0])
    np.testing.assert_array_equal(batch, np.array(single))
    # and what a rate is: the increase over the time since the series' last finite sample
    last: dict[int, tuple[float, float]] = {}
    for i, (r, ti, vi) in enumerate(zip(rows.tolist(), t.tolist(), v.tolist())):
        if r in last:
            pt, pv = last[r]
            increase = vi - pv if vi >= pv else vi
            expect = increase / (ti - pt) if ti - pt > 0 else np.nan
            np.testing.assert_array_equal(batch[i], expect)
        else:
            assert np.isnan(batch[i])
        if np.isfinite(vi):
            last[r] = (ti, vi)


def _learned(params: Params, n_series: int = 3, n: int = 60) -> tuple[ColumnarState, np.ndarray, np.ndarray]:
    state = ColumnarState(params, n_series)
    rows = np.tile(np.arange(n_series), n)
    t = np.repeat(np.arange(n) * 300.0, n_series)
    state.run(rows, t, np.random.default_rng(3).normal(10.0, 1.0, len(rows)))
    return state, rows, t


def test_a_snapshot_of_another_layout_is_refused_not_misread():
    from detector.snapshot import SnapshotError, apply, capture, decode, encode

    three_tests, _, _ = _learned(CLASSIC_PARAMS)
    saved = decode(encode(capture(three_tests)))
    # another set of tests (more state columns) and another profile (more bins): the loop would read past rows
    for other in (_classic(stuck=True), _classic(period=WEEK_S, bins=168)):
        with pytest.raises(SnapshotError, match="another layout"):
            apply(ColumnarState(other), saved)
    # the same layout loads and scores on exactly as the state it was taken from
    back = ColumnarState(CLASSIC_PARAMS)
    apply(back, saved)
    rows, t, x = np.arange(3), np.full(3, 60 * 300.0), np.array([10.0, 30.0, 9.5])
    np.testing.assert_array_equal(back.run(rows, t, x), three_tests.run(rows, t, x))


def test_the_compiled_step_refuses_state_it_would_read_out_of_bounds():
    state, _, _ = _learned(Params())
    one = (np.zeros(1, dtype=np.intp), np.zeros(1), np.ones(1))
    with pytest.raises(ValueError, match="another layout"):
        score_samples(state.scalars[:, :-5].copy(), state.profiles, state.visits, *one, state.kernel_params)
    with pytest.raises(ValueError, match="another layout"):
        score_samples(state.scalars, state.profiles[:, :-1].copy(), state.visits, *one, state.kernel_params)
    with pytest.raises(ValueError, match="row 3 of a state of 3 rows"):
        score_samples(state.scalars, state.profiles, state.visits, np.array([0, 3], dtype=np.intp), np.zeros(2),
                      np.ones(2), state.kernel_params)
    with pytest.raises(ValueError, match="2 rows, 1 times"):
        score_samples(state.scalars, state.profiles, state.visits, np.zeros(2, dtype=np.intp), np.zeros(1),
                      np.ones(2), state.kernel_params)
