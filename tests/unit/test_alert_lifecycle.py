"""The alert lifecycle on event time, step by step, as Prometheus's ``rules/alerting.go``.

Rules are stepped through a :class:`RuleEngine` by feeding samples one
evaluation interval at a time. The expectations follow Prometheus 2.42:

* a result sample makes an alert pending (``active_at`` = t); it fires once
  ``t - active_at >= for``;
* missing from the result, a pending alert is dropped, a firing one resolved,
  unless ``keep_firing_for`` (counted from the first evaluation it was
  missing) holds it firing;
* a resolved alert stays 15 minutes (deleted once ``t - resolved_at > 15m``);
* an alert is sent when ``resolved_at > last_sent_at`` or
  ``last_sent_at + resend_delay < t`` (strictly), never while pending, with
  ``ends_at = t + 4 * max(interval, resend_delay)`` (``resolved_at`` once
  resolved) and ``starts_at = fired_at``.

``test_same_alerts_as_promtool_at_every_evaluation`` runs one set of rules
through ``promtool test rules`` and through the engine.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Sequence

import pytest
import yaml

from detector.output.notify import alertmanager_alert
from detector.wire.batch import SampleBatch
from detector.durations import parse_duration
from detector.promql import compile_expr
from detector.rules.alerting import FIRING, INACTIVE, PENDING, AlertingRule
from detector.rules.engine import EngineOutput, RuleEngine
from detector.rules.group import RuleGroup
from detector.output.templates import Template

MIN = 60_000
STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
X_A = (("__name__", "x"), ("job", "a"))
X_B = (("__name__", "x"), ("job", "b"))


def rule(name: str, expr: str, *, for_ms: int = 0, keep_ms: int = 0, labels: dict | None = None,
         annotations: dict | None = None, external: dict | None = None) -> AlertingRule:
    return AlertingRule(
        name=name,
        expr=compile_expr(expr),
        expr_text=expr,
        for_ms=for_ms,
        keep_firing_for_ms=keep_ms,
        labels=tuple((k, Template.parse(v)) for k, v in sorted((labels or {}).items())),
        annotations=tuple((k, Template.parse(v)) for k, v in sorted((annotations or {}).items())),
        group="g",
        source="inline",
        external_labels=external or {},
    )


class Run:
    """Feeds series (one value per interval, None for no sample) and keeps each evaluation's output."""

    def __init__(self, rules: Sequence[AlertingRule], interval_ms: int = MIN, *, resend_delay_ms: int = MIN,
                 limit: int = 0) -> None:
        self.interval = interval_ms
        self.engine = RuleEngine([RuleGroup("g", "inline", interval_ms, tuple(rules), limit)],
                                 resend_delay_ms=resend_delay_ms)
        self.at: dict[int, EngineOutput] = {}
        self.kept_at: dict[int, list] = {}  # (labels, state, annotations) of every alert kept after t

    def feed(self, series: dict[tuple, Sequence[float | None]], steps: int | None = None) -> Run:
        steps = steps or max(len(v) for v in series.values())
        for i in range(steps):
            t = i * self.interval
            batch = SampleBatch.from_series(
                [(labels, [(t, values[i])]) for labels, values in series.items() if i < len(values) and values[i] is not None]
            )
            out, more = self.engine.ingest(batch), self.engine.advance_to(t)
            out.transitions += more.transitions
            out.notifications += more.notifications
            out.errors += more.errors
            out.evaluations += more.evaluations
            self.at[t] = out
            self.kept_at[t] = [(a.labels, a.state, a.annotations) for a in self.engine.active_alerts()]
        return self

    def firing(self, t: int, name: str | None = None) -> set:
        """Label sets of the alerts firing after the evaluation at t (of one rule, if named)."""
        return {
            labels for labels, state, _ in self.kept_at[t]
            if state == FIRING and (name is None or dict(labels)["alertname"] == name)
        }

    def transitions(self) -> list[tuple[int, str, str]]:
        return [(tr.eval_time, tr.previous, tr.state) for out in self.at.values() for tr in out.transitions]

    def sent(self) -> list[tuple[int, int, int]]:
        """(evaluation time, starts_at, ends_at) of every notification."""
        return [(t, n.starts_at, n.ends_at) for t, out in self.at.items() for n in out.notifications]

    def alerts(self) -> list:
        return self.engine.active_alerts()


