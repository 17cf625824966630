"""The worker's limits, as an operator sees them: counters, log lines naming the series, steps that yield.

The engines are the worker's own (:class:`pipelines.engines.PartitionEngines`,
:class:`pipelines.worker.Worker`, with the limits from
:class:`~pipelines.settings.Settings`); only Kafka is left out.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pydantic
import pytest
from prometheus_client import CollectorRegistry

from detector.labels import canonical_bytes
from detector.promql import compile_expr
from detector.rules import AlertingRule, RuleGroup
from detector.wire.batch import SampleBatch
from pipelines.engines import PartitionEngines
from pipelines.limits import LimitReport
from pipelines.settings import Settings
from pipelines.worker import Outgoing, Worker

T0 = 1_700_000_000_000 // 15_000 * 15_000
LANE = "headroom-samples"
DENSE = (("__name__", "up"), ("instance", "dense"), ("job", "api"))


class Clock:
    def __init__(self, s: float = 0.0) -> None:
        self.s = s

    def __call__(self) -> float:
        return self.s


def groups() -> list[RuleGroup]:
    return [RuleGroup("g", "inline", 15_000, (AlertingRule("Down", compile_expr("up == 0"), "up == 0"),))]


def engines(**settings) -> PartitionEngines:  # noqa: ANN003
    # One sender shard: no completeness start-up wait (test_completeness tests it).
    options = {"anomaly_scores": False, "forecasts": False, "start_wait": "0s", **settings}
    return PartitionEngines(groups(), Settings(**options), clock=lambda: T0 / 1000)


def worker(**settings) -> Worker:  # noqa: ANN003
    options = {"anomaly_scores": False, "forecasts": False, "snapshot_interval": "0s", "start_wait": "0s", **settings}
    return Worker(Settings(**options), groups(), clock=lambda: T0 / 1000)


def value(report: LimitReport, name: str) -> float:
    return report.registry.get_sample_value(name) or 0.0


def many(t: int, n: int, start: int = 0) -> SampleBatch:
    keys = [canonical_bytes((("__name__", "up"), ("instance", f"i{i}"), ("job", "api"))) for i in range(start, start + n)]
    return SampleBatch(keys, np.arange(n, dtype=np.uint32), np.full(n, t, dtype=np.int64), np.ones(n))


def test_too_dense_samples_are_counted_and_logged_naming_the_series(caplog):
    lanes, clock = engines(), Clock()
    report = LimitReport(CollectorRegistry(), lanes.settings, clock=clock)
    with caplog.at_level(logging.WARNING, logger="headroom.limits"):
        for k in range(3):  # a 1 ms sender, three requests of 1000 samples, 10 s apart (wall clock)
            batch = SampleBatch.from_series([(DENSE, [(T0 + k * 1000 + i, 1.0) for i in range(1000)])])
            report.record(LANE, 2, lanes.ingest(2, batch))
            clock.s += 10
    assert value(report, "headroom_worker_too_dense_samples_total") == 3 * 999
    (line,) = [r.getMessage() for r in caplog.records]  # one line a minute, not one per request
    assert 'headroom-samples[2]: series {__name__="up", instance="dense", job="api"}' in line
    assert "HEADROOM_SERIES_MIN_INTERVAL=1s" in line and line.endswith("; 999 samples dropped since the last such line")
    caplog.clear()
    clock.s += 60
    with caplog.at_level(logging.WARNING, logger="headroom.limits"):
        report.record(LANE, 2, lanes.ingest(2, SampleBatch.from_series([(DENSE, [(T0 + 5000 + i, 1.0) for i in range(10)])])))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.endswith("; 2007 samples dropped since the last such line")  # the two held back, and this one's 9


def test_series_beyond_the_partition_limit_are_dropped_counted_and_logged(caplog):
    lanes = engines(max_series_per_partition=100)
    report = LimitReport(CollectorRegistry(), lanes.settings)
    with caplog.at_level(logging.WARNING, logger="headroom.limits"):
        report.record(LANE, 0, lanes.ingest(0, many(T0, 80)))
        report.record(LANE, 0, lanes.ingest(0, many(T0 + 15_000, 50, start=60)))  # 20 held, 30 new: 20 fit
    assert value(report, "headroom_worker_series_limit_series_total") == 10
    assert value(report, "headroom_worker_series_limit_samples_total") == 10
    assert len(lanes.engines[0].store) == 100
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.endswith("; 10 series dropped since the last such line")
    assert "HEADROOM_MAX_SERIES_PER_PARTITION=100" in line and 'e.g. {__name__="up", instance="i100", job="api"}' in line


async def test_a_year_jump_runs_in_steps_that_yield_and_skips_the_rest():
    w = worker(max_evaluations_per_step=8, max_catch_up="10m")
    w.handle(LANE, 0, 0, SampleBatch.from_series([(DENSE, [(T0, 1.0)])]))
    stats = w.lanes[LANE].engines[0].rules.stats
    ahead = T0 + 365 * 24 * 3_600_000
    before = stats.evaluations
    sent, ticks = [], []

    async def send(out: Outgoing) -> None:
        sent.append((len(ticks), stats.evaluations))

    async def ticker() -> None:
        while True:
            ticks.append(None)
            await asyncio.sleep(0)

    other = asyncio.create_task(ticker())
    w.handle(LANE, 0, 1, SampleBatch.from_series([(DENSE, [(ahead, 0.0)])]))
    assert stats.evaluations - before == 8  # the message's own call: one rule, 8 group evaluations
    steps = await w.catch_up(LANE, 0, send)
    other.cancel()
    # 41 evaluations (the last 10 minutes, both ends): 8 in the message's own call, 33 in 5 steps.
    done = [before + 8] + [e for _, e in sent]
    assert steps == 5 and [b - a for a, b in zip(done, done[1:])] == [8, 8, 8, 8, 1]
    seen = [t for t, _ in sent]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # the other task ran between every two steps
    registry = w.metrics.registry
    assert registry.get_sample_value("headroom_worker_catch_up_steps_total") == 5
    # At least the year minus the last 10 minutes (the completeness watermark may reach further: it
    # expects the series' next sample a year after this one), all of it counted.
    assert registry.get_sample_value("headroom_worker_skipped_evaluations_total") == stats.skipped_evaluations
    assert stats.skipped_evaluations >= (ahead - 600_000 - T0) // 15_000 - 1
    assert not w.lanes[LANE].engines[0].pending


async def test_catch_up_stops_when_the_partition_is_revoked_between_steps():
    w = worker(max_evaluations_per_step=4, max_catch_up="10m")
    w.handle(LANE, 0, 0, SampleBatch.from_series([(DENSE, [(T0, 1.0)])]))
    w.handle(LANE, 0, 1, SampleBatch.from_series([(DENSE, [(T0 + 3_600_000, 1.0)])]))
    sent = []

    async def send(out: Outgoing) -> None:
        sent.append(out)
        w.forget(LANE, {0})  # revoked while the loop is running

    assert await w.catch_up(LANE, 0, send) == 1 and len(sent) == 1


def test_the_worker_counts_what_its_limits_drop():
    w = worker(max_series_per_partition=50)
    w.handle(LANE, 3, 0, many(T0, 60))
    w.handle(LANE, 3, 1, SampleBatch.from_series([(DENSE[:1] + (("instance", "i0"), ("job", "api")), [(T0 + 15_000 + i, 1.0) for i in range(10)])]))
    registry = w.metrics.registry
    assert registry.get_sample_value("headroom_worker_series_limit_series_total") == 10
    assert registry.get_sample_value("headroom_worker_too_dense_samples_total") == 9


def test_a_restore_catches_up_every_step_with_outputs_dropped():
    lanes = engines(max_evaluations_per_step=4, max_catch_up="10m")
    lanes.ingest(0, SampleBatch.from_series([(DENSE, [(T0, 1.0)])]))
    assert lanes.ingest(0, SampleBatch.from_series([(DENSE, [(T0 + 3_600_000, 1.0)])])).engine.pending
    lanes.catch_up(0)
    assert not lanes.engines[0].pending


def test_a_skipped_jump_is_logged_with_its_span(caplog):
    lanes = engines(max_catch_up="1h")
    report = LimitReport(CollectorRegistry(), lanes.settings)
    with caplog.at_level(logging.WARNING, logger="headroom.limits"):
        report.record(LANE, 1, lanes.ingest(1, SampleBatch.from_series([(DENSE, [(0, 1.0)]), (DENSE[:1], [(T0, 1.0)])])))
    (line,) = [r.getMessage() for r in caplog.records]
    assert "evaluations from 1970-01-01T00:00:00+00:00 to 2023-11-14T21:13:15+00:00" in line
    assert "HEADROOM_MAX_CATCH_UP=1h" in line and line.endswith(f"; {(T0 - 3_600_000) // 15_000} evaluations skipped since the last such line")


def test_limits_come_from_the_environment_and_bad_values_stop_the_start(monkeypatch):
    monkeypatch.setenv("HEADROOM_SERIES_MIN_INTERVAL", "250ms")
    monkeypatch.setenv("HEADROOM_MAX_SERIES_PER_PARTITION", "1000")
    monkeypatch.setenv("HEADROOM_MAX_EVALUATIONS_PER_STEP", "4")
    monkeypatch.setenv("HEADROOM_MAX_CATCH_UP", "30m")
    assert Settings().engine_limits() == {"min_interval_ms": 250, "max_series": 1000, "max_evaluations_per_step": 4,
                                          "max_catch_up_ms": 1_800_000}
    monkeypatch.setenv("HEADROOM_MAX_CATCH_UP", "an hour")
    with pytest.raises(pydantic.ValidationError, match="max_catch_up"):
        Settings()
    monkeypatch.setenv("HEADROOM_MAX_CATCH_UP", "1h")
    monkeypatch.setenv("HEADROOM_MAX_EVALUATIONS_PER_STEP", "0")
    with pytest.raises(pydantic.ValidationError, match="max_evaluations_per_step"):
        Settings()


def test_the_worker_builds_its_engines_with_the_limits():
    lanes = engines(series_min_interval="5s", max_series_per_partition=7, max_evaluations_per_step=3, max_catch_up="2m")
    rules = lanes.start_empty(0).rules
    assert (rules.store.min_interval_ms, rules.store.max_series, rules.max_evaluations_per_step, rules.max_catch_up_ms) == (
        5000, 7, 3, 120_000)
