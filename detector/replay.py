"""Replaying a recorded stream through rules, anomaly scores and forecasts, in event time, without Kafka.

A recording is OpenMetrics text with timestamps (what ``promtool tsdb
create-blocks-from openmetrics`` reads). Its samples are sorted by time and fed
in slices to the same engines the workers run: one per partition, chosen with
the receiver's partitioning, plus the global lane for the groups that need it,
so a replay gives the alerts the pipeline would, at the same event times. It
yields alert state changes (rules, anomalies through the ``anomaly`` pack,
early warnings), the anomaly scores at or above the threshold and the
forecasts whose estimate changed (``"kind": "forecast"``, see
:class:`~detector.forecast.engine.Forecast`). Same input, same output: per
slice, scores, then forecasts, then alerts, each ordered by event time, then
rule and labels.

>>> from detector.rules import AlertingRule, RuleGroup
>>> from detector.promql import compile_expr
>>> text = '''# TYPE up gauge
... up{job="api",instance="a"} 1 0
... up{job="api",instance="a"} 0 15
... up{job="api",instance="a"} 0 30
... # EOF
... '''
>>> rule = AlertingRule("Down", compile_expr("up == 0"), "up == 0")
>>> events = list(Replay([RuleGroup("g", "inline", 15_000, (rule,))]).run(read_openmetrics(text)))
>>> [(e["eval_time"], e["state"]) for e in events]
[(15000, 'firing')]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from detector.anomaly.catalog import ModelCatalog
from detector.forecast.spec import ForecastConfig
from detector.wire.batch import SampleBatch
from detector.labels import DEFAULT_PARTITION_BY, LANE_CLOCK, Labels, canonical_bytes, labels_from_canonical, partition_for
from detector.wire.metadata import MetricTypes
from detector.wire.openmetrics import read_samples
from detector.partition import DEFAULT_SCORE_THRESHOLD, PartitionDetectors, PartitionOutput
from detector.rules.group import RuleGroup
from detector.output.templates import format_labels
from detector.rules.placement import place_groups
from detector.store import Refused


@dataclass
class Recording:
    """All samples of a recording as columns, sorted by time (series in first-seen order)."""

    keys: list[bytes]
    labels: list[Labels]
    series_index: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray
    types: dict[str, str] = field(default_factory=dict)  # metric family -> its ``# TYPE``

    def __len__(self) -> int:
        return len(self.timestamps)


def read_openmetrics(source: str | Iterable[str]) -> Recording:
    """All samples of OpenMetrics text with a timestamp on every sample, sorted by time."""
    lines = source.splitlines() if isinstance(source, str) else source
    ids: dict[Labels, int] = {}
    labels: list[Labels] = []
    index: list[int] = []
    stamps: list[int] = []
    values: list[float] = []
    types: dict[str, str] = {}
    for series, stamp, value in read_samples(lines, types):
        sid = ids.get(series)
        if sid is None:
            sid = ids[series] = len(labels)
            labels.append(series)
        index.append(sid)
        stamps.append(stamp)
        values.append(value)
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    return Recording(
        [canonical_bytes(s) for s in labels],
        labels,
        np.asarray(index, dtype=np.uint32)[order],
        np.asarray(stamps, dtype=np.int64)[order],
        np.asarray(values, dtype=np.float64)[order],
        types,
    )


class Replay:
    """The pipeline's engines, fed from a recording instead of Kafka."""

    def __init__(
        self,
        groups: list[RuleGroup],
        *,
        partitions: int = 8,
        partition_by: tuple[str, ...] = DEFAULT_PARTITION_BY,
        engine_options: dict | None = None,
        slice_ms: int = 15_000,
        scores: bool = True,
        forecasts: bool = True,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        models: ModelCatalog | None = None,
        forecast_config: ForecastConfig | None = None,
    ) -> None:
        self.placement = place_groups(groups, partition_by)
        self.partitions = partitions
        self.partition_by = partition_by
        self.slice_ms = slice_ms
        options = engine_options or {}
        # The recording's "# TYPE" lines play the part of remote-write metadata.
        self.metric_types = MetricTypes()
        self.engines = [
            PartitionDetectors(
                self.placement.local, engine_options=options, scores=scores, forecasts=forecasts,
                score_threshold=score_threshold, metric_types=self.metric_types, models=models,
                forecast_config=forecast_config,
            )
            for _ in range(partitions)
        ]
        self.limits = ReplayLimits()
        self.global_engine = (
            PartitionDetectors(self.placement.global_, engine_options=options, scores=False, forecasts=False)
            if self.placement.global_
            else None
        )

    def run(self, recording: Recording, progress: Callable[[int], None] | None = None) -> Iterator[dict]:
        """Events as JSON-ready dicts: alert state changes (``headroom.alert.v1`` plus ``"kind": "alert"``),
        scores (``"kind": "score"``) and forecasts (``"kind": "forecast"``)."""
        if self.metric_types.update(recording.types):
            for engine in self.engines:
                engine.reclassify()
        partition = np.array([partition_for(s, self.partitions, self.partition_by) for s in recording.labels], dtype=np.int64)
        to_global = np.array([self.placement.feeds_global_lane(s) for s in recording.labels], dtype=bool)
        stamps = recording.timestamps
        if len(stamps) == 0:
            return
        # Slices end on multiples of slice_ms, so each one is a scrape's worth of samples.
        edges = np.flatnonzero(np.diff(stamps // self.slice_ms)) + 1
        start = 0
        for end in [*edges.tolist(), len(stamps)]:
            outputs = self._feed(recording, slice(start, end), partition, to_global)
            yield from _ordered(outputs)
            if progress:
                progress(end - start)
            start = end
        # what the last slices left for a next tick that will not come
        yield from _ordered([engine.flush() for engine in self.engines])

    def _feed(self, rec: Recording, part: slice, partition: np.ndarray, to_global: np.ndarray) -> list[PartitionOutput]:
        index, stamps, values = rec.series_index[part], rec.timestamps[part], rec.values[part]
        outputs = []
        owner = partition[index]
        for p in np.unique(owner).tolist():
            pick = owner == p
            outputs += self._ingest(self.engines[p], _batch(rec.keys, index[pick], stamps[pick], values[pick]))
        if self.global_engine is not None:
            pick = to_global[index]
            sub = _batch(rec.keys, index[pick], stamps[pick], values[pick])
            clock = SampleBatch([canonical_bytes(LANE_CLOCK)], np.zeros(1, dtype=np.uint32), stamps[-1:], np.ones(1))
            if len(sub):
                outputs += self._ingest(self.global_engine, sub)
            outputs += self._ingest(self.global_engine, clock)
        return outputs

    def _ingest(self, engine: PartitionDetectors, batch: SampleBatch) -> list[PartitionOutput]:
        """One batch, then every evaluation it made due: offline, the steps a worker
        spreads over its event loop (``max_evaluations_per_step``) run back to back."""
        outputs = [engine.ingest(batch)]
        while engine.pending:
            outputs.append(engine.catch_up())
        self.limits.record(outputs)
        return outputs


@dataclass
class ReplayLimits:
    """What the engines' limits did during a replay (the worker counts the same in its metrics)."""

    refused: Refused = field(default_factory=Refused)
    skipped_evaluations: int = 0

    def record(self, outputs: list[PartitionOutput]) -> None:
        for out in outputs:
            self.refused.add(out.engine.refused)
            self.skipped_evaluations += out.engine.skipped

    def describe(self) -> list[str]:
        """One line per limit that bit, naming a series it bit on."""
        lines = []
        if self.refused.too_dense:
            lines.append(f"{self.refused.too_dense} samples dropped as closer than the minimum interval to the previous "
                         f"one of their series, e.g. {format_series(self.refused.dense_series)}")
        if self.refused.new_series:
            lines.append(f"{self.refused.new_series} new series dropped ({self.refused.new_series_samples} samples) beyond "
                         f"the series limit per partition, e.g. {format_series(self.refused.new_series_example)}")
        if self.skipped_evaluations:
            lines.append(f"{self.skipped_evaluations} evaluations skipped: more than the maximum catch-up behind the newest sample")
        return lines


def format_series(key: bytes | None) -> str:
    """A series' canonical key as Prometheus prints a label set, quotes escaped (safe in a log line).

    >>> print(format_series(canonical_bytes((("__name__", "up"), ("job", 'a"b')))))
    {__name__="up", job="a\\"b"}
    """
    return "(unknown)" if key is None else format_labels(labels_from_canonical(key))


def _batch(keys: list[bytes], index: np.ndarray, stamps: np.ndarray, values: np.ndarray) -> SampleBatch:
    used, local = np.unique(index, return_inverse=True)
    return SampleBatch([keys[i] for i in used.tolist()], local.astype(np.uint32), stamps, values)


def _ordered(outputs: Iterable[PartitionOutput]) -> Iterator[dict]:
    alerts = [{"kind": "alert", **t.to_dict()} for out in outputs for t in out.transitions]
    scores = [e.to_dict() for out in outputs for e in out.scores]
    forecasts = [f.to_dict() for out in outputs for f in out.forecasts]
    alerts.sort(key=lambda e: (e["eval_time"], e["rule"], sorted(e["labels"].items()), e["state"]))
    scores.sort(key=lambda e: (e["t"], sorted(e["labels"].items())))
    forecasts.sort(key=lambda e: (e["t"], sorted(e["labels"].items())))
    yield from scores
    yield from forecasts
    yield from alerts