def held(value: float, steps: int) -> list[float]:
    return [value] * steps


# --- states -------------------------------------------------------------------------------


def test_alert_is_pending_first_and_fires_once_for_has_passed():
    run = Run([rule("High", "x > 0", for_ms=2 * MIN)]).feed({X_A: held(1, 4)})
    assert run.transitions() == [(0, INACTIVE, PENDING), (2 * MIN, PENDING, FIRING)]
    [alert] = run.alerts()
    assert (alert.active_at, alert.fired_at, alert.state) == (0, 2 * MIN, FIRING)


def test_alert_without_for_fires_at_its_first_evaluation():
    run = Run([rule("High", "x > 0")]).feed({X_A: held(1, 2)})
    assert run.transitions() == [(0, INACTIVE, FIRING)]


def test_for_that_is_not_a_multiple_of_the_interval_fires_at_the_next_evaluation():
    run = Run([rule("High", "x > 0", for_ms=90_000)]).feed({X_A: held(1, 4)})
    assert run.transitions() == [(0, INACTIVE, PENDING), (2 * MIN, PENDING, FIRING)]


def test_firing_alert_is_resolved_when_the_condition_goes_away():
    run = Run([rule("High", "x > 0", for_ms=MIN)]).feed({X_A: [1, 1, 1, 0, 0]})
    assert run.transitions() == [(0, INACTIVE, PENDING), (MIN, PENDING, FIRING), (3 * MIN, FIRING, INACTIVE)]
    [alert] = run.alerts()
    assert (alert.state, alert.resolved_at, alert.fired_at) == (INACTIVE, 3 * MIN, MIN)


def test_pending_alert_is_dropped_when_the_condition_goes_away_before_for():
    run = Run([rule("High", "x > 0", for_ms=5 * MIN)]).feed({X_A: [1, 1, 0, 0]})
    assert run.transitions() == [(0, INACTIVE, PENDING), (2 * MIN, PENDING, INACTIVE)]
    assert run.alerts() == []
    assert run.sent() == []


def test_alert_that_comes_back_after_being_dropped_starts_pending_again():
    run = Run([rule("High", "x > 0", for_ms=2 * MIN)]).feed({X_A: [1, 0, 1, 1, 1]})
    assert run.transitions() == [
        (0, INACTIVE, PENDING), (MIN, PENDING, INACTIVE), (2 * MIN, INACTIVE, PENDING), (4 * MIN, PENDING, FIRING)]


def test_resolved_alert_that_comes_back_is_a_new_alert():
    run = Run([rule("High", "x > 0", for_ms=MIN)]).feed({X_A: [1, 1, 0, 1, 1]})
    assert run.transitions()[-2:] == [(3 * MIN, INACTIVE, PENDING), (4 * MIN, PENDING, FIRING)]
    [alert] = run.alerts()
    assert (alert.active_at, alert.fired_at, alert.resolved_at) == (3 * MIN, 4 * MIN, None)


def test_keep_firing_for_holds_the_alert_firing_after_the_condition_went_away():
    run = Run([rule("High", "x > 0", keep_ms=2 * MIN)]).feed({X_A: [1, 1, 0, 0, 0, 0]})
    # Missing since 2m: kept while t - 2m < 2m, resolved at 4m.
    assert run.transitions() == [(0, INACTIVE, FIRING), (4 * MIN, FIRING, INACTIVE)]
    assert [bool(run.firing(t)) for t in range(0, 6 * MIN, MIN)] == [True, True, True, True, False, False]


