"""Everything one partition runs on its samples: rules, anomaly scores, forecasts.

Anomaly scores become a derived series, ``headroom_anomaly_score`` with the
scored series' labels and ``metric`` set to its name, appended to the rule
engine's store at the sample's time; so an anomaly becomes an alert through
the same rules, lifecycle and delivery as everything else (the ``anomaly``
rule pack), and a user can write rules on scores. Derived series are never
scored or forecast themselves: nothing loops back.

Saturation forecasts raise early warnings with their own hysteresis
(:mod:`detector.forecast`) and join the same stream of alert transitions.

>>> from detector.batch import SampleBatch
>>> from detector.rules import load_rule_files
>>> detectors = PartitionDetectors(load_rule_files(["anomaly"]))
>>> up = (("__name__", "up"), ("job", "api"))
>>> out = detectors.ingest(SampleBatch.from_series([(up, [(t * 15_000, 1.0) for t in range(10)])]))
>>> out.transitions, len(out.scores)
([], 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.alerts import AlertTransition
from detector.anomaly.scorer import AnomalyScorer
from detector.batch import SampleBatch
from detector.forecast.engine import ForecastEngine
from detector.labels import LANE_CLOCK, METRIC_NAME, Labels, canonical_bytes, labels_from_canonical
from detector.rules.alerting import Alert
from detector.rules.engine import EngineOutput, EngineStats, RuleEngine
from detector.rules.group import RuleGroup
from detector.snapshot import SnapshotError, apply_attributes, capture_attributes, decode, encode

SCORE_METRIC = "headroom_anomaly_score"
DEFAULT_SCORE_THRESHOLD = 0.296
"""Frozen on the NAB development split (bench/nab_thresholds.json)."""

_NOT_SCORED = {SCORE_METRIC, "ALERTS", "ALERTS_FOR_STATE", LANE_CLOCK[0][1]}


@dataclass(frozen=True, slots=True)
class ScoreEvent:
    labels: Labels
    t_ms: int
    score: float

    def to_dict(self) -> dict:
        return {"kind": "score", "labels": dict(self.labels), "t": self.t_ms, "score": self.score}


@dataclass
class PartitionOutput:
    engine: EngineOutput
    transitions: list[AlertTransition] = field(default_factory=list)
    scores: list[ScoreEvent] = field(default_factory=list)


class PartitionDetectors:
    """One partition's rule engine, anomaly scorer and forecaster, fed the same batches."""

    def __init__(
        self,
        groups: list[RuleGroup],
        *,
        engine_options: dict | None = None,
        model: str = "default",
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        scores: bool = True,
        forecasts: bool = True,
    ) -> None:
        self.rules = RuleEngine(groups, **(engine_options or {}))
        self.scorer = AnomalyScorer(model) if scores else None
        self.forecaster = ForecastEngine() if forecasts else None
        self.score_threshold = score_threshold
        self._scored: dict[bytes, bytes | None] = {}  # series key -> its score series key, None if not scored

    @property
    def store(self):  # noqa: ANN201 - the rule engine's SeriesStore
        return self.rules.store

    def ingest(self, batch: SampleBatch) -> PartitionOutput:
        warnings = self.forecaster.ingest_batch(batch) if self.forecaster is not None else []
        derived, scores = self._score(batch)
        out = self.rules.ingest(_concat(batch, derived) if derived is not None else batch)
        result = PartitionOutput(out, list(out.transitions), scores)
        result.transitions += [w.to_alert() for w in warnings]
        return result

    def advance_to(self, watermark_ms: int) -> PartitionOutput:
        out = self.rules.advance_to(watermark_ms)
        return PartitionOutput(out, list(out.transitions))

    def _score(self, batch: SampleBatch) -> tuple[SampleBatch | None, list[ScoreEvent]]:
        if self.scorer is None or len(batch) == 0:
            return None, []
        score_keys = [self._score_key(k) for k in batch.series_keys]
        scored = np.array([k is not None for k in score_keys], dtype=bool)[batch.series_index]
        if not scored.any():
            return None, []
        index = batch.series_index[scored]
        sub = SampleBatch(batch.series_keys, index, batch.timestamps[scored], batch.values[scored])
        values = self.scorer.score_batch(sub)
        used, local = np.unique(index, return_inverse=True)
        derived = SampleBatch([score_keys[i] for i in used.tolist()], local.astype(np.uint32), sub.timestamps, values)
        high = np.flatnonzero(values >= self.score_threshold)
        events = [
            ScoreEvent(labels_from_canonical(batch.series_keys[int(index[i])]), int(sub.timestamps[i]), float(values[i]))
            for i in high.tolist()
        ]
        return derived, events

    def _score_key(self, key: bytes) -> bytes | None:
        if key not in self._scored:
            labels = labels_from_canonical(key)
            name = dict(labels).get(METRIC_NAME, "")
            if name in _NOT_SCORED:
                self._scored[key] = None
            else:
                out = {k: v for k, v in labels if k != METRIC_NAME}
                out.update({METRIC_NAME: SCORE_METRIC, "metric": name})
                self._scored[key] = canonical_bytes(tuple(sorted(out.items())))
        return self._scored[key]

    # ------------------------------------------------------------------ snapshots

    # Snapshots carry the rule engine, scorer and forecaster (detector.snapshot);
    # the threshold is configuration and the score keys a cache.
    SNAPSHOT_SKIP = frozenset({"score_threshold", "_scored"})

    def snapshot(self) -> bytes:
        """Everything this partition has learned, as bytes for :meth:`restore`.

        >>> from detector.batch import SampleBatch
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
        return encode(state, SNAPSHOT_RECORDS)

    @classmethod
    def restore(cls, data: bytes, groups: list[RuleGroup], **options) -> PartitionDetectors:
        """Detectors built from the current ``groups`` and ``options`` (as for the constructor),
        carrying the state of a :meth:`snapshot`.

        Raises :class:`~detector.snapshot.SnapshotError` if the bytes are not a
        snapshot this code can load, or were taken with other model or forecast
        settings. Rule changes are fine: see :meth:`RuleEngine.restore_state`.
        """
        detectors = cls(groups, **options)
        state = decode(data, SNAPSHOT_RECORDS)
        if not isinstance(state, dict) or "_config" not in state:
            raise SnapshotError("corrupt snapshot: not the state of a partition")
        taken_with = state.pop("_config")
        if taken_with != detectors._config_identity():
            raise SnapshotError(f"snapshot taken with other detector settings ({taken_with}), now {detectors._config_identity()}")
        try:
            apply_attributes(detectors, state)
        except SnapshotError:
            raise
        except Exception as exc:  # noqa: BLE001 - state that decodes but does not fit: same as corrupt
            raise SnapshotError(f"snapshot does not fit this code: {type(exc).__name__}: {exc}") from None
        return detectors

    def _config_identity(self) -> str:
        """What the learned state depends on besides the rules: model and forecast settings."""
        scorer = "off" if self.scorer is None else f"{self.scorer.model_name} {getattr(self.scorer.model, 'params', '')!r}"
        forecasts = "off"
        if self.forecaster is not None:
            config = self.forecaster.config
            forecasts = f"{config.settings!r} {[spec.describe() for spec in config.specs]}"
        return f"scores: {scorer}; forecasts: {forecasts}"


SNAPSHOT_RECORDS = {"Alert": Alert, "EngineStats": EngineStats}
"""The dataclasses a partition snapshot may hold (the loader builds nothing else)."""


def _concat(a: SampleBatch, b: SampleBatch) -> SampleBatch:
    offset = np.uint32(len(a.series_keys))
    return SampleBatch(
        a.series_keys + b.series_keys,
        np.concatenate([a.series_index, b.series_index + offset]).astype(np.uint32),
        np.concatenate([a.timestamps, b.timestamps]),
        np.concatenate([a.values, b.values]),
    )
