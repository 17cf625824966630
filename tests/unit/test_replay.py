"""Replaying recordings: OpenMetrics in, the workers' alerts out, in event time."""

from __future__ import annotations

import math

import pytest

from detector.wire.openmetrics import OpenMetricsError, read_samples
from detector.replay import Replay, read_openmetrics
from detector.partition import DEFAULT_SCORE_THRESHOLD
from detector.rules import load_rule_files
from simulator.runbook import RunbookSimulator
from simulator.serve import render_openmetrics

START = 1_700_000_000_000


def recording(scenario: str = "backpressure", minutes: int = 20) -> str:
    sim = RunbookSimulator(scenario=scenario, seed=3, start_ms=START)
    return render_openmetrics((START + i * 15_000, sim.sample(START + i * 15_000)) for i in range(minutes * 4 + 1))


def replay(text: str, rules: tuple[str, ...] = ("backpressure",), partitions: int = 8, detectors: bool = False) -> list[dict]:
    """Events of a replay; by default rules only (``detectors`` adds anomaly scores and forecasts)."""
    runner = Replay(load_rule_files(rules), partitions=partitions, scores=detectors, forecasts=detectors)
    return list(runner.run(read_openmetrics(text)))


def test_the_same_recording_gives_the_same_events():
    text = recording()
    events = replay(text, detectors=True)
    assert {"alert", "forecast"} <= {e["kind"] for e in events}
    assert events == replay(text, detectors=True)


def test_the_number_of_partitions_does_not_change_the_events():
    text = recording()
    events = replay(text, partitions=1, detectors=True)
    assert sum(e["kind"] == "forecast" for e in events) >= 5
    assert events == replay(text, partitions=8, detectors=True)


