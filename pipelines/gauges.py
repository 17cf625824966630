"""Per-series gauges for dashboards: the latest anomaly score and saturation forecast of every series.

Their label names differ from series to series, and a worker holds tens of
thousands, so they are written as exposition text here (prometheus-client's
``Gauge`` needs fixed label names, and its generic collector path costs about
40 µs per sample: 0.4 s of the event loop per scrape at 10k series). Each
series' label text is built once and kept; fed with each
:class:`~detector.partition.PartitionOutput`, read at scrape time:

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
series (by the scored series' key, which the scorer already holds) and one per
forecast series, and each one's label text once it has been scraped.

>>> from detector.labels import canonical_bytes
>>> from detector.partition import PartitionOutput
>>> from detector.rules.engine import EngineOutput
>>> gauges = DetectorGauges()
>>> key = canonical_bytes((("__name__", "up"), ("job", "api")))
>>> gauges.update("samples", 0, PartitionOutput(EngineOutput(), latest_scores={key: 0.25}))
>>> print(gauges.exposition().splitlines()[2])
headroom_anomaly_score{job="api",metric="up"} 0.25
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

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


class DetectorGauges:
    """Latest scores and forecasts by (topic, partition), as exposition text with each series' labels."""

    def __init__(self) -> None:
        self._scores: dict[Lane, dict[bytes, float]] = {}
        self._forecasts: dict[Lane, dict[bytes, Forecast]] = {}
        self._label_text: dict[bytes, str] = {}  # forecast series key -> its "{...}"
        self._score_text: dict[bytes, str] = {}  # scored series key -> its score gauge's "{...}"

    def update(self, topic: str, partition: int, out: PartitionOutput) -> None:
        if out.latest_scores:
            self._scores.setdefault((topic, partition), {}).update(out.latest_scores)
        if out.forecasts:
            kept = self._forecasts.setdefault((topic, partition), {})
            for forecast in out.forecasts:
                key = canonical_bytes(forecast.labels)
                if forecast.heading or forecast.state != "inactive":
                    if kept.get(key) is None or kept[key].bound_name != forecast.bound_name:
                        self._label_text.pop(key, None)  # its bound label may have changed
                    kept[key] = forecast
                elif kept.pop(key, None) is not None:
                    self._label_text.pop(key, None)
        # Stale series (retired after this output's samples): their last values would otherwise stay forever.
        for key in out.retired_keys:
            self._scores.get((topic, partition), {}).pop(key, None)
            self._forecasts.get((topic, partition), {}).pop(key, None)
            self._label_text.pop(key, None)
            self._score_text.pop(key, None)

    def forget(self, topic: str, partitions: Iterable[int]) -> None:
        """Drop the series of partitions this worker no longer owns."""
        for partition in partitions:
            for key in self._scores.pop((topic, partition), {}):
                self._score_text.pop(key, None)
            for key in self._forecasts.pop((topic, partition), {}):
                self._label_text.pop(key, None)

    def __len__(self) -> int:
        return sum(map(len, self._scores.values())) + sum(map(len, self._forecasts.values()))

    def exposition(self, names: Collection[str] | None = None) -> str:
        """The gauges in the text format (0.0.4); only the families in ``names`` when given."""
        text, learned = self.render(names)
        self.learn(learned)
        return text

    def render(self, names: Collection[str] | None = None) -> tuple[str, Learned]:
        """:meth:`exposition` without keeping what it built: safe on another thread.

        At 100k scored series a page is about 25 MB and 150 ms of CPU, so the
        worker renders it off the event loop, where it would hold back every
        message and alert for that long. This reads copies of the dicts (each
        ``list()`` is one step under the GIL) and writes nothing; the label text
        it built for series not seen before comes back, for :meth:`learn` to keep
        on the event loop's thread.
        """
        wanted = [name for name in _HELP if names is None or name in names]
        lines: dict[str, list[str]] = {name: [] for name in wanted}
        text, score_text = self._label_text, self._score_text
        learned = Learned()
        if SCORE in lines:
            out = lines[SCORE]
            for scores in list(self._scores.values()):
                for key, value in list(scores.items()):
                    labels = score_text.get(key)
                    if labels is None:
                        labels = learned.scores[key] = _label_text(score_labels(key))
                    out.append(f"{SCORE}{labels} {_number(value)}")
        if len(lines) > (SCORE in lines):
            for forecasts in list(self._forecasts.values()):
                for key, forecast in list(forecasts.items()):
                    labels = text.get(key)
                    if labels is None:
                        labels = _label_text(forecast_labels(forecast))
                        learned.forecasts[key] = (forecast.bound_name, labels)
                    values = {STATE: float(STATES.index(forecast.state))}
                    if forecast.heading:
                        values.update({ETA: forecast.eta_s, ETA_LOWER: forecast.eta_low_s, ETA_UPPER: forecast.eta_high_s})
                    for name, value in values.items():
                        if name in lines:
                            lines[name].append(f"{name}{labels} {_number(value)}")
        page = "".join(
            f"# HELP {name} {_HELP[name]}\n# TYPE {name} gauge\n" + "".join(line + "\n" for line in lines[name])
            for name in wanted
        )
        return page, learned

    def learn(self, learned: Learned) -> None:
        """Keep the label text a :meth:`render` built, for the series still held.

        Only on the thread that calls :meth:`update`: a series retired (or a forecast
        whose bound changed) while the page was rendered is not kept.
        """
        held = self._scores.values()
        for key, labels in learned.scores.items():
            if any(key in scores for scores in held):
                self._score_text[key] = labels
        for key, (bound_name, labels) in learned.forecasts.items():
            if any((f := kept.get(key)) is not None and f.bound_name == bound_name for kept in self._forecasts.values()):
                self._label_text[key] = labels


