"""Everything one partition runs on its samples: rules, anomaly scores, forecasts.

Anomaly scores become a derived series, ``headroom_anomaly_score`` with the
scored series' labels and ``metric`` set to its name, appended to the rule
engine's store at the sample's time when some rule may read it (the ``anomaly``
pack, a user's rule on scores; otherwise not stored); so an anomaly becomes an alert through
the same rules, lifecycle and delivery as everything else (the ``anomaly``
rule pack), and a user can write rules on scores. ``headroom_anomaly_deviation``
(same labels) is each scored sample's signed relative deviation from the level
the detector expected it at, stored likewise only when a rule may read it: a
rule's direction and minimum size. Derived series are never scored or forecast
themselves: nothing loops back.

Saturation forecasts raise early warnings with their own hysteresis
(:mod:`detector.forecast`) and join the same stream of alert transitions; an
:class:`~detector.output.alert_book.AlertBook` sends them on the rules' send and
resend schedule, so :attr:`PartitionOutput.notifications` holds both. The
estimates themselves come out as :class:`~detector.forecast.engine.Forecast`
events when they change, and the latest score of every scored series as
:attr:`PartitionOutput.latest_scores` (by the scored series' own key), for gauges.

Stale series are retired by a sweep that runs at most once per
``retire_every_ms`` of the partition's watermark (event time): a series whose
newest sample is a staleness marker, or older than the lookback, loses its
anomaly and forecast state (a pending or firing early warning goes inactive);
its samples stay in the rule engine's store while a rule's range could still
read them, then its row is freed for reuse (:meth:`RuleEngine.free_expired`).

>>> from detector.wire.batch import SampleBatch
>>> from detector.rules import load_rule_files
>>> detectors = PartitionDetectors(load_rule_files(["anomaly"]))
>>> up = (("__name__", "up"), ("job", "api"))
>>> out = detectors.ingest(SampleBatch.from_series([(up, [(t * 15_000, 1.0) for t in range(10)])]))
>>> out.transitions, len(out.scores), out.forecasts, out.notifications
([], 0, [], [])
>>> sorted(out.latest_scores) == [canonical_bytes(up)]
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

from detector.output.alert_book import AlertBook
from detector.output.alerts import AlertNotification, AlertTransition
from detector.anomaly.catalog import CatalogScorer, ModelCatalog
from detector.wire.batch import SampleBatch
from detector.forecast.engine import Forecast, ForecastEngine, warning_alert_labels
from detector.forecast.spec import ForecastConfig
from detector.labels import LANE_CLOCK, METRIC_NAME, Labels, canonical_bytes, labels_from_canonical
from detector.wire.metadata import MetricTypes
from detector.rules.alerting import Alert, fingerprint
from detector.rules.engine import EngineOutput, EngineStats, RuleEngine
from detector.rules.group import RuleGroup
from detector.rules.reads import may_read_metric
from detector.snapshot import SnapshotError, apply_attributes, capture, capture_attributes, decode, encode, is_component
from detector.store import EMPTY, is_stale

SCORE_METRIC = "headroom_anomaly_score"
# Each scored sample's signed relative deviation from the level the detector expected it at: what a rule needs
# for a direction (> 0: above its usual level) or a minimum deviation (> 0.2: at least 20% above).
DEVIATION_METRIC = "headroom_anomaly_deviation"
DEFAULT_SCORE_THRESHOLD = 0.301
"""Frozen on the NAB development split (bench/nab_thresholds.json)."""
# Samples the forecaster may hold back before it runs anyway (see PartitionDetectors.ingest).
FORECAST_PENDING_MAX = 65_536

_UNSEEN = object()
_NOT_SCORED = {SCORE_METRIC, DEVIATION_METRIC, "ALERTS", "ALERTS_FOR_STATE", LANE_CLOCK[0][1]}


@dataclass(frozen=True, slots=True)
class ScoreEvent:
    """A score at or above the threshold, for the scores topic. ``deviation``: the sample's signed relative
    deviation from its expected level (as ``headroom_anomaly_deviation``), None where the model has none or the
    expected level was 0 (JSON has no infinities).

    >>> ScoreEvent((("__name__", "up"),), 60_000, 0.42, 0.5).to_dict()
    {'kind': 'score', 'labels': {'__name__': 'up'}, 't': 60000, 'score': 0.42, 'deviation': 0.5}
    """

    labels: Labels
    t_ms: int
    score: float
    deviation: float | None = None

    def to_dict(self) -> dict:
        return {"kind": "score", "labels": dict(self.labels), "t": self.t_ms, "score": self.score,
                "deviation": self.deviation}


@dataclass
class PartitionOutput:
    """What one batch (or one watermark advance) produced.

    ``transitions``/``notifications``: the rule engine's plus the early warnings';
    ``scores``: scores at or above the threshold; ``forecasts``: estimates that changed;
    ``latest_scores``: the newest score of each series scored in the batch, by the
    scored series' canonical key (not its derived series': that one is built only
    when the store holds it).
    """

    engine: EngineOutput
    transitions: list[AlertTransition] = field(default_factory=list)
    scores: list[ScoreEvent] = field(default_factory=list)
    forecasts: list[Forecast] = field(default_factory=list)
    notifications: list[AlertNotification] = field(default_factory=list)
    latest_scores: dict[bytes, float] = field(default_factory=dict)
    retired: int = 0  # series whose anomaly/forecast state was retired by this call's sweep
    retired_keys: list[bytes] = field(default_factory=list)  # their keys
    freed: int = 0  # series whose samples left the rule engine's store in this call's sweep


class PartitionDetectors:
    """One partition's rule engine, anomaly scorer and forecaster, fed the same batches.

    ``models`` picks the anomaly model per series selector; without it every
    series gets ``model``.
    """

    def __init__(
        self,
        groups: list[RuleGroup],
        *,
        engine_options: dict | None = None,
        model: str = "default",
        models: ModelCatalog | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        scores: bool = True,
        forecasts: bool = True,
        forecast_config: ForecastConfig | None = None,
        metric_types: MetricTypes | None = None,
        retire_every_ms: int | None = 60_000,
    ) -> None:
        self.rules = RuleEngine(groups, **(engine_options or {}))
        self.scorer = CatalogScorer(models or ModelCatalog(default=model), metric_types=metric_types) if scores else None
        self.forecaster = (ForecastEngine(forecast_config, labels_of=self.rules.store.decode_labels)
                           if forecasts else None)
        eval_ms = int(self.forecaster.config.settings.eval_interval_s * 1000) if self.forecaster is not None else 0
        self.warning_alerts = AlertBook(eval_ms, self.rules.resend_delay_ms)
        self.score_threshold = score_threshold
        self._scored: dict[bytes, bytes | None] = {}  # series key -> its score series key, None if not scored
        # Score series go into the rule engine's store only if some rule may read them: with
        # none (the worker's default rule set), storing them would double the store's series.
        self._store_scores = may_read_metric(groups, SCORE_METRIC)
        # Deviation series likewise, only if some rule may read them.
        self._store_deviations = may_read_metric(groups, DEVIATION_METRIC)
        self._deviation_keys: dict[bytes, bytes] = {}  # series key -> its deviation series key
        self.retire_every_ms = retire_every_ms  # None: never retire stale series
        self._next_sweep = EMPTY
        # Batches the forecaster has not seen yet: it runs when the rules' watermark moves (see ingest).
        self._forecast_pending: list[SampleBatch] = []
        self._ticks = bool(groups)  # without rule groups no watermark moves: the forecaster runs every batch
        self.retired_series = 0  # totals since start, for the worker's metrics
        self.freed_series = 0

    @property
    def store(self):  # noqa: ANN201 - the rule engine's SeriesStore
        return self.rules.store

    @property
    def newest(self) -> int:
        """Timestamp (ms) of the newest sample ingested; ``EMPTY`` before the first."""
        return self.rules.newest

    @property
    def watermark(self) -> int:
        """Event time (ms) the rules have been evaluated up to; ``EMPTY`` before the first evaluation."""
        return self.rules.watermark

    def complete_until(self, now_ms: int | None = None) -> int:
        """The instant this partition's samples are complete up to (:mod:`detector.completeness`)."""
        return self.rules.complete_until(now_ms)

    @property
    def pending(self) -> bool:
        """Whether rule evaluations are still due: call :meth:`catch_up` (see :class:`RuleEngine`)."""
        return self.rules.pending

    def catch_up(self) -> PartitionOutput:
        """The next step of the evaluations still due, at most ``max_evaluations_per_step``."""
        return self.advance_to(self.rules.watermark)

    def ingest(self, batch: SampleBatch, arrival_ms: int | None = None) -> PartitionOutput:
        """Score, forecast and evaluate one batch; ``arrival_ms`` is the caller's clock
        (see :meth:`detector.rules.engine.RuleEngine.ingest`).

        The forecaster runs when the rules' watermark moves (the partition's samples are complete
        up to a newer instant, so due rule ticks are evaluated), over every batch since it last ran:
        its cost is per evaluation round over the few bounded series a message holds, so fifty
        messages of one scrape would pay it fifty times. Early warnings then come out with the
        alerts of the same instant, in the same event time.
        """
        # New series beyond the store's limit are left out before scores and forecasts
        # keep state for them; the store applies its other limits as it appends.
        batch, refused = self.store.admit(batch)
        derived, latest, scores = self._score(batch)
        # Score and deviation series are not held to the limit: there is one of each per admitted series at most.
        stored = SampleBatch.concat([batch, derived]) if derived is not None else batch  # None unless stored
        before = self.rules.watermark
        out = self.rules.ingest(stored, arrival_ms, admitted=True)
        out.refused.add(refused)
        result = PartitionOutput(out, list(out.transitions), scores, [], list(out.notifications), latest)
        if self.forecaster is not None and len(batch):
            self._forecast_pending.append(batch)
            if (not self._ticks or self.rules.watermark != before
                    or self._forecast_pending_samples >= FORECAST_PENDING_MAX):
                self._run_forecasts(result)
        self._sweep(result)
        return result

    @property
    def _forecast_pending_samples(self) -> int:
        return sum(map(len, self._forecast_pending))

    def flush(self) -> PartitionOutput:
        """Forecast what waits for the next tick now (the end of a replay: no next tick comes)."""
        result = PartitionOutput(EngineOutput())
        if self.forecaster is not None:
            self._run_forecasts(result)
        return result

    def _run_forecasts(self, result: PartitionOutput) -> None:
        """Forecast every pending batch at once, adding warnings, estimates and notifications to ``result``."""
        if not self._forecast_pending:
            return
        batch = SampleBatch.concat(self._forecast_pending)
        self._forecast_pending = []
        forecasts: list[Forecast] = []
        warned = [w.to_alert() for w in self.forecaster.ingest_batch(batch, forecasts)]
        result.forecasts += forecasts
        result.transitions += warned
        result.notifications += self._warning_notifications(warned, forecasts, int(batch.timestamps.max()))

    def reclassify(self) -> int:
        """Apply newly learned metric types to the series already scored; returns how many changed."""
        return self.scorer.reclassify() if self.scorer is not None else 0

    def advance_to(self, watermark_ms: int) -> PartitionOutput:
        # Early warnings are not re-sent here: without samples there is no forecast to
        # stand behind, so a warning whose series went quiet expires in Alertmanager.
        before = self.rules.watermark
        out = self.rules.advance_to(watermark_ms)
        result = PartitionOutput(out, list(out.transitions), notifications=list(out.notifications))
        if self.forecaster is not None and self.rules.watermark != before:
            self._run_forecasts(result)
        self._sweep(result)
        return result

    def _warning_notifications(self, warned: list[AlertTransition], forecasts: list[Forecast],
                               t_ms: int) -> list[AlertNotification]:
        """Early warnings due to be sent at ``t_ms``, a resend carrying the newest estimate's words."""
        self.warning_alerts.apply(warned)
        for forecast in forecasts:
            update = forecast.alert_update()
            if update is not None:
                self.warning_alerts.refresh(*update)
        # A warning stays firing while its series is silent (a forecast needs samples); like an
        # alert whose series left the lookback, it is no longer re-sent and expires downstream.
        quiet = {fingerprint(warning_alert_labels(labels)) for labels, seen in self.forecaster.warned()
                 if seen is not None and t_ms - seen > self.rules.lookback_ms}
        return self.warning_alerts.notifications(t_ms, quiet)

    def _sweep(self, result: PartitionOutput) -> None:
        """Retire stale series, at most once per ``retire_every_ms`` of watermark."""
        now = self.rules.watermark
        if self.retire_every_ms is None or now == EMPTY or now < self._next_sweep:
            return
        self._next_sweep = now + self.retire_every_ms
        freed = self.rules.free_expired()
        rows = self.store.live_rows()
        newest, stale = self.store.newest(rows)
        gone = freed + [self.store.key(r) for r in rows[stale | (newest < now - self.rules.lookback_ms)].tolist()]
        fc = self.forecaster
        known = [k for k in gone if k in self._scored or (fc is not None and fc.knows(k))]
        if known:
            if fc is not None:
                # A warning on a retired series resolves, and Alertmanager hears it like any other.
                resolved = [w.to_alert() for w in fc.retire(known, now)]
                self.warning_alerts.apply(resolved)
                result.transitions += resolved
                result.notifications += self.warning_alerts.notifications(now)
            if self.scorer is not None:
                self.scorer.retire(known)
            result.retired_keys = known
            for key in known:
                self._scored.pop(key, None)
                self._deviation_keys.pop(key, None)
        result.retired, result.freed = len(known), len(freed)
        self.retired_series += len(known)
        self.freed_series += len(freed)

    def _score(self, batch: SampleBatch) -> tuple[SampleBatch | None, dict[bytes, float], list[ScoreEvent]]:
        """Scores of the batch's samples: the derived series' samples (None unless the store
        holds them), the newest score per scored series key, the events at or above the threshold."""
        if self.scorer is None or len(batch) == 0:
            return None, {}, []
        score_keys = list(map(self._scored.get, batch.series_keys, repeat(_UNSEEN)))
        if _UNSEEN in score_keys:
            score_keys = [self._score_key(k) for k in batch.series_keys]
        scored = np.array([k is not None for k in score_keys], dtype=bool)[batch.series_index]
        if not scored.any():
            return None, {}, []
        index = batch.series_index[scored]
        sub = SampleBatch(batch.series_keys, index, batch.timestamps[scored], batch.values[scored])
        deviation = np.empty(len(sub))  # for the events; stored as a series only if a rule reads it
        values = self.scorer.score_batch(sub, deviation)
        used, local = np.unique(index, return_inverse=True)
        used, local = used.tolist(), local.astype(np.uint32)
        keys = batch.series_keys
        latest = _latest(SampleBatch([keys[i] for i in used], local, sub.timestamps, values))
        parts = []
        if self._store_scores:
            parts.append(SampleBatch([score_keys[i] for i in used], local, sub.timestamps, values))
        high = np.flatnonzero(values >= self.score_threshold)
        events = [
            ScoreEvent(labels_from_canonical(keys[int(index[i])]), int(sub.timestamps[i]), float(values[i]),
                       float(deviation[i]) if np.isfinite(deviation[i]) else None)
            for i in high.tolist()
        ]
        if self._store_deviations:
            parts += self._deviation_batch(sub, used, local, deviation)
        derived = SampleBatch.concat(parts) if parts else None
        return derived, latest, events

    def _deviation_batch(self, sub: SampleBatch, used: list[int], local: np.ndarray,
                         deviation: np.ndarray) -> list[SampleBatch]:
        """The deviation series' samples of a scored batch (``used``/``local`` as in :meth:`_score`): a staleness
        marker where the scored sample is one, none where the model has no expected level (NaN)."""
        stale = is_stale(sub.values)
        deviation[stale] = sub.values[stale]
        kept = np.flatnonzero(stale | ~np.isnan(deviation))
        if not len(kept):
            return []
        series, at = np.unique(local[kept], return_inverse=True)
        keys = sub.series_keys
        dev_keys = [self._deviation_key(keys[used[j]]) for j in series.tolist()]
        return [SampleBatch(dev_keys, at.astype(np.uint32), sub.timestamps[kept], deviation[kept])]

    def _deviation_key(self, key: bytes) -> bytes:
        found = self._deviation_keys.get(key)
        if found is None:
            found = self._deviation_keys[key] = score_series_key(labels_from_canonical(key), DEVIATION_METRIC)
        return found

    def _score_key(self, key: bytes) -> bytes | None:
        """The key of a series' derived score series; ``b""`` if it is scored but the store does not
        hold score series (its key would only take memory); None if it is not scored."""
        if key not in self._scored:
            labels = labels_from_canonical(key)
            name = dict(labels).get(METRIC_NAME, "")
            if name in _NOT_SCORED:
                self._scored[key] = None
            elif not self._store_scores:
                self._scored[key] = b""
            else:
                self._scored[key] = score_series_key(labels)
        return self._scored[key]

    # ------------------------------------------------------------------ snapshots

    # Snapshots carry the rule engine, scorer and forecaster (detector.snapshot);
    # the threshold is configuration and the score keys a cache.
    SNAPSHOT_SKIP = frozenset({"score_threshold", "_scored", "_store_scores", "_store_deviations", "_deviation_keys",
                               "retire_every_ms", "fresh_components",
                               "_forecast_pending", "_ticks"})

    def snapshot(self) -> bytes:
        """Everything this partition has learned, as bytes for :meth:`restore`.

        >>> from detector.wire.batch import SampleBatch
        >>> from detector.rules import load_rule_files
        >>> groups = load_rule_files(["anomaly"])
        >>> live = PartitionDetectors(groups)
        >>> x = (("__name__", "x"), ("job", "api"))
        >>> _ = live.ingest(SampleBatch.from_series([(x, [(t * 15_000, float(t % 7)) for t in range(150)])]))
        >>> back = PartitionDetectors.restore(live.snapshot(), groups)
        >>> nxt = SampleBatch.from_series([(x, [(150 * 15_000, 40.0)])])
        >>> back.ingest(nxt).scores == live.ingest(nxt).scores   # past warm-up, the same model
        True
        """
        state = capture_attributes(self)
        state["_config"] = self._config_identity()
        if self._forecast_pending:  # samples the forecaster has not seen yet (optional: older snapshots lack it)
            state["_forecast_pending"] = SampleBatch.concat(self._forecast_pending).encode()
        return encode(state, SNAPSHOT_RECORDS)

    @classmethod
    def restore(cls, data: bytes, groups: list[RuleGroup], **options) -> PartitionDetectors:
        """Detectors built from the current ``groups`` and ``options`` (as for the constructor),
        carrying the state of a :meth:`snapshot`.

        Raises :class:`~detector.snapshot.SnapshotError` if the bytes are not a
        snapshot this code can load. Rule changes are fine: see
        :meth:`RuleEngine.restore_state`. A snapshot taken with other model or
        forecast settings (an upgrade that changed a default) still restores the
        rules' state, so no ``for`` clock or firing alert is lost; the scorer or
        the forecaster (with its early warnings) whose settings changed starts
        afresh, and :attr:`fresh_components` names it.
        """
        detectors = cls(groups, **options)
        state = decode(data, SNAPSHOT_RECORDS)
        if not isinstance(state, dict) or "_config" not in state or not isinstance(state["_config"], str):
            raise SnapshotError("corrupt snapshot: not the state of a partition")
        taken = _identities(state.pop("_config"))
        pending = state.pop("_forecast_pending", None)
        now = detectors._config_parts()
        if taken is None:
            raise SnapshotError("corrupt snapshot: its detector settings cannot be read")
        for part, attributes in (("scores", ("scorer",)), ("forecasts", ("forecaster", "warning_alerts"))):
            if taken[part] != now[part]:
                # Learned with other settings: this part starts as the constructor built it.
                for name in attributes:
                    current = getattr(detectors, name)
                    state[name] = capture(current) if is_component(current) else current
                detectors.fresh_components += (part,)
        try:
            apply_attributes(detectors, state)
        except SnapshotError:
            raise
        except Exception as exc:  # noqa: BLE001 - state that decodes but does not fit: same as corrupt
            raise SnapshotError(f"snapshot does not fit this code: {type(exc).__name__}: {exc}") from None
        if detectors.forecaster is not None:  # its label sets come back as separate strings, as the store's do
            detectors.forecaster.share_labels(detectors.store.share_labels)
            if isinstance(pending, bytes) and "forecasts" not in detectors.fresh_components:
                try:
                    batch = SampleBatch.decode(pending)
                except Exception as exc:  # noqa: BLE001 - a batch that does not decode: the snapshot is corrupt
                    raise SnapshotError(f"corrupt snapshot: its pending forecast samples: {exc}") from None
                detectors._forecast_pending = [batch]
        return detectors

    fresh_components: tuple[str, ...] = ()
    """After :meth:`restore`: the parts ("scores", "forecasts") that started afresh, their settings changed."""

    def _config_parts(self) -> dict[str, str]:
        """What the learned state depends on besides the rules: model and forecast settings."""
        scorer = "off" if self.scorer is None else self.scorer.identity()
        forecasts = "off"
        if self.forecaster is not None:
            config = self.forecaster.config
            forecasts = f"{config.settings!r} {[spec.describe() for spec in config.specs]}"
        return {"scores": scorer, "forecasts": forecasts}

    def _config_identity(self) -> str:
        """:meth:`_config_parts` as the text a snapshot records (:func:`_identities` reads it back)."""
        parts = self._config_parts()
        return f"scores: {parts['scores']}; forecasts: {parts['forecasts']}"