def test_replay_writes_forecasts_once_per_series_and_slot_when_they_change():
    events = replay(recording("ramp-queue-15m", minutes=60), rules=("backpressure", "backpressure-levels"), detectors=True)
    forecasts = [e for e in events if e["kind"] == "forecast"]
    orders = [e for e in forecasts if e["labels"]["__name__"] == "pgmq_queue_depth" and e["labels"]["queue_name"] == "orders"]
    assert len(orders) >= 5
    slots = [(tuple(sorted(e["labels"].items())), e["t"] // 15_000) for e in forecasts]
    assert len(slots) == len(set(slots))
    assert all(a["t"] <= b["t"] for a, b in zip(orders, orders[1:]))
    head = orders[0]
    assert head["bound_name"] == "pgmq_queue_max_depth" and head["direction"] == "up" and head["eta_seconds"] > 0
    assert head["eta_low_seconds"] <= head["eta_seconds"] <= (head["eta_high_seconds"] or math.inf)
    # the forecast says "firing" no later than the early warning's transition says so
    fired = next(e for e in events if e["kind"] == "alert" and e["rule"] == "SaturationForecast" and e["state"] == "firing")
    assert next(e["t"] for e in orders if e["state"] == "firing") == fired["eval_time"]


def test_replay_carries_early_warnings_anomaly_alerts_and_scores():
    events = replay(recording(minutes=30), rules=("backpressure", "anomaly"), detectors=True)
    alerts = [e for e in events if e["kind"] == "alert"]
    queue = [e for e in alerts if e["rule"] == "SaturationForecast" and e["labels"].get("queue_name") == "orders"]
    states = [e["state"] for e in queue]
    # A warning whose rise stops goes back to inactive and must be confirmed again.
    assert states[0] == "pending" and "firing" in states and states[-1] == "inactive"
    summary = queue[0]["annotations"]["summary"]
    assert "pgmq_queue_max_depth (10000)" in summary and "has reached" not in summary  # the queue peaks at 92%
    assert any(e["rule"] == "AnomalousSeries" and e["state"] == "firing" for e in alerts)
    scores = [e for e in events if e["kind"] == "score"]
    assert scores and all(e["score"] >= DEFAULT_SCORE_THRESHOLD for e in scores)


def test_the_backpressure_incident_fires_every_runbook_alert_and_the_calm_one_none():
    events = replay(recording())
    assert {e["rule"] for e in events if e["state"] == "firing"} == {
        "TaskerCircuitBreakerOpen", "TaskerAPIRejectionsHigh", "TaskerCommandChannelSaturated", "TaskerPGMQQueueDepthHigh",
        "TaskerWorkerClaimRefusalsHigh", "TaskerHandlerWaitTimeHigh", "TaskerDomainEventsDropped",
    }  # fmt: skip
    breaker = [(e["previous"], e["state"]) for e in events if e["rule"] == "TaskerCircuitBreakerOpen"]
    assert breaker == [("inactive", "pending"), ("pending", "firing"), ("firing", "inactive")]
    assert all(e["eval_time"] % 15_000 == 0 for e in events)
    assert replay(recording("calm")) == []


def test_cross_target_rules_replay_in_the_global_lane(tmp_path):
    rules = tmp_path / "r.yml"
    rules.write_text(
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: AnyWorkerRefusing\n        expr: sum(rate(worker_claim_refusals_total[5m])) > 0.2\n        for: 1m\n"
    )
    events = replay(recording(), rules=(str(rules),))
    assert [(e["state"], e["labels"]) for e in events][:2] == [
        ("pending", {"alertname": "AnyWorkerRefusing"}), ("firing", {"alertname": "AnyWorkerRefusing"}),
    ]  # fmt: skip


def test_openmetrics_lines_with_escapes_exemplars_and_special_values():
    lines = [
        "# HELP x something",
        "# TYPE x counter",
        'x_total{path="/a\\\\b",q="say \\"hi\\"\\n",empty=""} 2.5 1700000000.250 # {trace_id="1"} 1 1700000000',
        "x_total +Inf 1700000001",
        "# EOF",
        "after_eof 1 1",
    ]
    (a, b) = list(read_samples(lines))
    assert a == ((("__name__", "x_total"), ("path", "/a\\b"), ("q", 'say "hi"\n')), 1_700_000_000_250, 2.5)
    assert b[0] == (("__name__", "x_total"),) and math.isinf(b[2])


@pytest.mark.parametrize(
    ("line", "problem"),
    [("up 1", "expected a value and a timestamp"), ('up{job="a",job="b"} 1 2', "repeated"), ('up{job=a} 1 2', "malformed"), ("1up 1 2", "no metric name")],
)
def test_bad_lines_are_refused_with_their_line_number(line, problem):
    with pytest.raises(OpenMetricsError, match=rf"line 2: .*{problem}"):
        list(read_samples(["# TYPE up gauge", line]))


def test_series_without_job_or_instance_are_combined_as_one_engine_would(tmp_path):
    """Series from a sender that adds neither ``job`` nor ``instance`` (recording-rule outputs
    forwarded by another Prometheus, a collector's own metrics) all go to one partition: a rule the
    plan keeps in the partitions because it groups by the target's labels (``by (job, instance)``,
    ``without (pod)``) must still see every one of them, as a single engine would."""
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: g\n  rules:\n"
        "  - alert: TooManyInTotal\n    expr: sum by (job, instance) (jobs_waiting) > 10\n"
        "  - alert: NamespaceBusy\n    expr: sum without (pod) (jobs_waiting) > 10\n"
    )
    lines = ["# TYPE jobs_waiting gauge"]
    for t in range(0, 300, 15):
        for pod in range(8):
            lines.append(f'jobs_waiting{{namespace="ns",pod="p{pod}"}} 2 {START // 1000 + t}')
    lines.append("# EOF")
    text = "\n".join(lines) + "\n"
    groups = load_rule_files([str(rules)])
    alone = list(Replay(groups, partitions=1, scores=False, forecasts=False).run(read_openmetrics(text)))
    spread = list(Replay(groups, partitions=8, scores=False, forecasts=False).run(read_openmetrics(text)))
    assert {e["rule"] for e in alone if e.get("state") == "firing"} == {"TooManyInTotal", "NamespaceBusy"}
    assert spread == alone
