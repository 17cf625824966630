"""bench.promtool_replay writes samples and label sets as promtool (and Headroom's own parser) read them."""

from __future__ import annotations

import math

from bench.promtool_replay import AlertAt, alert_checks, recorded_checks, selector, series_notation
from detector.rule_tests import parse_series, parse_series_values


def test_samples_land_at_their_own_steps_with_gaps_between():
    stamps = [3_000, 18_000, 19_000, 60_000]
    values = [1.5, -2.0, float("nan"), 1e300]
    expanded = parse_series_values(series_notation(stamps, values, 1_000))
    assert len(expanded) == 61
    present = {i: v for i, v in enumerate(expanded) if v is not None}
    assert sorted(present) == [3, 18, 19, 60]
    assert present[3] == 1.5 and present[18] == -2.0 and math.isnan(present[19]) and present[60] == 1e300


def test_label_values_with_quotes_and_backslashes_read_back():
    labels = (("__name__", "x"), ("a", 'say "hi"\\now'), ("path", "/v1/tasks"))
    assert parse_series(selector(labels)) == labels


def test_checks_name_every_rule_at_every_tick_and_pending_only_in_alerts():
    firing = AlertAt("High", (("alertname", "High"), ("job", "a")), (("summary", "s"),), "firing", 15_000)
    pending = AlertAt("Low", (("alertname", "Low"), ("job", "a")), (), "pending", 30_000)
    rule_tests, expr_tests = alert_checks({30_000: [firing, pending]}, [15_000, 30_000], ["High", "Low"])
    assert [(c["eval_time"], c["alertname"], c["exp_alerts"]) for c in rule_tests] == [
        ("15000ms", "High", []), ("15000ms", "Low", []),
        ("30000ms", "High", [{"exp_labels": {"job": "a"}, "exp_annotations": {"summary": "s"}}]), ("30000ms", "Low", []),
    ]
    at_30 = {c["expr"]: c["exp_samples"] for c in expr_tests if c["eval_time"] == "30000ms"}
    assert at_30["ALERTS"] == [
        {"labels": 'ALERTS{alertname="High", alertstate="firing", job="a"}', "value": 1},
        {"labels": 'ALERTS{alertname="Low", alertstate="pending", job="a"}', "value": 1},
    ]
    assert [s["value"] for s in at_30["ALERTS_FOR_STATE"]] == [15.0, 30.0]


def test_recording_rules_are_checked_by_name_rounded_as_promtool_rounds():
    rows = [("r:x", (("job", "b"),), 0.3), ("r:x", (("job", "a"),), 1.0), ("r:y", (("job", "a"),), 2.0)]
    checks = recorded_checks({15_000: rows}, [0, 15_000], ["r:x"])
    query = 'round({__name__="r:x"}, 1e-06)'
    assert checks == [
        {"expr": query, "eval_time": "0ms", "exp_samples": []},
        {"expr": query, "eval_time": "15000ms", "exp_samples": [
            {"labels": '{job="a"}', "value": 1.0}, {"labels": '{job="b"}', "value": 0.3}]},
    ]
