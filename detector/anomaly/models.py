"""The model catalog, river adapters, and the per-series detector with river's contract.

Every model in :data:`MODELS` is a factory for a *series scorer*: an object
holding the state of many series, one row each, with

- ``grow(capacity)`` / ``reset(rows)`` to make and free rows,
- ``run(rows, t, x)``: score each sample, then learn it, in order within each
  series (a series may appear many times), and return the scores (in [0, 1]),
- ``bytes_per_series``: the state one series costs.

The default model (:class:`~detector.anomaly.core.ColumnarState`) does ``run``
in one compiled loop over the samples (:mod:`detector.anomaly.kernel`). Any
river anomaly detector, or anything with river's ``learn_one(x)`` /
``score_one(x)``, is plugged in with :class:`RiverScorer`, which keeps one
model object per series and loops in Python: exact, and 100 to 1000 times
slower per sample.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np

from detector.anomaly.core import WEEK_S, ColumnarState, Params


class RiverScorer:
    """Many series, one river-style model each (``learn_one(x)`` / ``score_one(x)``).

    Each model sees ``x = {"value": v, "timestamp": t}`` (t in seconds). Scores
    are clipped to [0, 1]; NaN values score 0.0 and teach nothing.
    """

    def __init__(self, factory: Callable[[], Any], capacity: int = 0) -> None:
        self.factory = factory
        self.models: list[Any] = [None] * capacity
        self.capacity = capacity

    def grow(self, capacity: int) -> None:
        if capacity > self.capacity:
            self.models += [None] * (capacity - self.capacity)
            self.capacity = capacity

    def reset(self, rows) -> None:
        for r in np.atleast_1d(rows):
            self.models[int(r)] = None

    @property
    def bytes_per_series(self) -> int:
        """Pickled size of one fresh model after 1000 samples of noise (an estimate)."""
        model = self.factory()
        rng = np.random.default_rng(0)
        for i, v in enumerate(rng.normal(size=1000)):
            x = {"value": float(v), "timestamp": 60.0 * i}
            model.score_one(x)
            model.learn_one(x)
        return len(pickle.dumps(model))

    def run(self, rows: np.ndarray, t: np.ndarray, x: np.ndarray, deviation: np.ndarray | None = None) -> np.ndarray:
        """Scores in [0, 1]; a river model knows no expected level, so ``deviation`` is filled with NaN."""
        if deviation is not None:
            deviation[:] = np.nan
        out = np.zeros(len(rows))
        for i, (r, ts, v) in enumerate(zip(rows.tolist(), t.tolist(), x.tolist())):
            if not math.isfinite(v):
                continue
            model = self.models[r]
            if model is None:
                model = self.models[r] = self.factory()
            sample = {"value": v, "timestamp": ts}
            out[i] = min(max(float(model.score_one(sample)), 0.0), 1.0)
            model.learn_one(sample)
        return out


class GuardedGaussian:
    """river's ``GaussianScorer`` on the value, guarded for constant series.

    GaussianScorer is supervised (it reads ``y``) and, with zero variance, scores
    1.0 on every sample; here a series that has been constant scores 0.0 on
    that constant and 1.0 on anything else.
    """

    def __init__(self, grace_period: int = 100) -> None:
        from river import anomaly

        self.model = anomaly.GaussianScorer(grace_period=grace_period)

    def score_one(self, x: Mapping[str, float]) -> float:
        g = self.model.gaussian
        if g.n_samples >= self.model.grace_period and g.sigma == 0:
            return 0.0 if x["value"] == g.mu else 1.0
        return float(self.model.score_one(None, x["value"]))

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.model.learn_one(None, x["value"])


class HalfSpaceTreesOnValue:
    """river's MinMaxScaler | HalfSpaceTrees on the value alone (the README's weak baseline)."""

    def __init__(self) -> None:
        from river import anomaly, compose, preprocessing

        self.pipe = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))

    def score_one(self, x: Mapping[str, float]) -> float:
        return float(self.pipe.score_one({"value": x["value"]}))

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.pipe.learn_one({"value": x["value"]})


# The default detector until issue 11's eighth round (2026-12-07): no stuck-value test, every exceedance teaching
# its test's tail (no declustering). Kept so a user can pin the scores they had.
CLASSIC_PARAMS = Params(stuck=False, decluster=0, decluster_weight=0)

MODELS: dict[str, Callable[[], Any]] = {
    # the default: daily profile, stuck-value test, declustered tail calibration; no tuning
    "default": lambda: ColumnarState(Params()),
    # the same with a weekly profile (hourly bins) instead of a daily one
    "weekly": lambda: ColumnarState(Params(period=WEEK_S, bins=168)),
    # the default before 2026-12-07 (see CLASSIC_PARAMS)
    "classic": lambda: ColumnarState(CLASSIC_PARAMS),
    # the classic detector plus the stuck-value test (an opt-in model before the default had the test)
    "machine": lambda: ColumnarState(replace(CLASSIC_PARAMS, stuck=True)),
    # river baselines, one model object per series
    "river-gaussian": lambda: RiverScorer(GuardedGaussian),
    "river-hst": lambda: RiverScorer(HalfSpaceTreesOnValue),
}
DEFAULT_MODEL = "default"


def make_model(name: str = DEFAULT_MODEL) -> Any:
    """A new series scorer from the catalog; ValueError lists the names known."""
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"unknown anomaly model {name!r}; choose one of {sorted(MODELS)}") from None


def _parse(x: Any, fallback_t: float) -> tuple[float, float]:
    if isinstance(x, Mapping):
        if "value" in x:
            v = x["value"]
        elif len(x) == 1:
            (v,) = x.values()
        else:
            raise ValueError(f"expected a 'value' feature, got {sorted(x)}")
        t = x.get("timestamp", fallback_t)
    else:
        v, t = x, fallback_t
    if isinstance(t, datetime):
        t = t.timestamp()
    return float(t), float(v)


class AnomalyDetector:
    """One series' anomaly detector, with river's ``learn_one`` / ``score_one`` contract.

    ``x`` is ``{"value": v, "timestamp": seconds or datetime}`` or a bare number
    (then samples are taken as one minute apart). ``score_one`` never changes
    the state: a sample is always judged by a model that has not seen it. The
    score is in [0, 1] and means the same on every series (see
    :mod:`detector.anomaly.core`): 0.0 while warming up, near 0 for the usual,
    high for what this series' history makes very unlikely.

    >>> det = AnomalyDetector()
    >>> for i in range(500):
    ...     x = {"value": 10.0 + (i % 7) * 0.1, "timestamp": 60.0 * i}
    ...     _ = det.score_one(x)
    ...     det.learn_one(x)
    >>> det.score_one({"value": 10.3, "timestamp": 30_000.0}) < 0.2
    True
    >>> det.score_one({"value": 25.0, "timestamp": 30_000.0}) > 0.5
    True
    """

    def __init__(self, params: Params | None = None) -> None:
        self.state = ColumnarState(params or Params(), capacity=1)
        self._row = np.zeros(1, dtype=np.intp)
        self._n = 0
        self._pending: tuple[tuple[float, float], ColumnarState] | None = None

    def _advance(self, t: float, v: float) -> tuple[float, ColumnarState]:
        trial = copy.deepcopy(self.state)
        score = float(trial.run(self._row, np.array([t]), np.array([v]))[0])
        return score, trial

    def score_one(self, x: Any) -> float:
        t, v = _parse(x, 60.0 * self._n)
        score, trial = self._advance(t, v)
        self._pending = ((t, v), trial)
        return score

    def learn_one(self, x: Any) -> None:
        t, v = _parse(x, 60.0 * self._n)
        if self._pending is not None and self._pending[0] == (t, v) or (
            self._pending is not None and math.isnan(v) and self._pending[0][0] == t and math.isnan(self._pending[0][1])
        ):
            self.state = self._pending[1]
        else:
            self.state = self._advance(t, v)[1]
        self._pending = None
        self._n += 1

    @property
    def bytes_per_series(self) -> int:
        return self.state.bytes_per_series
