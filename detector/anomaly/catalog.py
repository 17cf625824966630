"""Which anomaly model scores which series: a list of (selector, model), first match wins.

The catalog comes from a small YAML file (``HEADROOM_MODELS_FILE``,
``headroom replay --models FILE``); selectors are PromQL series selectors,
model names those of :data:`~detector.anomaly.models.MODELS`:

.. code-block:: yaml

    default: default                 # optional: the model of every series no entry matches
    models:
      - selector: '{__name__=~"pgmq_.*", queue_name="orders"}'
        model: weekly
      - selector: http_requests_total
        model: river-gaussian

:class:`CatalogScorer` keeps one :class:`~detector.anomaly.scorer.AnomalyScorer`
per model in use and routes each series once, when first seen.

>>> catalog = ModelCatalog.from_dict({"models": [{"selector": '{__name__=~"pgmq_.*"}', "model": "weekly"}]})
>>> catalog.model_for((("__name__", "pgmq_queue_depth"),)), catalog.model_for((("__name__", "up"),))
('weekly', 'default')
>>> ModelCatalog.from_dict({"models": [{"selector": "up{", "model": "weekly"}, {"selector": "up", "model": "nope"}]})
Traceback (most recent call last):
...
detector.anomaly.catalog.ModelCatalogError: 2 problem(s) in the model catalog:
  models[0]: selector: 'up{': cannot parse PromQL 'up{': unexpected end of input inside braces
  models[1]: model: unknown anomaly model 'nope'; choose one of ['classic', 'default', 'machine', 'river-gaussian', 'river-hst', 'weekly']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.anomaly.models import DEFAULT_MODEL, MODELS, make_model
from detector.anomaly.scorer import AnomalyScorer
from detector.wire.batch import SampleBatch
from detector.errors import HeadroomError
from detector.labels import Labels, labels_from_canonical
from detector.promql.plan import Matcher
from detector.promql.selectors import SelectorError, parse_selector
from detector.yaml_files import YamlFileError, read_mapping


class ModelCatalogError(HeadroomError):
    """A model catalog Headroom cannot use; lists every problem found, each with file and entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) in the model catalog:\n  " + "\n  ".join(self.problems))


def _model_problem(name: object) -> str | None:
    if isinstance(name, str) and name in MODELS:
        return None
    return f"unknown anomaly model {name!r}; choose one of {sorted(MODELS)}"


@dataclass(frozen=True)
class ModelRoute:
    """Series matching ``selector`` (its text kept for messages) are scored by ``model``."""

    selector: str
    matchers: tuple[Matcher, ...]
    model: str

    def matches(self, labels: Labels) -> bool:
        values = dict(labels)
        return all(m.matches(values.get(m.name, "")) for m in self.matchers)


@dataclass(frozen=True)
class ModelCatalog:
    """Routes tried in order, then ``default``."""

    routes: tuple[ModelRoute, ...] = ()
    default: str = DEFAULT_MODEL

    def model_for(self, labels: Labels) -> str:
        return next((r.model for r in self.routes if r.matches(labels)), self.default)

    @classmethod
    def from_dict(cls, raw: Mapping | None, source: str = "") -> ModelCatalog:
        """A catalog from its dict form; :class:`ModelCatalogError` lists every problem at once."""
        prefix = f"{source}: " if source else ""
        raw = dict(raw or {})
        problems: list[str] = []
        unknown = set(raw) - {"default", "models"}
        if unknown:
            problems.append(f"{prefix}unknown top-level key(s) {sorted(unknown)} (known: default, models)")
        default = raw.get("default", DEFAULT_MODEL)
        if (problem := _model_problem(default)) is not None:
            problems.append(f"{prefix}default: {problem}")
        entries = raw.get("models") or []
        if not isinstance(entries, list):
            problems.append(f"{prefix}models: expected a list of {{selector, model}}, got {type(entries).__name__}")
            entries = []
        routes = []
        for i, entry in enumerate(entries):
            where = f"{prefix}models[{i}]"
            if not isinstance(entry, Mapping):
                problems.append(f"{where}: expected a mapping with 'selector' and 'model', got {entry!r}")
                continue
            extra = set(entry) - {"selector", "model"}
            if extra:
                problems.append(f"{where}: unknown field(s) {sorted(extra)} (known: selector, model)")
            try:
                matchers = parse_selector(entry.get("selector"))
            except SelectorError as exc:
                problems.append(f"{where}: selector: {exc}")
                matchers = ()
            if (problem := _model_problem(entry.get("model"))) is not None:
                problems.append(f"{where}: model: {problem}")
            routes.append(ModelRoute(str(entry.get("selector")), matchers, str(entry.get("model"))))
        if problems:
            raise ModelCatalogError(problems)
        return cls(tuple(routes), default)

    @classmethod
    def load(cls, path: str | Path) -> ModelCatalog:
        """Read a YAML catalog file (see the module docs)."""
        try:
            raw = read_mapping(path, "a mapping with 'models' (and optionally 'default')")
        except YamlFileError as exc:
            raise ModelCatalogError([str(exc)]) from None
        return cls.from_dict(raw, str(path))