def test_keep_firing_for_restarts_when_the_condition_returns():
    run = Run([rule("High", "x > 0", keep_ms=2 * MIN)]).feed({X_A: [1, 0, 1, 0, 0, 0, 0]})
    assert run.transitions() == [(0, INACTIVE, FIRING), (5 * MIN, FIRING, INACTIVE)]


def test_keep_firing_for_does_not_hold_a_pending_alert():
    run = Run([rule("High", "x > 0", for_ms=5 * MIN, keep_ms=10 * MIN)]).feed({X_A: [1, 0]})
    assert run.transitions() == [(0, INACTIVE, PENDING), (MIN, PENDING, INACTIVE)]


def test_series_that_stops_reporting_keeps_the_alert_for_the_lookback_then_resolves():
    # Last sample at 1m; an instant selector finds it up to 6m (5m lookback, closed).
    run = Run([rule("High", "x > 0")]).feed({X_A: [1, 1], X_B: held(0, 9)})
    assert run.transitions() == [(0, INACTIVE, FIRING), (7 * MIN, FIRING, INACTIVE)]


def test_stale_marker_resolves_the_alert_at_once():
    run = Run([rule("High", "x > 0")]).feed({X_A: [1, 1, STALE, None], X_B: held(0, 4)})
    assert run.transitions() == [(0, INACTIVE, FIRING), (2 * MIN, FIRING, INACTIVE)]


def test_resolved_alert_is_kept_fifteen_minutes_then_forgotten():
    values = [1, 0] + [None] * 17
    run = Run([rule("High", "x > 0")]).feed({X_A: values, X_B: held(0, len(values))})
    resolved = MIN
    kept = [t for t, alerts in run.kept_at.items() if alerts]
    assert [state for _, state, _ in run.kept_at[resolved]] == [INACTIVE]
    # Deleted at the first evaluation where t - resolved_at > 15m.
    assert kept == list(range(0, resolved + 15 * MIN + 1, MIN))


def test_evaluation_times_are_multiples_of_the_interval_from_the_first_sample():
    engine = RuleEngine([RuleGroup("g", "inline", 15_000, (rule("High", "x > 0"),))])
    out = engine.ingest(SampleBatch.from_series([(X_A, [(7_000, 1.0), (31_000, 1.0)])]))
    assert (out.evaluations, [t.eval_time for t in out.transitions]) == (2, [15_000])  # at 15 s and 30 s
    assert engine.advance_to(45_000).evaluations == 1
    assert engine.advance_to(45_000).evaluations == 0  # each tick once


# --- notifications -----------------------------------------------------------------------


def test_firing_alert_is_sent_when_it_fires_and_never_while_pending():
    run = Run([rule("High", "x > 0", for_ms=2 * MIN)]).feed({X_A: held(1, 3)})
    assert [t for t, _, _ in run.sent()] == [2 * MIN]


def test_firing_alert_is_resent_only_once_resend_delay_has_strictly_passed():
    # Sent at 0; at 1m, 0 + 1m < 1m is false; at 2m it is true.
    run = Run([rule("High", "x > 0")]).feed({X_A: held(1, 7)})
    assert [t for t, _, _ in run.sent()] == [0, 2 * MIN, 4 * MIN, 6 * MIN]


def test_resend_delay_is_independent_of_a_shorter_interval():
    run = Run([rule("High", "x > 0")], interval_ms=15_000, resend_delay_ms=MIN).feed({X_A: held(1, 12)})
    assert [t for t, _, _ in run.sent()] == [0, 75_000, 150_000]


def test_firing_notification_starts_at_fired_at_and_ends_four_intervals_ahead():
    run = Run([rule("High", "x > 0", for_ms=MIN)]).feed({X_A: held(1, 4)})
    assert run.sent() == [(MIN, MIN, MIN + 4 * MIN), (3 * MIN, MIN, 3 * MIN + 4 * MIN)]


