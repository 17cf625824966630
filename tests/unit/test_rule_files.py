"""Rule files: the shipped pack, validation reported all at once, and recording rules.

Expectations about what a rule file means come from Prometheus 2.42 (its
``rulefmt`` checks and ``rules/manager.go``); where it matters, the same file
is run through ``promtool``.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from detector.wire.batch import SampleBatch
from detector.errors import RuleError
from detector.promql import EvalContext, compile_expr
from detector.rules.alerting import FIRING, AlertingRule
from detector.rules.engine import RuleEngine
from detector.rules.files import RULE_PACKS, load_rule_files, resolve_rule_file
from detector.rules.recording import RecordingRule

MIN = 60_000
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")


def write(tmp_path: Path, text: str, name: str = "rules.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(*paths) -> list[str]:
    with pytest.raises(RuleError) as err:
        load_rule_files(list(paths))
    return err.value.problems


def ingest(engine: RuleEngine, t: int, series: dict[tuple, float]):
    return engine.ingest(SampleBatch.from_series([(labels, [(t, v)]) for labels, v in series.items()]))


# --- the shipped pack ------------------------------------------------------------------------

PACK_RULES = {
    "TaskerCircuitBreakerOpen": ("api_circuit_breaker_state == 2", 30_000),
    "TaskerAPIRejectionsHigh": ("rate(api_requests_rejected_total[5m]) > 0.1", 2 * MIN),
    "TaskerCommandChannelSaturated": ("orchestration_command_channel_saturation > 0.8", MIN),
    "TaskerPGMQQueueDepthHigh": ("pgmq_queue_depth / pgmq_queue_max_depth > 0.8", 5 * MIN),
    "TaskerWorkerClaimRefusalsHigh": ("rate(worker_claim_refusals_total[5m]) > 0.2", 2 * MIN),
    "TaskerHandlerWaitTimeHigh": ("histogram_quantile(0.99, worker_handler_semaphore_wait_ms_bucket) > 2000", 2 * MIN),
    "TaskerDomainEventsDropped": ("rate(domain_events_dropped_total[5m]) > 1", 5 * MIN),
}


def test_backpressure_pack_loads_by_name_with_every_rule():
    [group] = load_rule_files(["backpressure"])
    assert (group.name, group.interval_ms, group.limit) == ("tasker_backpressure", 15_000, 0)
    assert Path(group.source) == RULE_PACKS / "backpressure.yml"
    assert {r.name: (r.expr_text, r.for_ms) for r in group.rules} == PACK_RULES
    assert all(isinstance(r, AlertingRule) and dict((k, t.source) for k, t in r.labels)["severity"] for r in group.rules)


def test_pack_name_resolves_to_the_shipped_file_and_a_path_stays_a_path(tmp_path):
    assert resolve_rule_file("backpressure") == RULE_PACKS / "backpressure.yml"
    assert resolve_rule_file(tmp_path / "mine.yml") == tmp_path / "mine.yml"


def test_unknown_pack_name_lists_the_packs():
    [problem] = problems_of("no-such-pack")
    assert "no such rule file" in problem and "backpressure" in problem


def test_pack_alert_fires_on_event_time():
    engine = RuleEngine(load_rule_files(["backpressure"]))
    breaker = (("__name__", "api_circuit_breaker_state"), ("instance", "api-1:8080"), ("job", "tasker-api"))
    out = [tr for t in range(0, 45_001, 15_000) for tr in ingest(engine, t, {breaker: 2.0}).transitions]
    assert [(tr.eval_time, tr.state) for tr in out] == [(0, "pending"), (30_000, "firing")]
    assert dict(out[-1].annotations)["description"] == "Circuit breaker api-1:8080 has been open for > 30s"


def test_pack_ratio_alert_combines_two_series_of_one_target():
    engine = RuleEngine(load_rule_files(["backpressure"]))
    target = (("instance", "db:9187"), ("job", "pgmq"), ("queue_name", "orders"))
    depth, limit = (("__name__", "pgmq_queue_depth"), *target), (("__name__", "pgmq_queue_max_depth"), *target)
    out = [tr for t in range(0, 5 * MIN + 1, 15_000) for tr in ingest(engine, t, {depth: 900.0, limit: 1000.0}).transitions]
    assert [(tr.eval_time, tr.state) for tr in out] == [(0, "pending"), (5 * MIN, "firing")]
    assert dict(out[-1].labels) == {"alertname": "TaskerPGMQQueueDepthHigh", "instance": "db:9187",
                                    "job": "pgmq", "queue_name": "orders", "severity": "warning"}
    assert dict(out[-1].annotations)["description"] == "Queue orders at 1% capacity"  # printf "%.0f" of 0.9


# --- validation: every problem at once, each naming file, group, rule and field ------------------

BROKEN = """\
groups:
  - name: g1
    interval: 1x
    colour: blue
    rules:
      - alert: NoExpr
      - alert: Both
        record: both
        expr: up
      - expr: up
      - alert: Unknown
        expr: up
        severity: page
      - alert: BadFor
        expr: up
        for: 5 minutes
      - alert: BadKeep
        expr: up
        keep_firing_for: soon
      - alert: BadLabel
        expr: up
        labels:
          bad-name: x
      - alert: BadTemplate
        expr: up
        annotations:
          summary: "{{ if $value }}high"
      - alert: Unsupported
        expr: sin(up) > 1
      - alert: Unparsable
        expr: up >
      - record: bad-metric-name
        expr: up
      - record: WithFor
        expr: up
        for: 1m
  - name: g1
    limit: lots
    rules: []