class CatalogScorer:
    """Anomaly scores for many series, each scored by the model its catalog entry names.

    The same calls as :class:`~detector.anomaly.scorer.AnomalyScorer`
    (``score_batch``, ``retire``); a catalog without entries costs nothing
    over a single scorer.

    >>> scorer = CatalogScorer(ModelCatalog.from_dict({"models": [{"selector": "b", "model": "weekly"}]}))
    >>> batch = SampleBatch.from_series([((("__name__", n),), [(i * 15_000, 1.0) for i in range(2)]) for n in "ab"])
    >>> scorer.score_batch(batch).tolist(), {name: len(s) for name, s in scorer.scorers.items()}
    ([0.0, 0.0, 0.0, 0.0], {'default': 1, 'weekly': 1})
    """

    def __init__(
        self,
        catalog: ModelCatalog | None = None,
        counter: Callable[[bytes], bool] | None = None,
        metric_types: MetricTypes | None = None,
    ) -> None:
        self.catalog = catalog or ModelCatalog()
        self.counter = counter
        self.metric_types = metric_types
        self.scorers: dict[str, AnomalyScorer] = {}
        self._names: list[str] = []  # model names in first-use order; _model_of holds indices into it
        self._model_of: dict[bytes, int] = {}  # series key -> its model, routed at first sight

    def scorer(self, model: str) -> AnomalyScorer:
        """The scorer of one model, made on first use."""
        found = self.scorers.get(model)
        if found is None:
            found = self.scorers[model] = AnomalyScorer(model, self.counter, self.metric_types)
            self._names.append(model)
        return found

    def __len__(self) -> int:
        return sum(len(s) for s in self.scorers.values())

    def score_batch(self, batch: SampleBatch, deviation: np.ndarray | None = None) -> np.ndarray:
        """Scores of a batch, one per sample, in its order (each series by its own model); with
        ``deviation``, each sample's deviation from its expected level goes there (see
        :meth:`AnomalyScorer.score`)."""
        if not self.catalog.routes:
            return self.scorer(self.catalog.default).score_batch(batch, deviation)
        model = np.fromiter((self._route(k) for k in batch.series_keys), dtype=np.intp, count=len(batch.series_keys))
        if len(model) and (model == model[0]).all():
            return self.scorers[self._names[model[0]]].score_batch(batch, deviation)
        per_sample = model[batch.series_index]
        out = np.zeros(len(batch))
        for m in np.unique(model).tolist():
            pick = np.flatnonzero(per_sample == m)
            used, local = np.unique(batch.series_index[pick], return_inverse=True)
            sub = SampleBatch([batch.series_keys[i] for i in used.tolist()], local.astype(np.uint32),
                              batch.timestamps[pick], batch.values[pick])
            part = None if deviation is None else np.empty(len(pick))
            out[pick] = self.scorers[self._names[m]].score_batch(sub, part)
            if part is not None:
                deviation[pick] = part
        return out

    def _route(self, key: bytes) -> int:
        m = self._model_of.get(key)
        if m is None:
            name = self.catalog.model_for(labels_from_canonical(key))
            self.scorer(name)
            m = self._model_of[key] = self._names.index(name)
        return m

    def identity(self) -> str:
        """What learned state depends on: the routes, and the parameters of every model they name."""
        names = sorted({self.catalog.default, *(r.model for r in self.catalog.routes)})
        params = {name: repr(getattr(make_model(name), "params", "")) for name in names}
        return f"routes {[(r.selector, r.model) for r in self.catalog.routes]} default {self.catalog.default} params {params}"

    # ------------------------------------------------------------------ snapshots (detector.snapshot)

    SNAPSHOT_SKIP = frozenset({"catalog", "counter", "metric_types", "scorers"})

    def snapshot_state(self) -> dict:
        from detector.snapshot import capture, capture_attributes

        state = capture_attributes(self)
        state["scorers"] = {name: capture(scorer) for name, scorer in self.scorers.items()}
        return state

    def restore_state(self, state: dict) -> None:
        from detector.snapshot import SnapshotError, apply, apply_attributes

        scorers = state.pop("scorers")
        apply_attributes(self, state)
        for name in self._names:
            if name not in MODELS or name not in scorers:
                raise SnapshotError(f"snapshot names anomaly model {name!r}, which this catalog cannot rebuild")
            found = self.scorers[name] = AnomalyScorer(name, self.counter, self.metric_types)
            apply(found, scorers[name])

    def reclassify(self) -> int:
        """Apply newly learned metric types in every model's scorer; returns how many series changed."""
        return sum(scorer.reclassify() for scorer in self.scorers.values())

    def retire(self, keys: Sequence[bytes]) -> None:
        """Forget series (stale, or moved away) in whichever scorer holds them."""
        for scorer in self.scorers.values():
            scorer.retire(keys)
        for key in keys:
            self._model_of.pop(key, None)