def test_ends_at_uses_the_interval_when_it_is_longer_than_the_resend_delay():
    run = Run([rule("High", "x > 0")], interval_ms=5 * MIN, resend_delay_ms=MIN).feed({X_A: held(1, 1)})
    assert run.sent() == [(0, 0, 20 * MIN)]


def test_ends_at_uses_the_resend_delay_when_it_is_longer_than_the_interval():
    run = Run([rule("High", "x > 0")], interval_ms=15_000, resend_delay_ms=2 * MIN).feed({X_A: held(1, 1)})
    assert run.sent() == [(0, 0, 8 * MIN)]


def test_resolved_alert_is_sent_at_once_with_ends_at_the_resolve_time():
    # Fired and sent at 1m; resolved at 2m, before a resend would be due.
    run = Run([rule("High", "x > 0", for_ms=MIN)]).feed({X_A: [1, 1, 0], X_B: held(0, 3)})
    assert run.sent() == [(MIN, MIN, 5 * MIN), (2 * MIN, MIN, 2 * MIN)]


def test_resolved_alert_is_resent_like_a_firing_one_while_it_is_kept():
    values = [1, 0] + [None] * 18
    run = Run([rule("High", "x > 0")]).feed({X_A: values, X_B: held(0, len(values))})
    resolved = MIN
    resolved_sends = [t for t, _, ends in run.sent() if ends == resolved]
    # At once, then whenever last sent + 1m < t, until deleted once t - resolved > 15m.
    assert resolved_sends == [resolved + k * 2 * MIN for k in range(8)]
    assert run.sent()[0] == (0, 0, 4 * MIN)


def test_every_notification_carries_the_alert_labels_annotations_and_expression():
    r = rule("High", "x > 0", labels={"severity": "page"}, annotations={"summary": "{{ $labels.job }} is {{ $value }}"})
    run = Run([r]).feed({X_A: held(3, 1)})
    [n] = run.at[0].notifications
    assert n.labels == (("alertname", "High"), ("job", "a"), ("severity", "page"))
    assert n.annotations == (("summary", "a is 3"),)
    assert n.expr == "x > 0"
    am = alertmanager_alert(n, "http://headroom")
    assert (am["startsAt"], am["endsAt"]) == ("1970-01-01T00:00:00.000Z", "1970-01-01T00:04:00.000Z")
    assert am["generatorURL"].startswith("http://headroom/graph?g0.expr=x+%3E+0")


# --- identity and labels ---------------------------------------------------------------------


def test_alert_labels_are_the_sample_labels_without_name_plus_rule_labels_and_alertname():
    r = rule("High", "x > 0", labels={"severity": "critical", "alertname": "Other"})
    series = (("__name__", "x"), ("instance", "h:1"), ("job", "a"), ("severity", "low"))
    run = Run([r]).feed({series: [1]})
    [alert] = run.alerts()
    assert alert.labels == (("alertname", "High"), ("instance", "h:1"), ("job", "a"), ("severity", "critical"))


def test_one_alert_per_result_series():
    run = Run([rule("High", "x > 0")]).feed({X_A: [1], X_B: [2]})
    assert run.firing(0) == {(("alertname", "High"), ("job", "a")), (("alertname", "High"), ("job", "b"))}


def test_rule_labels_are_templated_per_sample():
    r = rule("High", "x > 0", labels={"host": "{{ $labels.instance | stripPort }}", "team": "{{ $labels.team }}"})
    series = (("__name__", "x"), ("instance", "db1:9100"), ("team", "ops"))
    other = (("__name__", "x"), ("instance", "db2:9100"))
    run = Run([r]).feed({series: [1], other: [1]})
    labels = {alert.labels for alert in run.alerts()}
    # An empty templated value removes the label, as Prometheus's label builder does.
    assert labels == {
        (("alertname", "High"), ("host", "db1"), ("instance", "db1:9100"), ("team", "ops")),
        (("alertname", "High"), ("host", "db2"), ("instance", "db2:9100")),
    }


