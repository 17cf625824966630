"""Saturation forecasts for a stream of sample batches: specs, trend bank and warnings together.

:class:`ForecastEngine` is what a partition's agent calls per Kafka message.
It recognises bounded series when they first appear (user specs, then the
runbook's patterns), keeps one trend row and one warning row per such series,
follows the latest value of each paired bound series, learns the samples and
evaluates each series at most once per evaluation slot, and returns the
early-warning state changes as :class:`EarlyWarning` events.

Two checks keep everyday bursts from warning (``python -m bench.early_warning``):

* *the level supports the forecast* (``min_used``, default 0.7): a warning starts
  or goes on only while the series has used that share of its headroom (an up
  series from 0 to its bound, a down series from the highest value it has shown
  down to its bound; :meth:`ForecastEngine.used`). A burst to half full that a
  straight line extrapolates to the bound is not warned about; a ramp that keeps
  going is, once 30% of the headroom is left. The same pairing as the common
  ``predict_linear(...) < 0 and avail / size < 0.4`` disk alerts.
* *a stopped rise voids the confirmation* (``restart_on_change``): when the trend
  fit detects that the data fell behind its line (a rise that stopped: the fit
  forgets its past, see :mod:`detector.forecast.trend`), a pending warning goes
  back to inactive and must be confirmed afresh on the new trend, instead of
  firing on the slope the rise left in the fit.

Everything is on event time: samples carry their timestamps; nothing reads a
clock. Within one call, paired bound values are applied before the forecast
samples (a max depth changes rarely; the forecast uses the newest one), and a
series with several samples is learned and evaluated sample by sample, so the
events do not depend on how the stream was cut into batches.

>>> engine = ForecastEngine()
>>> depth = (("__name__", "pgmq_queue_depth"), ("queue_name", "orders"))
>>> cap = (("__name__", "pgmq_queue_max_depth"), ("queue_name", "orders"))
>>> events = []
>>> for i in range(80):                        # +40 per 15 s scrape from 6000, +-30 of noise
...     t_ms = 1_700_000_000_000 + 15_000 * i
...     events += engine.ingest([depth, cap], [0, 1], [t_ms, t_ms], [6000.0 + 40 * i + (-1) ** i * 30, 10000.0])
>>> [(e.previous, e.state, (e.t_ms - 1_700_000_000_000) // 15_000) for e in events]   # pending from 70% full
[('inactive', 'pending', 26), ('pending', 'firing', 37)]
>>> print(events[-1].text)
pgmq_queue_depth{queue_name="orders"} reaches pgmq_queue_max_depth (10000) in about 16m (15m-17m)
>>> alert = events[-1].to_alert()
>>> alert.state, dict(alert.labels)["alertname"], dict(alert.labels)["metric"]
('firing', 'SaturationForecast', 'pgmq_queue_depth')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.alerts import AlertTransition
from detector.labels import METRIC_NAME, Labels, canonical_bytes, labels_from_canonical, metric_name
from detector.forecast.spec import BoundSpec, ForecastConfig
from detector.forecast.trend import STATE_BYTES, TrendBank, _group_ranks, direction_sign
from detector.forecast.warning import FIRING, INACTIVE, PENDING, STATES, WarningBank, humanize, series_text, warning_text

ALERT_NAME = "SaturationForecast"


@dataclass(frozen=True, slots=True)
class EarlyWarning:
    """One early warning changing state (``inactive``/``pending``/``firing``) at event time ``t_ms``.

    ``eta_s``/``eta_low_s``/``eta_high_s`` are the estimate at that evaluation
    (NaN when the trend no longer heads to the bound), measured from ``t_ms``.
    """

    labels: Labels
    spec: BoundSpec
    state: str
    previous: str
    t_ms: int
    eta_s: float
    eta_low_s: float
    eta_high_s: float
    bound: float
    bound_name: str
    value: float
    active_at_ms: int | None
    fired_at_ms: int | None
    horizon_s: float

    @property
    def text(self) -> str:
        from detector.forecast.warning import bound_text

        if self.state != "inactive" and self.eta_s == self.eta_s:
            reached = self.value >= self.bound if self.spec.direction == "up" else self.value <= self.bound
            if self.eta_s <= 0 and not reached:
                # The fitted trend is past the bound but the last sample is not:
                # say what is observed rather than claim the bound was reached.
                return f"{series_text(self.labels)} is at {self.value:g}, about to reach {bound_text(self.bound, self.bound_name)}"
            return warning_text(self.labels, self.bound, self.bound_name, self.spec.direction,
                                self.eta_s, self.eta_low_s, self.eta_high_s)

        return (f"{series_text(self.labels)} no longer expected to reach "
                f"{bound_text(self.bound, self.bound_name)} within {humanize(self.horizon_s)}")

    def to_alert(self, group: str = "headroom_forecasts", source: str = "forecast",
                 extra_labels: Labels = (("severity", "warning"),)) -> AlertTransition:
        """The same event as an :class:`~detector.alerts.AlertTransition`, for the shared alert path.

        Labels: the series' labels without ``__name__``, plus ``alertname``,
        ``metric`` (the series' name, so two metrics of one target stay two
        alerts) and ``extra_labels``. The value is the ETA in seconds.
        """
        labels = dict(self.labels)
        labels.pop(METRIC_NAME, None)
        labels.update(dict(extra_labels))
        labels["alertname"] = ALERT_NAME
        labels["metric"] = metric_name(self.labels)
        annotations = {
            "summary": self.text,
            "eta_seconds": f"{self.eta_s:.0f}" if self.eta_s == self.eta_s else "",
            "eta_low_seconds": f"{self.eta_low_s:.0f}" if self.eta_low_s == self.eta_low_s else "",
            "eta_high_seconds": f"{self.eta_high_s:.0f}" if self.eta_high_s == self.eta_high_s else "",
        }
        resolved = self.t_ms if self.state == "inactive" and self.previous == "firing" else None
        return AlertTransition(
            rule=ALERT_NAME, group=group, source=source, state=self.state, previous=self.previous,
            labels=tuple(sorted(labels.items())), annotations=tuple(sorted(annotations.items())),
            value=self.eta_s, active_at=self.active_at_ms if self.active_at_ms is not None else self.t_ms,
            fired_at=self.fired_at_ms, resolved_at=resolved, eval_time=self.t_ms,
            expr=f"forecast: {self.spec.describe()} within {humanize(self.horizon_s)}",
        )


class ForecastEngine:
    """Bounded-series forecasts and early warnings over a stream of sample batches.

    ``ingest`` takes the columns of a :class:`~detector.batch.SampleBatch`
    (``ingest_batch`` the batch itself): a table of series (label tuples or
    canonical label bytes), each sample's series index, timestamps in ms, values.
    """

    def __init__(self, config: ForecastConfig | None = None) -> None:
        self.config = config or ForecastConfig()
        s = self.config.settings
        self.trend = TrendBank(s.tau_s, s.level, s.min_samples, s.max_horizon_s, s.adapt_sigmas)
        self.warnings = WarningBank(s.horizon_s, s.warn_after, s.resolve_after, s.hysteresis, s.eval_interval_s)
        self._keys: dict[bytes, int] = {}  # series key -> forecast row, or -1 for not a forecast series
        self._bound_keys: dict[bytes, list[int]] = {}  # paired bound series key -> forecast rows
        self._labels: list[Labels] = []
        self._specs: list[BoundSpec] = []
        # per forecast row: direction sign, bound value (NaN until the paired series is seen), horizon, last value
        self._sign = np.zeros(64)
        self._bound = np.full(64, np.nan)
        self._horizon = np.zeros(64)
        self._last_x = np.full(64, np.nan)
        self._peak = np.full(64, np.nan)  # highest value seen: the "empty" level of a down-bound series
        self.skipped = 0  # samples not learned: non-finite, duplicate or out of order

    # ------------------------------------------------------------------ series

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def nbytes_per_series(self) -> int:
        """Numeric state per forecast series: trend, warning, bound, direction, horizon, last value,
        peak value, change flag."""
        return STATE_BYTES + self.warnings.nbytes_per_series + 5 * 8 + 1

    def _row_of(self, key: bytes, labels: Labels | None) -> int:
        row = self._keys.get(key)
        if row is not None:
            return row
        labels = labels if labels is not None else labels_from_canonical(key)
        spec = next((sp for sp in self.config.specs if sp.matches(labels)), None)
        if spec is None:
            self._keys[key] = -1
            return -1
        row = int(self.trend.add(1)[0])
        self.warnings.add(1)
        self._labels.append(labels)
        self._specs.append(spec)
        horizon = spec.horizon_s if spec.horizon_s is not None else self.config.settings.horizon_s
        bound = spec.bound if spec.bound is not None else np.nan
        if row >= self._sign.shape[0]:
            extra = self._sign.shape[0]
            self._sign = np.concatenate([self._sign, np.zeros(extra)])
            self._bound = np.concatenate([self._bound, np.full(extra, np.nan)])
            self._horizon = np.concatenate([self._horizon, np.zeros(extra)])
            self._last_x = np.concatenate([self._last_x, np.full(extra, np.nan)])
            self._peak = np.concatenate([self._peak, np.full(extra, np.nan)])
        self._sign[row] = direction_sign(spec.direction)
        self._bound[row] = bound
        self._horizon[row] = horizon
        paired = spec.bound_labels(labels)
        if paired is not None:
            self._bound_keys.setdefault(canonical_bytes(paired), []).append(row)
        self._keys[key] = row
        return row

    def rows(self, series: Sequence[Labels | bytes]) -> tuple[np.ndarray, list[list[int] | None]]:
        """Forecast row of each series (-1: none), and the forecast rows each one is the bound of."""
        found = np.empty(len(series), dtype=np.int64)
        keys = []
        for i, item in enumerate(series):
            if isinstance(item, bytes):
                key, labels = item, None
            else:
                key, labels = canonical_bytes(item), item
            found[i] = self._row_of(key, labels)
            keys.append(key)
        # after every new series is registered, so a bound listed before its series still counts
        return found, [self._bound_keys.get(key) for key in keys]

    def labels(self, row: int) -> Labels:
        return self._labels[row]

    # ------------------------------------------------------------------ stream

    def ingest_batch(self, batch) -> list[EarlyWarning]:
        """:meth:`ingest` on a :class:`~detector.batch.SampleBatch`."""
        return self.ingest(batch.series_keys, batch.series_index, batch.timestamps, batch.values)

    def ingest(self, series: Sequence[Labels | bytes], series_index: Sequence[int] | np.ndarray,
               t_ms: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray) -> list[EarlyWarning]:
        """Learn a batch and evaluate the series it touched; returns the warnings' state changes.

        Events come in event-time order within each series (rounds of one sample per series).
        """
        index = np.asarray(series_index, dtype=np.int64)
        t_ms = np.asarray(t_ms, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        table, bound_of = self.rows(series)
        self._apply_bounds(bound_of, index, t_ms, values)
        rows = table[index]
        mine = rows >= 0
        if not mine.any():
            return []
        if not mine.all():
            rows, t_ms, values = rows[mine], t_ms[mine], values[mine]
        ranks = _group_ranks(rows)
        top = int(ranks.max())
        if top == 0:
            return self._round(rows, t_ms, values)
        events: list[EarlyWarning] = []
        for r in range(top + 1):
            pick = np.flatnonzero(ranks == r)
            events += self._round(rows[pick], t_ms[pick], values[pick])
        return events

    def _apply_bounds(self, bound_of: list[list[int] | None], index: np.ndarray, t_ms: np.ndarray,
                      values: np.ndarray) -> None:
        """Each paired bound series' newest value in the batch goes to the forecast rows it bounds."""
        is_bound = np.fromiter((rows is not None for rows in bound_of), dtype=bool, count=len(bound_of))
        if not is_bound.any():
            return
        at = np.flatnonzero(is_bound[index])
        if at.shape[0] == 0:
            return
        order = at[np.lexsort((t_ms[at], index[at]))]  # by series, then time
        last = np.ones(order.shape[0], dtype=bool)
        last[:-1] = index[order[1:]] != index[order[:-1]]
        for j in order[last]:
            self._bound[bound_of[int(index[j])]] = values[j]  # NaN (a stale bound) stops evaluation

    def _round(self, rows: np.ndarray, t_ms: np.ndarray, x: np.ndarray) -> list[EarlyWarning]:
        t_s = t_ms / 1000.0
        learned = self.trend.learn_unique(rows, t_s, x)
        self.skipped += int((~learned).sum())
        if not learned.all():
            rows, t_ms, t_s, x = rows[learned], t_ms[learned], t_s[learned], x[learned]
        self._last_x[rows] = x
        self._peak[rows] = np.fmax(self._peak[rows], x)
        # not evaluated: series whose bound is unknown (paired series not seen, or stale) or whose
        # fit is not warmed up: no information is not a reason to warn or to resolve
        st = self.config.settings
        ready = self.trend.ready_many(rows)
        restart = None
        if st.restart_on_change:
            # a change the fit detected against the bound's direction (the data fell behind the line:
            # a rise that stopped) voids a pending warning's confirmation, even while the fit warms
            # up again; one toward the bound (a ramp steepening) only holds it until the fit is ready
            behind = self.trend.forgot[rows] * self._sign[rows] < 0
            restart = (self.warnings.state[rows] == PENDING) & behind
            ready = ready | restart
        due = self.warnings.due(rows, t_s) & np.isfinite(self._bound[rows]) & ready
        if not due.all():
            rows, t_ms, t_s = rows[due], t_ms[due], t_s[due]
            restart = restart[due] if restart is not None else None
        if rows.shape[0] == 0:
            return []
        self.trend.forgot[rows] = 0
        eta, low, high = self.trend.time_to_bound_many(rows, self._bound[rows], self._sign[rows])
        judged = low if self.config.settings.warn_on == "eta_low" else eta
        if restart is not None and restart.any():
            judged = np.where(restart, np.nan, judged)
        near = self._near(rows)
        allowed = self._used(rows) >= st.min_used if st.min_used > 0 else None
        changed, prev, new = self.warnings.step(rows, t_s, judged, self._horizon[rows], near, allowed)
        if changed.shape[0] == 0:
            return []
        where = {int(r): i for i, r in enumerate(rows)}
        events = [self._event(int(r), int(p), int(n), where[int(r)], t_ms, eta, low, high)
                  for r, p, n in zip(changed, prev, new)]
        ended = changed[new == INACTIVE]
        if ended.shape[0]:
            self.warnings.clear_times(ended)
        return events

    def used(self, labels: Labels) -> float | None:
        """Share of its headroom a forecast series has used (see :meth:`_used`); None if unknown."""
        row = self._keys.get(canonical_bytes(labels), -1)
        if row < 0 or not np.isfinite(self._bound[row]) or not self.trend.ready_many(np.array([row]))[0]:
            return None
        return float(self._used(np.array([row]))[0])

    def _used(self, rows: np.ndarray) -> np.ndarray:
        """Share of the headroom used, by the fitted level now: 0 empty, 1 at the bound.

        An up-bound series is empty at 0 (a queue, a channel): ``level / bound``. A
        down-bound series (permits available, free bytes) is empty at the highest
        value it has shown, its capacity as far as the stream tells:
        ``(peak - level) / (peak - bound)``. Where that is undefined (a bound at or
        below 0 for an up series, a series that never moved for a down one) it is
        1, so the gate never blocks for lack of a scale.
        """
        level, _ = self.trend.level_slope(rows)
        bound, sign = self._bound[rows], self._sign[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            up = level / bound
            peak = self._peak[rows]
            down = (peak - level) / (peak - bound)
            used = np.where(sign > 0, np.where(bound > 0, up, 1.0), np.where(peak > bound, down, 1.0))
        return np.where(np.isfinite(used), used, 1.0)

    def _near(self, rows: np.ndarray) -> np.ndarray | None:
        """Firing rows whose series sits at its bound, within its noise (they do not resolve)."""
        firing = self.warnings.state[rows] == FIRING
        if not firing.any():
            return None
        near = np.zeros(rows.shape[0], dtype=bool)
        at = rows[firing]
        with np.errstate(invalid="ignore"):
            near[firing] = self.trend.distance_many(at, self._bound[at], self._sign[at]) <= self.trend.quantile_many(at)
        return near

    def _event(self, row: int, prev: int, new: int, i: int, t_ms: np.ndarray, eta: np.ndarray,
               low: np.ndarray, high: np.ndarray) -> EarlyWarning:
        spec = self._specs[row]
        labels = self._labels[row]
        active = self.warnings.active_at[row]
        fired = self.warnings.fired_at[row]
        return EarlyWarning(
            labels=labels, spec=spec, state=STATES[new], previous=STATES[prev], t_ms=int(t_ms[i]),
            eta_s=float(eta[i]), eta_low_s=float(low[i]), eta_high_s=float(high[i]),
            bound=float(self._bound[row]), bound_name=spec.bound_name(labels), value=float(self._last_x[row]),
            active_at_ms=None if active != active else int(round(active * 1000)),
            fired_at_ms=None if fired != fired or (new != FIRING and prev != FIRING) else int(round(fired * 1000)),
            horizon_s=float(self._horizon[row]),
        )

    # ------------------------------------------------------------------ reading

    def estimate(self, labels: Labels) -> tuple[float, float, float] | None:
        """The latest (eta, low, high) of a forecast series, seconds after its last sample; None if none."""
        row = self._keys.get(canonical_bytes(labels), -1)
        if row < 0 or not np.isfinite(self._bound[row]):
            return None
        eta, low, high = self.trend.time_to_bound_many(np.array([row]), self._bound[[row]], self._sign[[row]])
        if np.isnan(eta[0]):
            return None
        return float(eta[0]), float(low[0]), float(high[0])

    def state(self, labels: Labels) -> str:
        """The warning state of a series (``inactive`` for unknown series)."""
        row = self._keys.get(canonical_bytes(labels), -1)
        return STATES[int(self.warnings.state[row])] if row >= 0 else "inactive"

    # ------------------------------------------------------------------ snapshots

    # Snapshots (detector.snapshot) carry every other attribute. The config comes
    # from the constructor; each row's spec is found again from its labels.
    SNAPSHOT_SKIP = frozenset({"config", "_specs"})

    def restore_state(self, state: dict) -> None:
        """Load a snapshot's state (see :mod:`detector.snapshot`), matching each row's spec anew."""
        from detector.snapshot import SnapshotError, apply_attributes

        apply_attributes(self, state)
        specs = []
        for labels in self._labels:
            spec = None if labels is None else next((sp for sp in self.config.specs if sp.matches(labels)), None)
            if labels is not None and spec is None:
                raise SnapshotError(f"forecast series {series_text(labels)} matches no spec of the current configuration")
            specs.append(spec)
        self._specs = specs
