"""Saturation forecasts for a stream of sample batches: specs, trend bank and warnings together.

:class:`ForecastEngine` is what a partition's agent calls per Kafka message.
It recognises bounded series when they first appear (user specs, then the
runbook's patterns), keeps one trend row and one warning row per such series,
follows the latest value of each paired bound series, learns the samples and
evaluates each series at most once per evaluation slot, and returns the
early-warning state changes as :class:`EarlyWarning` events. On request it
also hands out the estimates themselves as :class:`Forecast` events, when they
change (see :class:`Forecast`).

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

And one that learns from the series' own history (the *dip gate*, ``dip_memory``):

* *deeper than the benign dips it recovered from*: each series remembers the
  deepest excursion (the most headroom used) it came back from within the last
  ``dip_memory`` (24 h; 0 turns the gate off), an excursion counting as recovered once the used share
  fell ``dip_recovery`` (0.2) below its deepest point. A warning starts or goes
  on only while the series uses more than that, by ``dip_margin`` (0.25 of its
  headroom). A channel whose bursts reach 60% full and drain is warned about
  only past 85%; one that came back from 75% or more is not warned about again
  until that excursion is a day old; a series with no such history is gated by
  ``min_used`` alone. (One remembered excursion per series: when the deepest
  expires, the gate starts afresh from the next recovery.)
* *or longer than the rises it recovered from* (``rise_margin``, 5 minutes; off turns it off): the
  depth test alone refuses a real ramp that follows bursts as deep as the ramp so
  far (after a burst to 75%, nothing is let through for a day). So each series also
  remembers how long the rise to its excursions' deepest points lasted (the time its
  fit had headed to the bound, an ETA within ``max_horizon``), the longest one it
  recovered from within ``dip_memory``; a warning may also start while the current
  rise has lasted longer than that, by ``rise_margin``. A burst that tops out after
  the same few minutes as the ones before is still held back; a ramp that keeps
  climbing for longer is let through (and so is a benign rise that climbs for
  longer than any before it: the price).
* *or as long a rise, and sooner at the bound than it ever was* (``approach_margin``,
  0.5; off turns it off): depth says how close a series is, the ETA how close *in
  time*, which counts the speed of the approach too. Each series remembers the
  shortest ETA its fit gave during an excursion it recovered from within
  ``dip_memory``; a warning may also start while the current ETA, stretched by
  ``1 + approach_margin``, is shorter than that *and* the current rise has lasted
  longer than the longest remembered one (the rise test's margin not required).
  A burst like the earlier ones neither outlasts them nor comes closer than they
  did; a 15-minute ramp after bursts that rose for 5-10 minutes reaches its bound
  before the rise test's margin lets it through, but it approaches faster once it
  has risen as long as they did. Neither piece alone is enough: on the bench's
  benign days a new shortest ETA alone (a burst faster than the ones before it)
  is common. The price: a benign burst that both rises longer and heads for the
  bound faster than any before it is let through.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from detector.output.alerts import AlertTransition
from detector.labels import METRIC_NAME, Labels, canonical_bytes, labels_from_canonical, metric_name, stable_hash
from detector.forecast.spec import BoundSpec, ForecastConfig
from detector.forecast.trend import STATE_BYTES, TrendBank, _group_ranks, direction_sign
from detector.forecast.warning import (FIRING, INACTIVE, PENDING, STATES, WarningBank, bound_text, humanize,
                                       round_durations, series_text, warning_text)

ALERT_NAME = "SaturationForecast"
DIP_FIELDS = ("_dip_now", "_dip_seen", "_dip_at", "_rise_from", "_rise_now", "_rise_seen", "_rise_at",
              "_eta_now", "_eta_seen", "_eta_at")
"""Per-row columns of the dip gate, its rise test and its approach test (see the module docs)."""
_SHOWN_ROUNDING = ("round", "floor", "ceil")  # an ETA as people read it, and its interval rounded outwards
WARNING_LABELS: Labels = (("severity", "warning"),)
"""Labels added to every early-warning alert by default."""


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
        if self.state != "inactive" and self.eta_s == self.eta_s:
            return _heading_text(self.labels, self.bound, self.bound_name, self.spec.direction, self.value,
                                 self.eta_s, self.eta_low_s, self.eta_high_s)

        return (f"{series_text(self.labels)} no longer expected to reach "
                f"{bound_text(self.bound, self.bound_name)} within {humanize(self.horizon_s)}")

    def to_alert(self, group: str = "headroom_forecasts", source: str = "forecast",
                 extra_labels: Labels = WARNING_LABELS) -> AlertTransition:
        """The same event as an :class:`~detector.output.alerts.AlertTransition`, for the shared alert path.

        Labels: the series' labels without ``__name__``, plus ``alertname``,
        ``metric`` (the series' name, so two metrics of one target stay two
        alerts) and ``extra_labels``. The value is the ETA in seconds.
        """
        resolved = self.t_ms if self.state == "inactive" and self.previous == "firing" else None
        return AlertTransition(
            rule=ALERT_NAME, group=group, source=source, state=self.state, previous=self.previous,
            labels=warning_alert_labels(self.labels, extra_labels),
            annotations=_annotations(self.text, self.eta_s, self.eta_low_s, self.eta_high_s),
            value=self.eta_s, active_at=self.active_at_ms if self.active_at_ms is not None else self.t_ms,
            fired_at=self.fired_at_ms, resolved_at=resolved, eval_time=self.t_ms,
            expr=f"forecast: {self.spec.describe()} within {humanize(self.horizon_s)}",
        )


@dataclass(frozen=True, slots=True)
class Forecast:
    """A series' saturation estimate at one evaluation (event time ``t_ms``), emitted when it changed.

    *Changed* means what a person would see change: the warning ``state``, or the
    ETA, its low or its high end as :func:`~detector.forecast.warning.humanize`
    shows them (``4m (3m-6m)`` to ``3m (2m-5m)``), which covers a series starting
    or stopping heading to its bound (``eta_s`` finite or NaN). A series that
    never heads to its bound emits nothing. ``eta_high_s`` may be ``inf`` (the
    interval is open: the trend may flatten before the bound).

    >>> f = Forecast((("__name__", "x_saturation"), ("job", "a")), 1_700_000_000_000, 250.0, 170.0, float("inf"),
    ...              1.0, "", "up", 0.93, "pending")
    >>> d = f.to_dict()
    >>> d["kind"], d["labels"], d["eta_seconds"], d["eta_high_seconds"], d["bound_name"]
    ('forecast', {'__name__': 'x_saturation', 'job': 'a'}, 250.0, None, '')
    """

    labels: Labels
    t_ms: int
    eta_s: float
    eta_low_s: float
    eta_high_s: float
    bound: float
    bound_name: str
    direction: str
    value: float
    state: str

    @property
    def heading(self) -> bool:
        """Whether the trend heads to the bound within the forecaster's maximum horizon."""
        return self.eta_s == self.eta_s

    @property
    def key(self) -> bytes:
        """The series' identity (a stable hash of its labels), for the Kafka message key."""
        return f"{stable_hash(canonical_bytes(self.labels)):016x}".encode()

    def to_dict(self) -> dict:
        """JSON-ready; an ETA that is NaN (not heading) or infinite (open interval) is ``None``."""
        return {
            "kind": "forecast", "labels": dict(self.labels), "t": self.t_ms,
            "eta_seconds": _finite(self.eta_s), "eta_low_seconds": _finite(self.eta_low_s),
            "eta_high_seconds": _finite(self.eta_high_s), "bound": self.bound, "bound_name": self.bound_name,
            "direction": self.direction, "value": self.value, "state": self.state,
        }


    def alert_update(self, extra_labels: Labels = WARNING_LABELS) -> tuple[Labels, Labels, float] | None:
        """(alert labels, annotations, value) of this series' early warning with this estimate, for a
        pending or firing warning that still heads to the bound; else None (nothing new to say)."""
        if self.state == "inactive" or not self.heading:
            return None
        text = _heading_text(self.labels, self.bound, self.bound_name, self.direction, self.value,
                             self.eta_s, self.eta_low_s, self.eta_high_s)
        return (warning_alert_labels(self.labels, extra_labels),
                _annotations(text, self.eta_s, self.eta_low_s, self.eta_high_s), self.eta_s)


