"""Per-series anomaly scores: a default detector that needs no tuning, and a catalog.

- :class:`AnomalyDetector`: one series, river's ``learn_one`` / ``score_one``.
- :class:`AnomalyScorer`: many series as numpy columns; what the Faust agent
  calls once per Kafka message (``score_batch``), and what ``headroom
  score-csv`` runs on one series.
- :data:`MODELS` / :data:`DEFAULT_MODEL` / :func:`make_model`: the catalog;
  river detectors plug in through :class:`RiverScorer`.
- :class:`ModelCatalog` / :class:`CatalogScorer`: which model scores which
  series, by PromQL selector (first match wins).
- :func:`is_counter` / :func:`counter_rate`: counters are scored on their rate.

How the default detector works is told in :mod:`detector.anomaly.core`.
Pure: numpy and river only (the default model's step is compiled from Cython at install).
"""

from detector.anomaly.core import DAY_S, WEEK_S, ColumnarState, Params
from detector.anomaly.counters import CounterState, counter_rate, is_counter
from detector.anomaly.models import DEFAULT_MODEL, MODELS, AnomalyDetector, GuardedGaussian, RiverScorer, make_model
from detector.anomaly.scorer import AnomalyScorer
from detector.anomaly.catalog import CatalogScorer, ModelCatalog, ModelCatalogError

__all__ = [
    "DAY_S", "WEEK_S", "DEFAULT_MODEL", "MODELS", "AnomalyDetector", "AnomalyScorer", "CatalogScorer", "ColumnarState",
    "CounterState", "GuardedGaussian", "ModelCatalog", "ModelCatalogError", "Params", "RiverScorer", "counter_rate", "is_counter", "make_model",
]
