"""(completeness) Headroom's streamed alerts checked by ``promtool test rules`` on the same samples.

The completeness bench plays a fleet's samples through one rule engine per
partition, in the order unsynchronised remote-write shards deliver them. This
module writes what each engine received as a promtool rule-test file, one test
group per partition (the samples of every series of the chosen clusters, at
their own timestamps), with Headroom's answer at every evaluation instant as
the expectation:

* ``alert_rule_test``: for every alerting rule at every tick, the alerts
  Headroom had *firing* there, with their labels and rendered annotations;
* ``promql_expr_test``: ``ALERTS`` (pending and firing, by ``alertstate``) and
  ``ALERTS_FOR_STATE`` (the instant each alert became active) at every tick,
  as Headroom's engine held them after that tick's evaluation, and each
  recording rule's series as its store answered for them there (to
  :data:`RECORDED_TO`, see there why not exactly).

``promtool test rules`` then evaluates the same rule files on the same
samples, at the same instants (every ``evaluation_interval`` from time 0, as
the engine's epoch-aligned ticks), and passes only if every check agrees.
It cannot see: the notifications sent and their timing (resends, ``ends_at``),
the state of resolved alerts, alerts a test group has no series for, or
anything between two ticks.

Each series is written in promtool's expanding notation on a 1 s grid
(``_x14 5 _x14 6``), which is why the completeness fleet scrapes at whole-second
phases. promtool loads and checks a partition's samples in its own test group:
an engine only ever saw its own partition's series, and a rule that sums
across partitions (``sum by (cluster)`` over several targets) is compared as
that engine computed it, not as one Prometheus holding every series would.

>>> series_notation([15_000, 30_000, 60_000], [1.0, 2.5, float("nan")], 1_000)
'_x15 1.0 _x14 2.5 _x29 NaN'
>>> selector((("__name__", "up"), ("job", 'a"b')))
'up{job="a\\\\"b"}'
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from detector.rule_tests.series import value_text
from detector.rules.alerting import AlertingRule
from detector.rules.recording import RecordingRule

Labels = tuple[tuple[str, str], ...]
ALERT_STATES = ("pending", "firing")


@dataclass(frozen=True)
class AlertAt:
    """One pending or firing alert as an engine held it after evaluating a tick."""

    rule: str
    labels: Labels  # with alertname
    annotations: Labels
    state: str
    active_at: int


@dataclass
class PromtoolVerdict:
    passed: bool
    checks: int
    failed: int  # checks promtool reported as failed
    report: str  # promtool's output, trimmed


def series_notation(stamps, values, step_ms: int) -> str:
    """Samples at ``stamps`` (ms, increasing, multiples of ``step_ms``) in promtool's expanding notation."""
    parts = []
    position = 0  # promtool's index of the next value written
    for t, v in zip(stamps, values):
        index = int(t) // step_ms
        assert int(t) % step_ms == 0 and index >= position, (t, step_ms, position)
        if index > position:
            parts.append(f"_x{index - position}")
        parts.append(value_text(float(v)))
        position = index + 1
    return " ".join(parts)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(labels: Labels) -> str:
    """A label set as promtool's ``series`` and ``labels`` fields read it."""
    name = dict(labels).get("__name__", "")
    inner = ", ".join(f"{k}={_quote(v)}" for k, v in labels if k != "__name__")
    return f"{name}{{{inner}}}"


def _ms(t: int) -> str:
    return f"{t}ms"


RECORDED_TO = 1e-6
"""Recording rules' values are compared rounded to this (``round()`` on both sides): Prometheus 2.42 adds a
``sum``'s series in the order its head created them, which promtool's loader takes from a Go map, so
promtool's own last bits vary from run to run on the same file (seen: 37.666666666666664 and 37.66666666666666)."""


def recorded_query(name: str) -> str:
    """What is asked of a recording rule's series, by Headroom and by promtool."""
    return f'round({{__name__="{name}"}}, {RECORDED_TO!r})'