def _heading_text(labels: Labels, bound: float, bound_name: str, direction: str, value: float,
                  eta: float, low: float, high: float) -> str:
    reached = value >= bound if direction == "up" else value <= bound
    if eta <= 0 and not reached:
        # The fitted trend is past the bound but the last sample is not:
        # say what is observed rather than claim the bound was reached.
        return f"{series_text(labels)} is at {value:g}, about to reach {bound_text(bound, bound_name)}"
    return warning_text(labels, bound, bound_name, direction, eta, low, high)


def warning_alert_labels(labels: Labels, extra_labels: Labels = WARNING_LABELS) -> Labels:
    """The labels of a series' early-warning alert: its own without ``__name__``, ``extra_labels``,
    ``alertname`` and ``metric`` (its name).

    >>> warning_alert_labels((("__name__", "x_saturation"), ("job", "a")))
    (('alertname', 'SaturationForecast'), ('job', 'a'), ('metric', 'x_saturation'), ('severity', 'warning'))
    """
    out = dict(labels)
    out.pop(METRIC_NAME, None)
    out.update(dict(extra_labels))
    out["alertname"] = ALERT_NAME
    out["metric"] = metric_name(labels)
    return tuple(sorted(out.items()))


def _annotations(text: str, eta: float, low: float, high: float) -> Labels:
    return tuple(sorted({
        "summary": text,
        "eta_seconds": f"{eta:.0f}" if eta == eta else "",
        "eta_low_seconds": f"{low:.0f}" if low == low else "",
        "eta_high_seconds": f"{high:.0f}" if high == high else "",
    }.items()))


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _unshown(n: int) -> np.ndarray:
    """Rows of "no forecast shown yet": inactive, not heading (so a series that never heads emits nothing)."""
    return np.tile(np.array([INACTIVE, np.nan, np.nan, np.nan]), (n, 1))