def _identities(config: str) -> dict[str, str] | None:
    """The scores and forecasts parts of :meth:`PartitionDetectors._config_identity`'s text.

    >>> _identities("scores: default v3; forecasts: off")
    {'scores': 'default v3', 'forecasts': 'off'}
    """
    scores, sep, forecasts = config.partition("; forecasts: ")
    if not sep or not scores.startswith("scores: "):
        return None
    return {"scores": scores[len("scores: "):], "forecasts": forecasts}


SNAPSHOT_RECORDS = {"Alert": Alert, "EngineStats": EngineStats}
"""The dataclasses a partition snapshot may hold (the loader builds nothing else)."""


def score_series_key(labels: Labels, name: str = SCORE_METRIC) -> bytes:
    """The canonical key of a series' derived score series (or, with ``name``, its deviation series):
    its labels, ``__name__`` the derived metric's, ``metric`` the series' name.

    >>> labels_from_canonical(score_series_key((("__name__", "up"), ("job", "api"))))
    (('__name__', 'headroom_anomaly_score'), ('job', 'api'), ('metric', 'up'))
    >>> labels_from_canonical(score_series_key((("__name__", "up"),), DEVIATION_METRIC))
    (('__name__', 'headroom_anomaly_deviation'), ('metric', 'up'))
    """
    out = {k: v for k, v in labels if k != METRIC_NAME}
    out.update({METRIC_NAME: name, "metric": dict(labels).get(METRIC_NAME, "")})
    return canonical_bytes(tuple(sorted(out.items())))


def _latest(batch: SampleBatch) -> dict[bytes, float]:
    """The newest value of each series of a batch whose every key has samples (a derived batch)."""
    keys = batch.series_keys
    if len(batch.series_index) == len(keys):  # one sample per series (the usual scrape): nothing to sort
        return dict(zip(map(keys.__getitem__, batch.series_index.tolist()), batch.values.tolist()))
    order = np.lexsort((batch.timestamps, batch.series_index))
    index = batch.series_index[order]
    last = np.ones(index.shape[0], dtype=bool)
    last[:-1] = index[1:] != index[:-1]
    return {keys[i]: v for i, v in zip(index[last].tolist(), batch.values[order][last].tolist())}