"""

EXPECTED_PROBLEMS = [
    "group 'g1', field 'interval': not a duration: '1x'",
    "group 'g1': unknown field 'colour'",
    "group 'g1', rule 1 'NoExpr': field 'expr': missing or empty",
    "group 'g1', rule 2: a rule needs exactly one of 'alert' or 'record'",
    "group 'g1', rule 3: a rule needs exactly one of 'alert' or 'record'",
    "group 'g1', rule 4 'Unknown': field 'severity' is not allowed in an alerting rule",
    "group 'g1', rule 5 'BadFor', field 'for': not a duration: '5 minutes'",
    "group 'g1', rule 6 'BadKeep', field 'keep_firing_for': not a duration: 'soon'",
    "group 'g1', rule 7 'BadLabel', field 'labels': 'bad-name' is not a valid label name",
    "group 'g1', rule 8 'BadTemplate', field 'annotations' 'summary': template: __alert_BadTemplate:1: unexpected EOF",
    "group 'g1', rule 9 'Unsupported', field 'expr': function sin() is not supported yet",
    "group 'g1', rule 10 'Unparsable', field 'expr': cannot parse PromQL",
    "group 'g1', rule 11 'bad-metric-name': field 'record': 'bad-metric-name' is not a valid metric name",
    "group 'g1', rule 12 'WithFor': field 'for' is not allowed in a recording rule",
    "group 'g1': the group name is repeated in the same file",
    "group 'g1', field 'limit': must be an integer, got lots",
]


def test_every_problem_is_reported_at_once_naming_file_group_rule_and_field(tmp_path):
    path = write(tmp_path, BROKEN)
    problems = problems_of(path)
    for expected in EXPECTED_PROBLEMS:
        assert [p for p in problems if p.startswith(f"{path}: {expected}")], f"missing: {expected}\nin: {problems}"
    assert len(problems) == len(EXPECTED_PROBLEMS), problems


def test_problems_of_several_files_are_reported_together(tmp_path):
    bad_yaml = write(tmp_path, "groups:\n  - name: [unclosed\n", "yaml.yml")
    not_groups = write(tmp_path, "rules: []\n", "shape.yml")
    bad_rule = write(tmp_path, "groups:\n  - name: g\n    rules:\n      - alert: A\n", "rule.yml")
    missing = tmp_path / "missing.yml"
    problems = problems_of(bad_yaml, not_groups, bad_rule, missing)
    assert len(problems) == 4
    assert problems[0].startswith(f"{bad_yaml}: not valid YAML")
    assert problems[1].startswith(f"{not_groups}: a rule file is a mapping with only 'groups'")
    assert problems[2] == f"{bad_rule}: group 'g', rule 1 'A': field 'expr': missing or empty"
    assert problems[3].startswith(f"{missing}: cannot read")


def test_rule_error_message_lists_every_problem(tmp_path):
    path = write(tmp_path, BROKEN)
    with pytest.raises(RuleError) as err:
        load_rule_files([path])
    assert str(err.value).startswith(f"{len(EXPECTED_PROBLEMS)} problem(s) in rule files:")


def test_empty_file_has_no_groups(tmp_path):
    assert load_rule_files([write(tmp_path, "")]) == []


def test_group_fields_are_read(tmp_path):
    path = write(tmp_path, """\
        groups:
          - name: g
            interval: 30s
            limit: 5
            rules:
              - alert: A
                expr: up == 0
                for: 1m30s
                keep_firing_for: 2m
                labels: {severity: page}
                annotations: {summary: "{{ $labels.job }} down"}
              - record: job:up:sum
                expr: up
                labels: {team: ops}
        """)
    [group] = load_rule_files([path], external_labels={"cluster": "eu1"})
    alert, record = group.rules
    assert (group.interval_ms, group.limit, group.source) == (30_000, 5, str(path))
    assert (alert.for_ms, alert.keep_firing_for_ms, alert.external_labels) == (90_000, 2 * MIN, {"cluster": "eu1"})
    assert isinstance(record, RecordingRule) and record.labels == (("team", "ops"),)


def test_group_without_interval_uses_the_default(tmp_path):
    path = write(tmp_path, "groups:\n  - name: g\n    rules: []\n")
    assert load_rule_files([path], default_interval_ms=10_000)[0].interval_ms == 10_000


def test_annotation_name_must_be_a_valid_label_name(tmp_path):
    """BUG: Prometheus refuses the file (``promtool check rules``: 'invalid annotation
    name: bad-name'); Headroom loads it."""
    path = write(tmp_path, "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
                           "        annotations:\n          bad-name: x\n")
    [problem] = problems_of(path)
    assert "'A'" in problem and "annotations" in problem and "bad-name" in problem


@pytest.mark.parametrize("kind", ["alert", "record"])
def test_metric_name_label_in_rule_labels_is_refused(tmp_path, kind):
    """BUG: Prometheus refuses ``__name__`` among a rule's labels ('invalid label name:
    __name__'); Headroom loads it, and a recording rule then writes its series under
    that name instead of the ``record`` name."""
    path = write(tmp_path, f"groups:\n  - name: g\n    rules:\n      - {kind}: r\n        expr: up\n"
                           "        labels:\n          __name__: other\n")
    [problem] = problems_of(path)
    assert "__name__" in problem and "labels" in problem


def test_expression_written_as_a_yaml_number_is_an_expression(tmp_path):
    """BUG: ``expr: 1`` is a valid rule for Prometheus (YAML scalars are read as their
    text; promtool fires the alert); Headroom reports "field 'expr': missing or empty"."""
    path = write(tmp_path, "groups:\n  - name: g\n    rules:\n      - alert: Always\n        expr: 1\n")
    [group] = load_rule_files([path])
    assert group.rules[0].expr_text == "1"


def test_label_values_keep_their_yaml_text(tmp_path):
    """BUG: Prometheus reads label values as the YAML scalar's text (promtool shows
    page="true", ok="yes", hex="0x10", oct="010"); Headroom turns them into Python
    values first ("True", "True", "16", "8")."""
    path = write(tmp_path, """\
        groups:
          - name: g
            rules:
              - alert: A
                expr: up
                labels: {page: true, ok: yes, hex: 0x10, oct: 010}
        """)
    [group] = load_rule_files([path])
    assert {k: t.source for k, t in group.rules[0].labels} == {"page": "true", "ok": "yes", "hex": "0x10", "oct": "010"}


# --- recording rules ---------------------------------------------------------------------------

X_A = (("__name__", "x"), ("job", "a"))
ORDER_RULES = """\
groups:
  - name: g
    interval: 1m
    rules:
      - alert: Before
        expr: r > 0
      - record: r
        expr: x > 0
      - alert: After
        expr: r > 0
"""


def firing_by_minute(engine: RuleEngine, values: list[float]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for minute, value in enumerate(values):
        ingest(engine, minute * MIN, {X_A: value})
        for alert in engine.active_alerts():
            if alert.state == FIRING:
                out.setdefault(dict(alert.labels)["alertname"], []).append(minute)
    return out


def test_recorded_series_is_seen_by_later_rules_at_once_and_earlier_rules_one_evaluation_later(tmp_path):
    engine = RuleEngine(load_rule_files([write(tmp_path, ORDER_RULES)]))
    # x > 0 at 0m and 1m. After: sees r at once; its stale marker at 2m ends it.
    # Before: sees r from the evaluation before, and its stale marker one evaluation later.
    assert firing_by_minute(engine, [1, 1, 0, 0, 0, 0, 0, 0]) == {"Before": [1, 2], "After": [0, 1]}


@needs_promtool
def test_recording_order_and_staleness_match_promtool(tmp_path):
    write(tmp_path, ORDER_RULES)
    checks = []
    for name, minutes in {"Before": [1, 2], "After": [0, 1]}.items():
        for m in range(6):
            alerts = "[{exp_labels: {job: a}}]" if m in minutes else "[]"
            checks.append(f"      - {{eval_time: {m}m, alertname: {name}, exp_alerts: {alerts}}}")
    test = write(tmp_path, "rule_files: [rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n"
                           "    input_series:\n      - {series: 'x{job=\"a\"}', values: '1 1 0 0 0 0 0 0'}\n"
                           "    alert_rule_test:\n" + "\n".join(checks) + "\n", "test.yml")
    run = subprocess.run(["promtool", "test", "rules", str(test)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def recorded(engine: RuleEngine, selector: str, t: int) -> dict:
    return dict(compile_expr(selector).evaluate(EvalContext(engine.store, t)).samples())


def test_recorded_series_takes_the_record_name_and_the_rule_labels(tmp_path):
    path = write(tmp_path, "groups:\n  - name: g\n    rules:\n      - record: job:x:double\n        expr: x * 2\n"
                           "        labels: {team: ops}\n")
    engine = RuleEngine(load_rule_files([path]))
    ingest(engine, 0, {X_A: 21.0})
    assert recorded(engine, "job:x:double", 0) == {(("__name__", "job:x:double"), ("job", "a"), ("team", "ops")): 42.0}


def test_recorded_series_that_disappears_gets_a_stale_marker(tmp_path):
    engine = RuleEngine(load_rule_files([write(tmp_path, ORDER_RULES)]))
    ingest(engine, 0, {X_A: 1.0})
    ingest(engine, MIN, {X_A: 0.0})
    assert recorded(engine, "r", MIN - 1) == {(("__name__", "r"), ("job", "a")): 1.0}
    assert recorded(engine, "r", MIN) == {}  # ended at once, not 5 minutes later
    [row] = [i for i, labels in enumerate(engine.store.labels) if dict(labels)["__name__"] == "r"]
    assert engine.store.newest_timestamp(row) == MIN


def test_recorded_series_that_comes_back_is_written_again(tmp_path):
    engine = RuleEngine(load_rule_files([write(tmp_path, ORDER_RULES)]))
    for minute, value in enumerate([1.0, 0.0, 3.0]):
        ingest(engine, minute * MIN, {X_A: value})
    assert recorded(engine, "r", 2 * MIN) == {(("__name__", "r"), ("job", "a")): 3.0}


def test_recording_rule_producing_one_labelset_twice_is_an_evaluation_error(tmp_path):
    path = write(tmp_path, "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: '{job=\"a\"}'\n")
    engine = RuleEngine(load_rule_files([path]))
    out = ingest(engine, 0, {X_A: 1.0, (("__name__", "y"), ("job", "a")): 2.0})
    [error] = out.errors
    assert "same labelset after applying rule labels" in error and "'r'" in error
    assert recorded(engine, "r", 0) == {}


def test_recording_rule_label_with_an_empty_value_removes_the_label(tmp_path):
    """BUG: in Prometheus a rule label set to "" removes that label from the recorded
    series (promtool: {__name__="r", instance="i", team="ops"}); Headroom stores a
    label job="" in the series' identity."""
    path = write(tmp_path, "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: x\n"
                           "        labels: {job: '', team: ops}\n")
    engine = RuleEngine(load_rule_files([path]))
    ingest(engine, 0, {(("__name__", "x"), ("instance", "i"), ("job", "a")): 1.0})
    assert (("__name__", "r"), ("instance", "i"), ("team", "ops")) in engine.store.labels


def test_recording_rule_of_a_scalar_records_one_series_named_by_the_rule(tmp_path):
    path = write(tmp_path, "groups:\n  - name: g\n    rules:\n      - record: answer\n        expr: '40 + 2'\n")
    engine = RuleEngine(load_rule_files([path]))
    ingest(engine, 0, {X_A: 1.0})
    assert recorded(engine, "answer", 0) == {(("__name__", "answer"),): 42.0}