@dataclass
class Learned:
    """Label text a :meth:`DetectorGauges.render` built for series it had none for."""

    scores: dict[bytes, str] = field(default_factory=dict)  # scored series key -> "{...}"
    forecasts: dict[bytes, tuple[str, str]] = field(default_factory=dict)  # key -> (bound name, "{...}")


def _number(value: float) -> str:
    """A sample value as the text format writes it: Go's spelling of the special values.

    ``repr`` for the finite ones, which the format's parsers read alike (prometheus-client's
    ``floatToGoString`` also respells long exponents, at twice the cost).

    >>> import numpy as np
    >>> [_number(v) for v in (0.25, np.float64(1e-05), float("inf"), float("-inf"), float("nan"))]
    ['0.25', '1e-05', '+Inf', '-Inf', 'NaN']
    """
    value = float(value)  # a numpy float's repr names its type
    if value - value == 0.0:  # finite (inf - inf and anything with NaN is NaN)
        return repr(value)
    return floatToGoString(value)


def score_labels(key: bytes) -> dict[str, str]:
    """The score gauge's labels for a scored series' key: the labels of its derived
    ``headroom_anomaly_score`` series without ``__name__`` (a score series' own key gives the same).

    >>> score_labels(canonical_bytes((("__name__", "up"), ("job", "api"))))
    {'job': 'api', 'metric': 'up'}
    >>> score_labels(canonical_bytes((("__name__", SCORE), ("job", "api"), ("metric", "up"))))
    {'job': 'api', 'metric': 'up'}
    """
    labels = labels_from_canonical(key)
    name = metric_name(labels)
    out = {k: v for k, v in labels if k != METRIC_NAME}
    if name != SCORE:
        out["metric"] = name
    return dict(sorted(out.items()))


def _label_text(labels: dict[str, str]) -> str:
    """``{name="value",...}`` with the text format's escapes in the values.

    >>> print(_label_text({"job": "api", "path": 'say "hi"'}))
    {job="api",path="say \\"hi\\""}
    """
    return "{" + ",".join(f'{name}="{_escape(value)}"' for name, value in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


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
