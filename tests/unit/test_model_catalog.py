"""The anomaly model catalog per series selector: loading, routing, and where it is configured."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from detector.anomaly import AnomalyScorer, CatalogScorer, ModelCatalog, ModelCatalogError
from detector.wire.batch import SampleBatch
from detector.partition import PartitionDetectors
from pipelines.replay_cli import replay
from pipelines.settings import Settings

ORDERS = (("__name__", "pgmq_queue_depth"), ("queue_name", "orders"))
EMAILS = (("__name__", "pgmq_queue_depth"), ("queue_name", "emails"))
UP = (("__name__", "up"), ("job", "api"))
CATALOG = {
    "models": [
        {"selector": '{__name__=~"pgmq_.*", queue_name="orders"}', "model": "river-gaussian"},
        {"selector": '{__name__=~"pgmq_.*"}', "model": "weekly"},
        {"selector": "pgmq_queue_depth", "model": "river-hst"},  # never reached: the one above matches first
    ]
}


def noisy(labels, n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    return labels, [(i * 15_000, float(v)) for i, v in enumerate(10 + rng.normal(size=n))]


def test_the_first_matching_selector_wins_and_other_series_get_the_default():
    catalog = ModelCatalog.from_dict(CATALOG)
    assert [catalog.model_for(s) for s in (ORDERS, EMAILS, UP)] == ["river-gaussian", "weekly", "default"]
    assert ModelCatalog.from_dict({"default": "weekly"}).model_for(UP) == "weekly"


def test_each_series_is_scored_by_its_own_model_exactly_as_that_model_alone_scores_it():
    batch = SampleBatch.from_series([noisy(ORDERS, seed=1), noisy(EMAILS, seed=2), noisy(UP, seed=3)])
    routed = CatalogScorer(ModelCatalog.from_dict(CATALOG)).score_batch(batch)
    for labels, model in [(ORDERS, "river-gaussian"), (EMAILS, "weekly"), (UP, "default")]:
        alone = SampleBatch.from_series([noisy(labels, seed={ORDERS: 1, EMAILS: 2, UP: 3}[labels])])
        expected = AnomalyScorer(model).score_batch(alone)
        mine = routed[batch.series_index == batch.series_keys.index(alone.series_keys[0])]
        np.testing.assert_array_equal(mine, expected)
    assert routed.max() > 0  # the river model scores past its grace period


def test_a_partition_routes_each_series_once_and_retires_it_from_its_model():
    det = PartitionDetectors([], models=ModelCatalog.from_dict(CATALOG), retire_every_ms=None)
    det.ingest(SampleBatch.from_series([noisy(ORDERS, 10), noisy(EMAILS, 10), noisy(UP, 10)]))
    assert {name: len(s) for name, s in det.scorer.scorers.items()} == {"river-gaussian": 1, "weekly": 1, "default": 1}
    det.scorer.retire([SampleBatch.from_series([noisy(ORDERS, 1)]).series_keys[0]])
    assert len(det.scorer.scorers["river-gaussian"]) == 0 and len(det.scorer) == 2


def test_a_catalog_file_reports_every_problem_with_file_and_entry(tmp_path):
    path = tmp_path / "models.yml"
    path.write_text(
        "default: fancy\n"
        "models:\n"
        "  - selector: 'rate(x[5m])'\n"
        "    model: weekly\n"
        "  - selector: up\n"
        "    model: nope\n"
        "  - {selector: up, model: weekly, weight: 2}\n"
        "  - just a string\n"
    )
    with pytest.raises(ModelCatalogError) as err:
        ModelCatalog.load(path)
    problems = err.value.problems
    assert len(problems) == 5
    assert problems[0].startswith(f"{path}: default: unknown anomaly model 'fancy'")
    assert problems[1].startswith(f"{path}: models[0]: selector: ") and "not a plain series selector" in problems[1]
    assert problems[2].startswith(f"{path}: models[1]: model: unknown anomaly model 'nope'")
    assert problems[3] == f"{path}: models[2]: unknown field(s) ['weight'] (known: selector, model)"
    assert problems[4].startswith(f"{path}: models[3]: expected a mapping")


def test_an_unreadable_catalog_names_the_file(tmp_path):
    with pytest.raises(ModelCatalogError, match="missing.yml: cannot read"):
        ModelCatalog.load(tmp_path / "missing.yml")
    (tmp_path / "list.yml").write_text("- a\n")
    with pytest.raises(ModelCatalogError, match="list.yml: expected a mapping"):
        ModelCatalog.load(tmp_path / "list.yml")


def test_settings_refuse_a_bad_models_file_before_anything_starts(tmp_path):
    path = tmp_path / "models.yml"
    path.write_text("models:\n  - {selector: up, model: nope}\n")
    with pytest.raises(ValidationError, match="models_file") as err:
        Settings(models_file=path)
    assert f"{path}: models[0]: model: unknown anomaly model 'nope'" in str(err.value)
    path.write_text(json.dumps(CATALOG))  # JSON is YAML
    assert Settings(models_file=path).model_catalog() == ModelCatalog.from_dict(CATALOG, str(path))


def test_replay_takes_a_models_file(tmp_path):
    lines = [f'pgmq_queue_depth{{queue_name="orders"}} {10 + (i % 5)} {i * 15}' for i in range(200)]
    lines.append(f'pgmq_queue_depth{{queue_name="orders"}} 500 {200 * 15}')
    (tmp_path / "rec.om").write_text("# TYPE pgmq_queue_depth gauge\n" + "\n".join(lines) + "\n# EOF\n")
    scores = {}
    for name, model in [("default", "default"), ("river", "river-gaussian")]:
        (tmp_path / f"{name}.yml").write_text(f"models:\n  - {{selector: pgmq_queue_depth, model: {model}}}\n")
        out = tmp_path / f"{name}.jsonl"
        result = CliRunner().invoke(replay, [str(tmp_path / "rec.om"), "--rules", "anomaly", "--out", str(out),
                                             "--scores", "all", "--models", str(tmp_path / f"{name}.yml")])
        assert result.exit_code == 0, result.output
        scores[name] = [e["score"] for e in map(json.loads, out.read_text().splitlines()) if e["kind"] == "score"]
    assert len(scores["default"]) == len(scores["river"]) == 201
    assert scores["default"] != scores["river"]
    (tmp_path / "bad.yml").write_text("models:\n  - {selector: up, model: nope}\n")
    result = CliRunner().invoke(replay, [str(tmp_path / "rec.om"), "--rules", "anomaly", "--out", str(tmp_path / "x"),
                                         "--models", str(tmp_path / "bad.yml")])
    assert result.exit_code == 2 and "models[0]: model: unknown anomaly model 'nope'" in result.output


def test_the_worker_takes_the_catalog_from_its_settings(tmp_path):
    from pipelines.engines import PartitionEngines

    path = tmp_path / "models.yml"
    path.write_text(json.dumps(CATALOG))
    engines = PartitionEngines([], Settings(models_file=path))
    engines.ingest(3, SampleBatch.from_series([noisy(ORDERS, 2), noisy(UP, 2)]))
    assert sorted(engines.engines[3].scorer.scorers) == ["default", "river-gaussian"]