def recorded_checks(recorded: dict[int, list[tuple[str, Labels, float]]], ticks: list[int], names: list[str]) -> list:
    """promtool's ``promql_expr_test`` entries saying what :func:`recorded_query` returned at every tick
    (``recorded``: per tick, (rule name, labels, value) rows)."""
    checks = []
    for t in ticks:
        for name in names:
            rows = sorted((selector(labels), value) for rule, labels, value in recorded.get(t, []) if rule == name)
            checks.append({"expr": recorded_query(name), "eval_time": _ms(t),
                           "exp_samples": [{"labels": s, "value": v} for s, v in rows]})
    return checks


def alert_checks(alerts: dict[int, list[AlertAt]], ticks: list[int], alert_names: list[str]) -> tuple[list, list]:
    """promtool's ``alert_rule_test`` and ``promql_expr_test`` entries saying ``alerts`` at every tick."""
    rule_tests, expr_tests = [], []
    for t in ticks:
        held = alerts.get(t, [])
        for name in alert_names:
            firing = sorted(
                ({"exp_labels": {k: v for k, v in a.labels if k != "alertname"},
                  "exp_annotations": dict(a.annotations)} for a in held if a.rule == name and a.state == "firing"),
                key=repr)
            rule_tests.append({"eval_time": _ms(t), "alertname": name, "exp_alerts": firing})
        states = sorted(
            selector(tuple(sorted((*a.labels, ("__name__", "ALERTS"), ("alertstate", a.state))))) for a in held)
        expr_tests.append({"expr": "ALERTS", "eval_time": _ms(t),
                           "exp_samples": [{"labels": s, "value": 1} for s in states]})
        active = sorted((selector(tuple(sorted((*a.labels, ("__name__", "ALERTS_FOR_STATE"))))), a.active_at / 1000)
                        for a in held)
        expr_tests.append({"expr": "ALERTS_FOR_STATE", "eval_time": _ms(t),
                           "exp_samples": [{"labels": s, "value": v} for s, v in active]})
    return rule_tests, expr_tests


def alerting_names(groups) -> list[str]:
    return sorted({rule.name for group in groups for rule in group.rules if isinstance(rule, AlertingRule)})


def recording_names(groups) -> list[str]:
    return sorted({rule.name for group in groups for rule in group.rules if isinstance(rule, RecordingRule)})


def rule_test_file(rule_files: list[str], groups, interval_ms: int, parts: list[dict]) -> dict:
    """A whole promtool rule-test file: ``parts`` are test groups, each
    ``{"name", "series": [(labels, stamps, values)], "alerts": {tick: [AlertAt]},
    "recorded": {tick: [(labels, value)]}, "ticks": [...]}``."""
    names = alerting_names(groups)
    tests = []
    for part in parts:
        rule_tests, expr_tests = alert_checks(part["alerts"], part["ticks"], names)
        expr_tests += recorded_checks(part["recorded"], part["ticks"], recording_names(groups))
        tests.append({
            "name": part["name"],
            "interval": "1s",
            "input_series": [{"series": selector(labels), "values": series_notation(stamps, values, 1_000)}
                             for labels, stamps, values in part["series"]],
            "alert_rule_test": rule_tests,
            "promql_expr_test": expr_tests,
        })
    return {
        "rule_files": [str(Path(f).resolve()) for f in rule_files],
        "evaluation_interval": _ms(interval_ms),
        # The engine evaluates groups in load order at each tick; without this promtool's order is a map's.
        "group_eval_order": [group.name for group in groups],
        "tests": tests,
    }


def promtool_binary() -> str:
    path = shutil.which("promtool")
    if path is None:
        raise RuntimeError("promtool not found: `make setup` installs Debian's prometheus package, which has it")
    return path


_FAILED_CHECK = re.compile(r"^\s*(alertname: |expr: )", re.MULTILINE)


def run_promtool(test: dict, path: Path) -> PromtoolVerdict:
    """Write ``test`` to ``path`` and run ``promtool test rules`` on it."""
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1 << 20))
    run = subprocess.run([promtool_binary(), "test", "rules", str(path)], capture_output=True, text=True)
    report = run.stdout + run.stderr
    checks = sum(len(t["alert_rule_test"]) + len(t["promql_expr_test"]) for t in test["tests"])
    failed = len(_FAILED_CHECK.findall(report))
    if run.returncode != 0 and failed == 0:
        raise RuntimeError(f"promtool failed without a failed check (a file it could not read?):\n{report[:4000]}")
    return PromtoolVerdict(run.returncode == 0, checks, failed, report[:20_000])