def test_label_templated_from_the_value_makes_a_new_alert_when_the_value_changes():
    r = rule("High", "x > 0", for_ms=MIN, labels={"level": "{{ $value }}"})
    run = Run([r]).feed({X_A: [1, 2, 2]})
    assert [(t, prev, state) for t, prev, state in run.transitions()] == [
        (0, INACTIVE, PENDING), (MIN, INACTIVE, PENDING), (MIN, PENDING, INACTIVE), (2 * MIN, PENDING, FIRING)]
    [alert] = run.alerts()
    assert dict(alert.labels)["level"] == "2" and alert.active_at == MIN


def test_annotations_and_value_follow_the_latest_evaluation():
    r = rule("High", "x > 0", annotations={"summary": "at {{ $value }}"})
    run = Run([r]).feed({X_A: [1, 5, 7]})
    [alert] = run.alerts()
    assert (alert.value, alert.annotations) == (7.0, (("summary", "at 7"),))
    assert alert.active_at == 0 and len(run.transitions()) == 1


def test_external_labels_reach_templates_but_not_alert_labels():
    r = rule("High", "x > 0", annotations={"where": "{{ $externalLabels.cluster }}"}, external={"cluster": "eu1"})
    [alert] = Run([r]).feed({X_A: [1]}).alerts()
    assert alert.annotations == (("where", "eu1"),)
    assert "cluster" not in dict(alert.labels)


def test_scalar_expression_makes_one_alert_with_only_the_rule_labels():
    r = rule("Always", "1 + 1", labels={"severity": "info"})
    [alert] = Run([r]).feed({X_A: [0]}).alerts()
    assert (alert.labels, alert.value, alert.state) == ((("alertname", "Always"), ("severity", "info")), 2.0, FIRING)


def test_results_with_the_same_labels_after_dropping_the_name_are_an_evaluation_error():
    r = rule("Dup", '{__name__=~"x|y", job="a"} > 0')
    run = Run([r]).feed({X_A: [1], (("__name__", "y"), ("job", "a")): [1]})
    [error] = run.at[0].errors
    assert "same labelset after applying alert labels" in error and "'Dup'" in error
    assert run.alerts() == [] and run.engine.stats.evaluation_errors == 1


def test_failed_evaluation_leaves_existing_alerts_as_they_were():
    r = rule("Dup", '{__name__=~"x|y", job="a"} > 0', for_ms=MIN)
    run = Run([r]).feed({X_A: [1, 1, 1, 1], (("__name__", "y"), ("job", "a")): [None, None, 1, None]})
    assert run.at[2 * MIN].errors and run.at[2 * MIN].transitions == [] and run.at[2 * MIN].notifications == []
    [alert] = run.alerts()
    assert (alert.state, alert.fired_at, alert.resolved_at) == (FIRING, MIN, None)


# --- limit -------------------------------------------------------------------------------------


def test_group_limit_exceeded_fails_the_rule_and_drops_its_alerts():
    run = Run([rule("High", "x > 0", for_ms=MIN)], limit=1).feed({X_A: [1, 1, 1], X_B: [1, 1, 1]})
    assert all("exceeded limit of 1 with 2 alerts" in run.at[t].errors[0] for t in (0, MIN, 2 * MIN))
    assert run.alerts() == [] and run.sent() == []


def test_group_limit_counts_pending_and_firing_alerts_only():
    # A resolved alert kept for re-sending does not count toward the limit.
    run = Run([rule("High", "x > 0")], limit=1).feed({X_A: [1, 0, 0], X_B: [0, 1, 1]})
    assert all(not run.at[t].errors for t in (0, MIN, 2 * MIN))
    assert {a.state for a in run.alerts()} == {FIRING, INACTIVE}


# --- promtool cross-check -------------------------------------------------------------------------

