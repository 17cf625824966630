"""A promtool rule unit-test file: its model, and :func:`parse_test_file` to read one."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from detector.labels import Labels
from detector.rule_tests.errors import UnitTestFormatError
from detector.go_yaml import Decoder

DEFAULT_EVALUATION_INTERVAL_MS = 60_000


@dataclass(frozen=True)
class ExpectedAlert:
    labels: Labels  # with alertname
    annotations: Labels


@dataclass(frozen=True)
class AlertTest:
    eval_ms: int
    alertname: str
    exp_alerts: tuple[ExpectedAlert, ...]


@dataclass(frozen=True)
class ExpectedSample:
    labels: str  # as written; parsed when the test runs, as promtool does
    value: float


@dataclass(frozen=True)
class ExprTest:
    expr: str
    eval_ms: int
    exp_samples: tuple[ExpectedSample, ...]


@dataclass(frozen=True)
class InputSeries:
    series: str
    values: str


@dataclass(frozen=True)
class TestGroup:
    __test__ = False  # not a pytest class

    name: str
    interval_ms: int
    input_series: tuple[InputSeries, ...]
    alert_tests: tuple[AlertTest, ...]
    expr_tests: tuple[ExprTest, ...]
    external_labels: tuple[tuple[str, str], ...] = ()
    external_url: str = ""
    interval_given: bool = True

    def max_eval_ms(self) -> int:
        return max([0, *(t.eval_ms for t in self.alert_tests), *(t.eval_ms for t in self.expr_tests)])


@dataclass(frozen=True)
class TestFile:
    __test__ = False  # not a pytest class

    path: str
    rule_files: tuple[str, ...]  # as written, relative to the test file
    evaluation_interval_ms: int
    group_eval_order: tuple[str, ...]
    groups: tuple[TestGroup, ...]


def parse_test_file(text: str, path: str = "<test>") -> TestFile:
    """Read a promtool rule unit-test file; :class:`UnitTestFormatError` lists what promtool would refuse.

    Series, label sets and rule files are read later, when each test group runs
    (as promtool does: a bad series fails its group only).

    >>> f = parse_test_file("tests: [{interval: 30s, input_series: [{series: up, values: '1 2'}]}]")
    >>> f.evaluation_interval_ms, f.groups[0].interval_ms, f.groups[0].input_series
    (60000, 30000, (InputSeries(series='up', values='1 2'),))
    >>> parse_test_file("tests: [{intervall: 1m}]")
    Traceback (most recent call last):
    ...
    detector.rule_tests.errors.UnitTestFormatError: line 1: field intervall not found in a test group (known: ...)
    """
    try:
        root = next(yaml.compose_all(text, Loader=yaml.SafeLoader), None)  # go-yaml reads the first document only
    except yaml.YAMLError as exc:
        raise UnitTestFormatError(f"not valid YAML: {exc}") from None
    d = Decoder(version=2)  # promtool reads test files with go-yaml v2

    def sample(node: yaml.Node) -> ExpectedSample:
        s = d.struct(node, {"labels": d.string, "value": d.number}, "an exp_samples item")
        return ExpectedSample(s.get("labels", ""), s.get("value", 0.0))  # type: ignore[arg-type]

    def expr_test(node: yaml.Node) -> ExprTest:
        s = d.struct(
            node,
            {"expr": d.string, "eval_time": d.duration, "exp_samples": lambda n: d.sequence(n, sample)},
            "a promql_expr_test item",
        )
        return ExprTest(s.get("expr", ""), s.get("eval_time", 0), tuple(s.get("exp_samples", ())))  # type: ignore[arg-type]

    def exp_alert(node: yaml.Node) -> dict:
        return d.struct(node, {"exp_labels": d.string_map, "exp_annotations": d.string_map}, "an exp_alerts item")

    def alert_test(node: yaml.Node) -> AlertTest:
        s = d.struct(
            node,
            {"eval_time": d.duration, "alertname": d.string, "exp_alerts": lambda n: d.sequence(n, exp_alert)},
            "an alert_rule_test item",
        )
        name = s.get("alertname", "")
        expected = []
        for a in s.get("exp_alerts", ()):  # type: ignore[union-attr]
            # promtool adds alertname, over any alertname given.
            labels = {**(a.get("exp_labels") or {}), "alertname": name}
            expected.append(ExpectedAlert(tuple(sorted(labels.items())), tuple(sorted((a.get("exp_annotations") or {}).items()))))
        return AlertTest(s.get("eval_time", 0), name, tuple(expected))  # type: ignore[arg-type]

    def input_series(node: yaml.Node) -> InputSeries:
        s = d.struct(node, {"series": d.string, "values": d.string}, "an input_series item")
        return InputSeries(s.get("series", ""), s.get("values", ""))  # type: ignore[arg-type]

    def group(node: yaml.Node) -> TestGroup:
        s = d.struct(
            node,
            {
                "interval": d.duration,
                "input_series": lambda n: d.sequence(n, input_series),
                "alert_rule_test": lambda n: d.sequence(n, alert_test),
                "promql_expr_test": lambda n: d.sequence(n, expr_test),
                "external_labels": d.string_map,
                "external_url": d.string,
                "name": d.string,
            },
            "a test group",
        )
        return TestGroup(
            name=s.get("name", ""),  # type: ignore[arg-type]
            interval_ms=s.get("interval", 0),  # type: ignore[arg-type]
            input_series=tuple(s.get("input_series", ())),  # type: ignore[arg-type]
            alert_tests=tuple(s.get("alert_rule_test", ())),  # type: ignore[arg-type]
            expr_tests=tuple(s.get("promql_expr_test", ())),  # type: ignore[arg-type]
            external_labels=tuple(sorted((s.get("external_labels") or {}).items())),  # type: ignore[union-attr]
            external_url=s.get("external_url", ""),  # type: ignore[arg-type]
            interval_given=bool(s.get("interval")),
        )

    top = d.struct(
        root,
        {
            "rule_files": lambda n: d.sequence(n, d.string),
            "evaluation_interval": d.duration,
            "group_eval_order": lambda n: d.sequence(n, d.string),
            "tests": lambda n: d.sequence(n, group),
        },
        "a rule test file",
    )
    if d.errors:
        raise UnitTestFormatError("\n".join(d.errors))
    return TestFile(
        path=path,
        rule_files=tuple(top.get("rule_files", ())),  # type: ignore[arg-type]
        evaluation_interval_ms=top.get("evaluation_interval") or DEFAULT_EVALUATION_INTERVAL_MS,  # type: ignore[arg-type]
        group_eval_order=tuple(top.get("group_eval_order", ())),  # type: ignore[arg-type]
        groups=tuple(top.get("tests", ())),  # type: ignore[arg-type]
    )