class ForecastEngine:
    """Bounded-series forecasts and early warnings over a stream of sample batches.

    ``ingest`` takes the columns of a :class:`~detector.wire.batch.SampleBatch`
    (``ingest_batch`` the batch itself): a table of series (label tuples or
    canonical label bytes), each sample's series index, timestamps in ms, values.
    """

    def __init__(self, config: ForecastConfig | None = None, labels_of: Callable[[bytes], Labels] | None = None) -> None:
        self.config = config or ForecastConfig()
        # How a new series' key becomes its labels: a partition passes its store's shared pairs.
        self.labels_of = labels_of or labels_from_canonical
        s = self.config.settings
        self.trend = TrendBank(s.tau_s, s.level, s.min_samples, s.max_horizon_s, s.adapt_sigmas)
        self.warnings = WarningBank(s.horizon_s, s.warn_after, s.resolve_after, s.hysteresis, s.eval_interval_s,
                                    confirm_share=s.confirm_share, warn_after_min=s.warn_after_min)
        self._keys: dict[bytes, int] = {}  # series key -> forecast row, or -1 for not a forecast series
        self._bound_keys: dict[bytes, list[int]] = {}  # paired bound series key -> forecast rows
        self._labels: list[Labels] = []
        self._specs: list[BoundSpec] = []
        self._free: list[int] = []  # rows of retired series, reused by new ones
        # per forecast row: direction sign, bound value (NaN until the paired series is seen), horizon, last value
        self._sign = np.zeros(64)
        self._bound = np.full(64, np.nan)
        self._horizon = np.zeros(64)
        self._last_x = np.full(64, np.nan)
        self._peak = np.full(64, np.nan)  # highest value seen: the "empty" level of a down-bound series
        # dip gate: deepest used share since the last recovery; deepest recovered one and when (event s)
        self._dip_now = np.full(64, np.nan)
        self._dip_seen = np.full(64, np.nan)
        self._dip_at = np.full(64, np.nan)
        # rise test: since when the fit heads to the bound; how long it had when the excursion's deepest
        # point was set; the longest such rise of a recovered excursion and when it recovered (event s)
        self._rise_from = np.full(64, np.nan)
        self._rise_now = np.full(64, np.nan)
        self._rise_seen = np.full(64, np.nan)
        self._rise_at = np.full(64, np.nan)
        # approach test: the shortest ETA of the excursion in progress (since the last recovery); the
        # shortest of an excursion recovered from and when it recovered (event s)
        self._eta_now = np.full(64, np.nan)
        self._eta_seen = np.full(64, np.nan)
        self._eta_at = np.full(64, np.nan)
        # last Forecast emitted per row: state, then ETA, low, high as humanized (NaN: not heading)
        self._shown = _unshown(64)
        self.skipped = 0  # samples not learned: non-finite, duplicate or out of order

    # ------------------------------------------------------------------ series

    def __len__(self) -> int:
        return len(self._labels) - len(self._free)

    @property
    def nbytes_per_series(self) -> int:
        """Numeric state per forecast series: trend, warning, bound, direction, horizon, last value,
        peak value, change flag, last forecast shown, dip gate."""
        return STATE_BYTES + self.warnings.nbytes_per_series + 5 * 8 + 1 + 4 * 8 + len(DIP_FIELDS) * 8

    def _row_of(self, key: bytes, labels: Labels | None) -> int:
        row = self._keys.get(key)
        if row is not None:
            return row
        labels = labels if labels is not None else self.labels_of(key)
        spec = next((sp for sp in self.config.specs if sp.matches(labels)), None)
        if spec is None:
            self._keys[key] = -1
            return -1
        if self._free:  # a retired series' row, already reset
            row = self._free.pop()
            self._labels[row], self._specs[row] = labels, spec
        else:
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
            for name in DIP_FIELDS:
                setattr(self, name, np.concatenate([getattr(self, name), np.full(extra, np.nan)]))
            self._shown = np.concatenate([self._shown, _unshown(extra)])
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
        known = list(map(self._keys.get, series))  # every series known by its key bytes: one dict lookup each
        if None not in known:
            return np.array(known, dtype=np.int64), list(map(self._bound_keys.get, series))
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

    def share_labels(self, share: Callable[[Labels], Labels]) -> None:
        """Rebuild the held label sets with ``share`` (a store's shared pairs), after a restore."""
        self._labels = [share(labels) if labels else labels for labels in self._labels]

    def knows(self, key: bytes) -> bool:
        """Whether a series key has been seen (and not retired since)."""
        return key in self._keys

    def retire(self, keys: Sequence[bytes], t_ms: int) -> list[EarlyWarning]:
        """Forget series that went stale, freeing their rows for reuse.

        A warning still pending or firing does not vanish: it goes inactive at
        ``t_ms`` (a firing one resolves), so the alert path sees it end.

        >>> engine = ForecastEngine()
        >>> sat = (("__name__", "pool_saturation"),)
        >>> events = engine.ingest([sat], [0] * 60, [15_000 * i for i in range(60)], [0.5 + 0.01 * i for i in range(60)])
        >>> engine.state(sat)
        'firing'
        >>> [(e.previous, e.state) for e in engine.retire([canonical_bytes(sat)], t_ms=1_000_000)]
        [('firing', 'inactive')]
        >>> len(engine), engine.state(sat)
        (0, 'inactive')
        """
        found = [self._keys.pop(key, -1) for key in keys]
        rows = np.asarray([r for r in found if r >= 0], dtype=np.int64)
        if rows.shape[0] == 0:
            return []
        open_rows = rows[self.warnings.state[rows] != INACTIVE]
        nan = np.full(open_rows.shape[0], np.nan)
        stamps = np.full(open_rows.shape[0], t_ms, dtype=np.int64)
        events = [self._event(int(r), int(self.warnings.state[r]), INACTIVE, i, stamps, nan, nan, nan)
                  for i, r in enumerate(open_rows.tolist())]
        for r in rows.tolist():
            paired = self._specs[r].bound_labels(self._labels[r])
            if paired is not None:
                key = canonical_bytes(paired)
                bounded = [b for b in self._bound_keys.get(key, []) if b != r]
                if bounded:
                    self._bound_keys[key] = bounded
                else:
                    self._bound_keys.pop(key, None)
            self._labels[r] = ()
        self.trend.reset(rows)
        self.warnings.reset(rows)
        self._sign[rows], self._bound[rows], self._horizon[rows] = 0.0, np.nan, 0.0
        self._last_x[rows], self._peak[rows] = np.nan, np.nan
        for name in DIP_FIELDS:
            getattr(self, name)[rows] = np.nan
        self._free += rows[::-1].tolist()
        return events

    # ------------------------------------------------------------------ stream

    def ingest_batch(self, batch, forecasts: list[Forecast] | None = None) -> list[EarlyWarning]:
        """:meth:`ingest` on a :class:`~detector.wire.batch.SampleBatch`."""
        return self.ingest(batch.series_keys, batch.series_index, batch.timestamps, batch.values, forecasts)

    def ingest(self, series: Sequence[Labels | bytes], series_index: Sequence[int] | np.ndarray,
               t_ms: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray,
               forecasts: list[Forecast] | None = None) -> list[EarlyWarning]:
        """Learn a batch and evaluate the series it touched; returns the warnings' state changes.

        Events come in event-time order within each series (rounds of one sample per series).
        ``forecasts``, if given, receives the :class:`Forecast` of every evaluation whose
        estimate changed (at most one per series per evaluation slot).
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
            return self._round(rows, t_ms, values, forecasts)
        events: list[EarlyWarning] = []
        for r in range(top + 1):
            pick = np.flatnonzero(ranks == r)
            events += self._round(rows[pick], t_ms[pick], values[pick], forecasts)
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

    def _round(self, rows: np.ndarray, t_ms: np.ndarray, x: np.ndarray,
               forecasts: list[Forecast] | None = None) -> list[EarlyWarning]:
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
        fit = self.trend.fit(rows)  # one fit serves every estimate of this evaluation
        ready = fit.ready
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
            fit = fit.take(due)
        if rows.shape[0] == 0:
            return []
        self.trend.forgot[rows] = 0
        eta, low, high = self.trend.time_to_bound_many(rows, self._bound[rows], self._sign[rows], fit=fit)
        judged = low if self.config.settings.warn_on == "eta_low" else eta
        if restart is not None and restart.any():
            judged = np.where(restart, np.nan, judged)
        near = self._near(rows, fit)
        allowed = None
        if st.min_used > 0 or st.dip_memory_s > 0:
            used = self._used(rows, fit.level)
            allowed = used >= st.min_used
            if st.dip_memory_s > 0:
                allowed &= self._beyond_dips(rows, t_s, used, eta)
        changed, prev, new = self.warnings.step(rows, t_s, judged, self._horizon[rows], near, allowed)
        if forecasts is not None:
            forecasts += self._forecasts(rows, t_ms, eta, low, high)
        if changed.shape[0] == 0:
            return []
        where = {int(r): i for i, r in enumerate(rows)}
        events = [self._event(int(r), int(p), int(n), where[int(r)], t_ms, eta, low, high)
                  for r, p, n in zip(changed, prev, new)]
        ended = changed[new == INACTIVE]
        if ended.shape[0]:
            self.warnings.clear_times(ended)
        return events

    def _beyond_dips(self, rows: np.ndarray, t_s: np.ndarray, used: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Whether each row uses more headroom than the deepest excursion it recovered from lately,
        by ``dip_margin``, or (``rise_margin_s`` set) has headed to its bound for longer than the longest
        rise of an excursion it recovered from lately, by ``rise_margin_s``, or (``approach_margin`` set)
        is projected to reach it sooner than in any such excursion (see :meth:`_sooner`); and learn this
        evaluation into the rows' dip memory."""
        st = self.config.settings
        now, seen, at = self._dip_now[rows], self._dip_seen[rows], self._dip_at[rows]
        with np.errstate(invalid="ignore"):
            recovered = used <= now - st.dip_recovery
            fresh = ~(t_s - at <= st.dip_memory_s)  # NaN (none yet) counts as expired
            keep = recovered & (fresh | ~(seen > now))  # a deeper recovered dip replaces the remembered one
            seen = np.where(keep, now, np.where(fresh, np.nan, seen))
            at = np.where(keep, t_s, np.where(fresh, np.nan, at))
            deeper = ~(used <= now)  # a new deepest point of the current excursion (or the first)
            now = np.where(recovered, used, np.fmax(now, used))
            if st.dip_rest_margin is None:
                beyond = ~(used < seen + st.dip_margin)  # NaN (nothing remembered) does not block
            else:  # a share of what the deepest recovered excursion left
                beyond = ~(used < seen + st.dip_rest_margin * np.maximum(1.0 - seen, 0.0))
        self._dip_now[rows], self._dip_seen[rows], self._dip_at[rows] = now, seen, at
        if st.rise_margin_s is not None or st.approach_margin is not None:
            longer = self._rise_excess(rows, t_s, recovered, deeper, eta)
            if st.rise_margin_s is not None:
                beyond |= longer > st.rise_margin_s
            if st.approach_margin is not None:  # two pieces of evidence together: as long a rise, and sooner
                beyond |= self._sooner(rows, t_s, recovered, eta) & (longer > 0)
        return beyond

    def _sooner(self, rows: np.ndarray, t_s: np.ndarray, recovered: np.ndarray, eta: np.ndarray) -> np.ndarray:
        """Whether each row's ETA, times ``1 + approach_margin``, is shorter than the shortest ETA of an
        excursion it recovered from within ``dip_memory_s``; and learn the excursions' shortest ETAs.

        An excursion's shortest ETA is the least its fit gave between two recoveries (``dip_recovery``;
        no ETA, not heading to the bound, does not count); it is remembered when the excursion
        recovers, the shortest in memory kept, as the depth test keeps the deepest.
        """
        st = self.config.settings
        now, shortest, at = self._eta_now[rows], self._eta_seen[rows], self._eta_at[rows]
        with np.errstate(invalid="ignore"):
            fresh = ~(t_s - at <= st.dip_memory_s)  # NaN (none yet) counts as expired
            keep = recovered & (now == now) & (fresh | ~(shortest <= now))  # a shorter one replaces the one kept
            shortest = np.where(keep, now, np.where(fresh, np.nan, shortest))
            at = np.where(keep, t_s, np.where(fresh, np.nan, at))
            now = np.where(recovered, eta, np.fmin(now, eta))
            sooner = eta * (1.0 + st.approach_margin) < shortest  # NaN (nothing remembered) gives no pass here
        self._eta_now[rows], self._eta_seen[rows], self._eta_at[rows] = now, shortest, at
        return sooner

    def _rise_excess(self, rows: np.ndarray, t_s: np.ndarray, recovered: np.ndarray, deeper: np.ndarray,
                     eta: np.ndarray) -> np.ndarray:
        """How much longer (s) each row's fit has headed to the bound than the longest rise of an
        excursion it recovered from within ``dip_memory_s`` (NaN: none remembered); and learn the rises.

        A rise is the time since the fit last did not head to the bound (no ETA within the
        forecaster's maximum horizon: flat, turned, or too slow to matter). The fit's ten-minute
        discount averages out the calm few-minute wobbles, so a steady ramp is one long rise while a
        burst's rise ends where it tops out. An excursion's rise is the one in
        progress when it set its deepest point; it is remembered when the excursion recovers
        (``dip_recovery``), the longest in memory kept.
        """
        st = self.config.settings
        start, rise_now = self._rise_from[rows], self._rise_now[rows]
        longest, at = self._rise_seen[rows], self._rise_at[rows]
        with np.errstate(invalid="ignore"):
            heading = np.isfinite(eta)
            interval = self.warnings.eval_interval_s
            if interval > 0:  # a gap in the evaluations longer than the fit's discount: a rise starts afresh
                last = (self.warnings.slot[rows] + 1.0) * interval
                heading &= t_s - last <= st.tau_s
            start = np.where(heading & (start == start), start, t_s)  # NaN start: the rise begins now
            rise = t_s - start
            fresh = ~(t_s - at <= st.dip_memory_s)
            keep = recovered & (fresh | ~(longest >= rise_now))  # a longer recovered rise replaces the one kept
            longest = np.where(keep, rise_now, np.where(fresh, np.nan, longest))
            at = np.where(keep, t_s, np.where(fresh, np.nan, at))
            rise_now = np.where(recovered | deeper, rise, rise_now)
        self._rise_from[rows], self._rise_now[rows] = start, rise_now
        self._rise_seen[rows], self._rise_at[rows] = longest, at
        return rise - longest  # NaN (nothing remembered) passes no comparison

    def used(self, labels: Labels) -> float | None:
        """Share of its headroom a forecast series has used (see :meth:`_used`); None if unknown."""
        row = self._keys.get(canonical_bytes(labels), -1)
        if row < 0 or not np.isfinite(self._bound[row]) or not self.trend.ready_many(np.array([row]))[0]:
            return None
        return float(self._used(np.array([row]))[0])

    def _used(self, rows: np.ndarray, level: np.ndarray | None = None) -> np.ndarray:
        """Share of the headroom used, by the fitted level now: 0 empty, 1 at the bound.

        An up-bound series is empty at 0 (a queue, a channel): ``level / bound``. A
        down-bound series (permits available, free bytes) is empty at the highest
        value it has shown, its capacity as far as the stream tells:
        ``(peak - level) / (peak - bound)``. Where that is undefined (a bound at or
        below 0 for an up series, a series that never moved for a down one) it is
        1, so the gate never blocks for lack of a scale.
        """
        if level is None:
            level, _ = self.trend.level_slope(rows)
        bound, sign = self._bound[rows], self._sign[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            up = level / bound
            peak = self._peak[rows]
            down = (peak - level) / (peak - bound)
            used = np.where(sign > 0, np.where(bound > 0, up, 1.0), np.where(peak > bound, down, 1.0))
        return np.where(np.isfinite(used), used, 1.0)

    def _near(self, rows: np.ndarray, fit) -> np.ndarray | None:
        """Firing rows whose series sits at its bound, within its noise (they do not resolve);
        ``fit`` is the rows' :meth:`TrendBank.fit`."""
        firing = self.warnings.state[rows] == FIRING
        if not firing.any():
            return None
        near = np.zeros(rows.shape[0], dtype=bool)
        at, fit = rows[firing], fit.take(firing)
        with np.errstate(invalid="ignore"):
            near[firing] = self.trend.distance_many(at, self._bound[at], self._sign[at], fit=fit) <= fit.k
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

    def _forecasts(self, rows: np.ndarray, t_ms: np.ndarray, eta: np.ndarray, low: np.ndarray,
                   high: np.ndarray) -> list[Forecast]:
        """The evaluated rows whose estimate, as people would read it, changed since the last one shown."""
        heading = np.isfinite(eta)
        shown = np.empty((rows.shape[0], 4))
        shown[:, 0] = self.warnings.state[rows]
        shown[:, 1:] = round_durations(np.stack([eta, np.where(heading, low, np.nan), np.where(heading, high, np.nan)]),
                                       _SHOWN_ROUNDING).T
        before = self._shown[rows]
        same = ((shown == before) | (np.isnan(shown) & np.isnan(before))).all(axis=1)
        if same.all():
            return []
        at = np.flatnonzero(~same)
        self._shown[rows[at]] = shown[at]
        out = []
        for i in at.tolist():
            row = int(rows[i])
            spec, labels = self._specs[row], self._labels[row]
            out.append(Forecast(
                labels=labels, t_ms=int(t_ms[i]), eta_s=float(eta[i]),
                eta_low_s=float(low[i]) if heading[i] else float("nan"),
                eta_high_s=float(high[i]) if heading[i] else float("nan"),
                bound=float(self._bound[row]), bound_name=spec.bound_name(labels), direction=spec.direction,
                value=float(self._last_x[row]), state=STATES[int(self.warnings.state[row])],
            ))
        return out

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

    def warned(self) -> list[tuple[Labels, int | None]]:
        """Series with a pending or firing warning, each with the start (ms) of the evaluation
        slot it was last evaluated in (None when every sample is evaluated: no slots)."""
        rows = np.flatnonzero(self.warnings.state[: len(self._labels)] != INACTIVE)
        step_ms = self.warnings.eval_interval_s * 1000
        return [(self._labels[r], int(self.warnings.slot[r] * step_ms) if step_ms > 0 else None) for r in rows.tolist()]

    def state(self, labels: Labels) -> str:
        """The warning state of a series (``inactive`` for unknown series)."""
        row = self._keys.get(canonical_bytes(labels), -1)
        return STATES[int(self.warnings.state[row])] if row >= 0 else "inactive"

    # ------------------------------------------------------------------ snapshots

    # Snapshots (detector.snapshot) carry every other attribute. The config comes
    # from the constructor; each row's spec is found again from its labels.
    SNAPSHOT_SKIP = frozenset({"config", "_specs", "labels_of"})

    def restore_state(self, state: dict) -> None:
        """Load a snapshot's state (see :mod:`detector.snapshot`), matching each row's spec anew.

        Snapshots written before the dip gate lack its columns: they load with none
        remembered (every row's gate starts afresh, as for a new series).
        """
        from detector.snapshot import SnapshotError, apply_attributes

        sign = state.get("_sign")
        if isinstance(sign, np.ndarray) and sign.ndim == 1:
            for name in DIP_FIELDS:
                state.setdefault(name, np.full(sign.shape[0], np.nan))
        apply_attributes(self, state)
        specs = []
        for labels in self._labels:
            spec = None if labels is None else next((sp for sp in self.config.specs if sp.matches(labels)), None)
            if labels is not None and spec is None:
                raise SnapshotError(f"forecast series {series_text(labels)} matches no spec of the current configuration")
            specs.append(spec)
        self._specs = specs