PROMTOOL_RULES = [
    {"alert": "ForTwoMinutes", "expr": "x > 0", "for": "2m", "labels": {"severity": "page"},
     "annotations": {"summary": "{{ $labels.job }} at {{ $value }}"}},
    {"alert": "KeepFiring", "expr": "x > 0", "keep_firing_for": "2m"},
    {"alert": "Flapping", "expr": "y > 0", "for": "1m", "keep_firing_for": "1m"},
    {"alert": "Stopped", "expr": "z > 0"},
    {"alert": "Stale", "expr": "w > 0"},
    {"alert": "Scalar", "expr": "1"},
]
PROMTOOL_SERIES = {
    (("__name__", "x"), ("job", "a")): [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
    (("__name__", "y"), ("job", "a")): [0, 1, 1, 0, 1, 0, 0, 0, 0, 0],
    (("__name__", "z"), ("job", "a")): [1, 1, None, None, None, None, None, None, None, None],
    (("__name__", "w"), ("job", "a")): [1, 1, STALE, None, None, None, None, None, None, None],
}
# Firing alerts (alertname -> eval minutes), derived from the semantics in the module docstring.
PROMTOOL_FIRING = {
    "ForTwoMinutes": [2, 3],  # pending at 0, fires at 2m, resolved at 4m
    "KeepFiring": [0, 1, 2, 3, 4, 5],  # missing from 4m, kept while t - 4m < 2m
    "Flapping": [2, 3, 4, 5],  # pending at 1m, fires at 2m, kept at 3m, back at 4m, kept at 5m
    "Stopped": [0, 1, 2, 3, 4, 5, 6],  # last sample at 1m is found until 6m
    "Stale": [0, 1],  # the stale marker at 2m ends it
    "Scalar": list(range(10)),
}


def _promtool_value(v: float | None) -> str:
    if v is None:
        return "_"
    return "stale" if struct.pack("<d", v) == struct.pack("<d", STALE) else repr(float(v))


def _expected_alerts(name: str, minute: int) -> list[dict]:
    if minute not in PROMTOOL_FIRING[name]:
        return []
    labels = {} if name == "Scalar" else {"job": "a"}
    rule_spec = next(r for r in PROMTOOL_RULES if r["alert"] == name)
    labels.update(rule_spec.get("labels", {}))
    alert = {"exp_labels": labels}
    if name == "ForTwoMinutes":
        alert["exp_annotations"] = {"summary": "a at 1"}
    return [alert]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) is not installed")
def test_same_alerts_as_promtool_at_every_evaluation(tmp_path):
    steps = 10
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": PROMTOOL_RULES}]}))
    checks = [
        {"eval_time": f"{m}m", "alertname": name, "exp_alerts": _expected_alerts(name, m)}
        for name in PROMTOOL_FIRING
        for m in range(steps)
    ]
    series = [
        {"series": "%s{job=\"a\"}" % dict(labels)["__name__"], "values": " ".join(map(_promtool_value, values))}
        for labels, values in PROMTOOL_SERIES.items()
    ]
    test = {"interval": "1m", "input_series": series, "alert_rule_test": checks}
    (tmp_path / "test.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [test]})
    )
    run = subprocess.run(["promtool", "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr

    rules = [
        rule(spec["alert"], spec["expr"], for_ms=parse_duration(spec.get("for", "0s")),
             keep_ms=parse_duration(spec.get("keep_firing_for", "0s")), labels=spec.get("labels"),
             annotations=spec.get("annotations"))
        for spec in PROMTOOL_RULES
    ]
    ours = Run(rules).feed(PROMTOOL_SERIES, steps=steps)
    for name in PROMTOOL_FIRING:
        for m in range(steps):
            expected = {
                tuple(sorted({**a["exp_labels"], "alertname": name}.items())) for a in _expected_alerts(name, m)
            }
            assert ours.firing(m * MIN, name) == expected, (name, m)
    for m in PROMTOOL_FIRING["ForTwoMinutes"]:
        [annotations] = [a for labels, _, a in ours.kept_at[m * MIN] if dict(labels)["alertname"] == "ForTwoMinutes"]
        assert annotations == (("summary", "a at 1"),)
