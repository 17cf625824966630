"""Per-series gauges for dashboards: the latest anomaly score and saturation forecast of every series.

Their label names differ from series to series, so they come from a custom
collector (prometheus-client's ``Gauge`` needs fixed label names), fed with
each :class:`~detector.partition.PartitionOutput` and read at scrape time:

* ``headroom_anomaly_score{<series labels>, metric="<name>"}``: the newest
  score in [0, 1]; the same identity as the derived series the rules see;
* ``headroom_saturation_eta_seconds``, ``..._eta_lower_seconds`` and
  ``..._eta_upper_seconds`` ``{<series labels>, metric, bound, direction}``:
  seconds from the estimate's evaluation to the bound, with its interval
  (the upper end is ``+Inf`` when the trend may flatten first); ``bound`` is the
  paired series' name or the constant. **Absent** while the series does not
  head to its bound (``absent()``/``or`` on a dashboard, no NaN to filter);
* ``headroom_early_warning_state{<same labels>}``: 0 inactive, 1 pending,
  2 firing, for every series with an estimate or a warning.

A forecast is updated when its estimate changes as people read it (see
:class:`~detector.forecast.engine.Forecast`), so the ETA is as of that
evaluation, within a rounding unit (a minute above one minute). A series
that stops heading to its bound with its warning inactive is dropped, and
a revoked partition's series are forgotten. Memory: a dict entry per scored
series (its key is the one the scorer already holds) and one per forecast
series.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> from detector.labels import canonical_bytes
>>> from detector.partition import PartitionOutput
>>> from detector.rules.engine import EngineOutput
>>> gauges = DetectorGauges()
>>> registry = CollectorRegistry(); registry.register(gauges)
>>> key = canonical_bytes((("__name__", "headroom_anomaly_score"), ("job", "api"), ("metric", "up")))
>>> gauges.update("samples", 0, PartitionOutput(EngineOutput(), latest_scores={key: 0.25}))
>>> print(generate_latest(registry).decode().splitlines()[2])
headroom_anomaly_score{job="api",metric="up"} 0.25
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from detector.forecast.engine import Forecast
from detector.forecast.warning import STATES
from detector.labels import METRIC_NAME, canonical_bytes, labels_from_canonical, metric_name
from detector.partition import PartitionOutput

SCORE = "headroom_anomaly_score"
ETA = "headroom_saturation_eta_seconds"
ETA_LOWER = "headroom_saturation_eta_lower_seconds"
ETA_UPPER = "headroom_saturation_eta_upper_seconds"
STATE = "headroom_early_warning_state"

_HELP = {
    SCORE: "Latest anomaly score of the series, in [0, 1] (calibrated: one threshold for every series)",
    ETA: "Seconds to the bound from the latest changed estimate; absent when not heading to it",
    ETA_LOWER: "Near end of the interval of the seconds to the bound",
    ETA_UPPER: "Far end of the interval of the seconds to the bound (+Inf: may never reach it)",
    STATE: "Early-warning state of the series: 0 inactive, 1 pending, 2 firing",
}

Lane = tuple[str, int]


class DetectorGauges(Collector):
    """Latest scores and forecasts by (topic, partition), exposed as gauges with each series' labels."""

    def __init__(self) -> None:
        self._scores: dict[Lane, dict[bytes, float]] = {}
        self._forecasts: dict[Lane, dict[bytes, Forecast]] = {}

    def update(self, topic: str, partition: int, out: PartitionOutput) -> None:
        if out.latest_scores:
            self._scores.setdefault((topic, partition), {}).update(out.latest_scores)
        if out.forecasts:
            kept = self._forecasts.setdefault((topic, partition), {})
            for forecast in out.forecasts:
                key = canonical_bytes(forecast.labels)
                if forecast.heading or forecast.state != "inactive":
                    kept[key] = forecast
                else:
                    kept.pop(key, None)
        # Stale series (retired after this output's samples): their last values would otherwise stay forever.
        for key in out.retired_keys:
            self._scores.get((topic, partition), {}).pop(key, None)
            self._forecasts.get((topic, partition), {}).pop(key, None)

    def forget(self, topic: str, partitions: Iterable[int]) -> None:
        """Drop the series of partitions this worker no longer owns."""
        for partition in partitions:
            self._scores.pop((topic, partition), None)
            self._forecasts.pop((topic, partition), None)

    def __len__(self) -> int:
        return sum(map(len, self._scores.values())) + sum(map(len, self._forecasts.values()))

    def describe(self) -> Iterator[Metric]:
        # names only, so the registry can refuse a second collector of the same names
        for name in _HELP:
            yield Metric(name, _HELP[name], "gauge")

    def collect(self) -> Iterator[Metric]:
        families = {name: Metric(name, _HELP[name], "gauge") for name in _HELP}
        score = families[SCORE]
        for scores in list(self._scores.values()):
            for key, value in list(scores.items()):
                score.add_sample(SCORE, {k: v for k, v in labels_from_canonical(key) if k != METRIC_NAME}, value)
        for forecasts in list(self._forecasts.values()):
            for forecast in list(forecasts.values()):
                labels = forecast_labels(forecast)
                families[STATE].add_sample(STATE, labels, float(STATES.index(forecast.state)))
                if forecast.heading:
                    families[ETA].add_sample(ETA, labels, forecast.eta_s)
                    families[ETA_LOWER].add_sample(ETA_LOWER, labels, forecast.eta_low_s)
                    families[ETA_UPPER].add_sample(ETA_UPPER, labels, forecast.eta_high_s)
        yield from families.values()


def forecast_labels(forecast: Forecast) -> dict[str, str]:
    """The series' labels without ``__name__``, plus ``metric``, ``bound`` and ``direction``.

    >>> f = Forecast((("__name__", "x_saturation"), ("job", "a")), 0, 1.0, 1.0, 1.0, 1.0, "", "up", 0.9, "firing")
    >>> forecast_labels(f)
    {'job': 'a', 'metric': 'x_saturation', 'bound': '1', 'direction': 'up'}
    """
    labels = {k: v for k, v in forecast.labels if k != METRIC_NAME}
    labels["metric"] = metric_name(forecast.labels)
    labels["bound"] = forecast.bound_name or f"{forecast.bound:g}"
    labels["direction"] = forecast.direction
    return labels
