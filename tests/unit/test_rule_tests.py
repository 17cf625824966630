"""``headroom test-rules``: promtool's rule unit-test format, run through Headroom.

Two kinds of checks:

* the notation (series values, series and sample label sets, YAML numbers),
  case by case, and promtool (Prometheus 2.42) accepting and refusing the same
  cases and loading the same values;
* differential runs: every ``tests/promtool/*.test.yml`` must pass in both
  promtool and Headroom; files made to fail (a wrong expected alert or
  sample, the checked-in files re-timed to other evaluation intervals,
  crafted alignment cases, random series) must fail in both, at the same
  checks, and mostly with the same report word for word (what was expected,
  what came out). Which checks failed is read from promtool's report
  (``alertname: X, time: T``, ``expr: "E", time: T``, ``rule: X, time: T``)
  and from Headroom's structured result.

Known float differences between Headroom's evaluator and Prometheus are
listed in ``KNOWN_DISAGREEMENTS`` and left out of the comparisons.
"""

from __future__ import annotations

import ast
import copy
import math
import random
import re
import struct
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from detector.promql import UnsupportedExpression, compile_expr
from detector.rule_tests import (
    UnitTestFormatError,
    format_duration,
    format_float_e,
    format_go_time,
    is_stale_marker,
    parse_metric,
    parse_series,
    parse_series_values,
    parse_test_file,
    run_test_file,
)
from detector.go_yaml import go_yaml_float
from pipelines.test_rules_cli import test_rules as cli_test_rules
from tests.promtool_oracle import promtool_results, same_result

MIN = 60_000
PROMTOOL_DIR = Path(__file__).resolve().parents[1] / "promtool"
RULE_TEST_FILES = sorted(PROMTOOL_DIR.glob("*.test.yml"))

# Where Headroom's evaluator and Prometheus 2.42 give different floats, so
# Headroom's runner (comparing exactly, as promtool does) fails a check that
# promtool passes. Each entry is a check of promtool's report. Remove an entry
# once the evaluator agrees (the differential test then says so).
KNOWN_DISAGREEMENTS: dict[str, set[tuple[str, ...]]] = {
    # None. (Prometheus computes atan2 and ^ with Go's math.Atan2 and
    # math.Pow, Headroom with the C library's; they can differ in the last
    # bits, so the rule test files only check results both round alike.)
}




def run_promtool(promtool: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, "test", "rules", path.name], cwd=path.parent, capture_output=True, text=True)


_ALERT = re.compile(r"^    alertname: (.*), time: (\S+), $")
_EXPR = re.compile(r'^    expr: ("(?:[^"\\]|\\.)*"), time: (\S+?),(?: err: .*)?$')
_RULE = re.compile(r"^    rule: (.*?), time: (\S+), err: ")


def promtool_failures(output: str) -> set[tuple[str, ...]]:
    """The checks promtool's report says failed; ("error",) for a failure that is no check (parse, load, YAML)."""
    keys: set[tuple[str, ...]] = set()
    failed = False
    for line in output.splitlines():
        if line.strip() == "FAILED:":
            failed = True
        elif m := _ALERT.match(line):
            keys.add(("alert", m[1], m[2]))
        elif m := _EXPR.match(line):
            keys.add(("expr", ast.literal_eval(m[1]), m[2]))
        elif m := _RULE.match(line):
            keys.add(("rule", m[1], m[2]))
    if failed and not keys:
        keys.add(("error",))
    return keys


def headroom_failures(path: Path) -> set[tuple[str, ...]]:
    return {f.key or ("error",) for f in run_test_file(path).failures}


def both_failures(promtool: str, path: Path) -> tuple[set, set]:
    run = run_promtool(promtool, path)
    theirs = promtool_failures(run.stdout + run.stderr)
    assert (run.returncode == 0) == (not theirs), run.stdout + run.stderr
    return headroom_failures(path), theirs


# --- Series values --------------------------------------------------------------------------------

N = None


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("", []),
        ("  1   2  ", [1.0, 2.0]),
        ("1x3", [1.0] * 4),
        ("1x0", [1.0]),
        ("1x03", [1.0] * 4),
        ("0x3", [0.0] * 4),  # no hexadecimal: 0, 3 more times
        ("1+2x3", [1.0, 3.0, 5.0, 7.0]),
        ("10-2.5x2", [10.0, 7.5, 5.0]),
        ("-1-2x2", [-1.0, -3.0, -5.0]),
        ("+5 -5", [5.0, -5.0]),
        ("_ _x2 _x0 1", [N, N, N, 1.0]),
        ("1e3 1E3 1e+3 1.e3 2.5e-3 -.5e+2", [1000.0, 1000.0, 1000.0, 1000.0, 0.0025, -50.0]),
        (".5 5. 007.5", [0.5, 5.0, 7.5]),
        ("010 08 0010+010x1", [8.0, 8.0, 8.0, 16.0]),  # strconv.ParseInt(s, 0, 64) first: octal
        ("1e-400", [0.0]),
        ("Inf -Inf +Inf inf INF", [math.inf, -math.inf, math.inf, math.inf, math.inf]),
        ("0.1+0.1x3", [0.1, 0.2, 0.30000000000000004, 0.4]),  # added up, as promtool does
    ],
)
def test_values_expand_as_promtool_does(text: str, values: list) -> None:
    assert parse_series_values(text) == values


def test_nan_and_stale_are_different_values() -> None:
    values = parse_series_values("NaN nan -NaN stale stale+1x1")
    assert all(math.isnan(v) for v in values)
    assert [is_stale_marker(v) for v in values] == [False, False, False, True, True, False]
    assert struct.pack("<d", values[3]) == struct.pack("<Q", 0x7FF0000000000002)


REJECTED_VALUES = [
    "Infx3",  # one identifier: a word cannot be repeated
    "NaNx2",
    "stalex2",
    "Stale",
    "1,2",
    "1x2x3",
    "1x2.5",
    "1x-1",
    "1+x3",
    "1+2",
    "1 2 - 3",
    "1 _x",
    "0x1F",
    "1e",
    "1e400",
    "--1",
    "1+-1x2",
    "1_000",
    "1.2.3",
    "_1",
    "up",
    "{{schema:1 sum:2 count:1}}",
]


@pytest.mark.parametrize("text", REJECTED_VALUES)
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(UnitTestFormatError):
        parse_series_values(text)


# --- Label sets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("up", (("__name__", "up"),)),
        ("up{}", (("__name__", "up"),)),
        ('up{job="a", instance="b",}', (("__name__", "up"), ("instance", "b"), ("job", "a"))),
        ('{__name__="up", job="a"}', (("__name__", "up"), ("job", "a"))),
        ('up{__name__="other"}', (("__name__", "up"),)),  # the name before the braces wins
        ('{job="a"}', (("job", "a"),)),
        ('a:b{x="1"}', (("__name__", "a:b"), ("x", "1"))),
        ('sum{on="1", by="2"}', (("__name__", "sum"), ("by", "2"), ("on", "1"))),
        ('a{x="", y="1"}', (("__name__", "a"), ("y", "1"))),  # an empty value is no label
        ("a{x='1', y=`q\"`}", (("__name__", "a"), ("x", "1"), ("y", 'q"'))),
        ('a{x="\\u00e9\\n\\x41\\101"}', (("__name__", "a"), ("x", "é\nAA"))),
        (' a{__x="1"} ', (("__name__", "a"), ("__x", "1"))),
    ],
)
def test_series_labels(text: str, labels: tuple) -> None:
    assert parse_series(text) == labels


REJECTED_SERIES = ['a{x!="1"}', 'a{x=~"1"}', "a{x=1}", 'a {x="1"}', 'a{x="1"}{y="2"}', "a b", 'a{1x="1"}', 'a{x="\\d"}', "inf", 'a{x="1"', "{"]


@pytest.mark.parametrize("text", REJECTED_SERIES)
def test_bad_series_are_refused(text: str) -> None:
    with pytest.raises(UnitTestFormatError):
        parse_series(text)


def test_a_label_set_twice_is_refused() -> None:
    # promtool loads such a series, and then no selector finds it: refuse it, saying why.
    with pytest.raises(UnitTestFormatError, match="set twice"):
        parse_series('a{x="1", x="2"}')


@pytest.mark.parametrize(
    ("text", "labels"),
    [("", ()), ("{}", ()), ('a {x="1"}', (("__name__", "a"), ("x", "1"))), ("a{b=''}", (("__name__", "a"),))],
)
def test_expected_sample_labels(text: str, labels: tuple) -> None:
    assert parse_metric(text) == labels


# --- YAML numbers and the file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1.0), ("-2.5", -2.5), ("1e3", 1000.0), ("1E-2", 0.01), (".5", 0.5), ("5.", 5.0),
        ("0x10", 16.0), ("010", 8.0), ("0b11", 3.0), ("0o17", 15.0), ("1_000", 1000.0),
        (".inf", math.inf), ("-.Inf", -math.inf), ("+.INF", math.inf),
        ("Inf", None), ("inf", None), ("NaN", None), ("1e", None), ("abc", None), ("true", None),
    ],
)  # fmt: skip
def test_yaml_numbers_as_go_yaml_reads_them(text: str, value: float | None) -> None:
    assert go_yaml_float(text) == value
    assert math.isnan(go_yaml_float(".nan"))


def test_test_file_fields_and_defaults() -> None:
    spec = parse_test_file(
        textwrap.dedent(
            """
            rule_files: [a.yml]
            group_eval_order: [g1, g2]
            tests:
              - name: n
                interval: 30s
                external_labels: {cluster: c}
                external_url: http://x
                input_series: [{series: 'up{job="a"}', values: 1 2}]
                alert_rule_test:
                  - eval_time: 1m30s
                    alertname: A
                    exp_alerts: [{exp_labels: {alertname: Other, x: 1}, exp_annotations: {s: t}}]
                promql_expr_test:
                  - expr: up
                    eval_time: 0
                    exp_samples: [{labels: 'up{job="a"}', value: 1e3}, {value: 0x10}]
            """
        )
    )
    assert spec.evaluation_interval_ms == MIN and spec.group_eval_order == ("g1", "g2")
    [group] = spec.groups
    assert (group.name, group.interval_ms, group.external_labels, group.external_url) == ("n", 30_000, (("cluster", "c"),), "http://x")
    assert group.input_series[0].values == "1 2"
    [alert] = group.alert_tests
    assert alert.eval_ms == 90_000
    assert alert.exp_alerts[0].labels == (("alertname", "A"), ("x", "1"))  # alertname is always the test's
    assert [(s.labels, s.value) for s in group.expr_tests[0].exp_samples] == [('up{job="a"}', 1000.0), ("", 16.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tests: [{interval: 1m, foo: 1}]", "field foo not found"),
        ("tests: [{interval: 1m, interval: 2m}]", "field interval already set"),
        ("tests: [{promql_expr_test: [{expr: x, exp_samples: [{value: '7'}]}]}]", "cannot unmarshal !!str `7`"),
        ("tests: [{interval: 5}]", "not a duration"),
        ("tests: [{alert_rule_test: [{exp_alerts: [{exp_labels: {a: 1, a: 2}}]}]}]", "key 'a' already set"),
        ("tests: {interval: 1m}", "cannot unmarshal !!map into a list"),
        ("tests: [", "not valid YAML"),
    ],
)
def test_what_promtool_refuses_to_read_is_refused(text: str, message: str) -> None:
    with pytest.raises(UnitTestFormatError, match=re.escape(message)):
        parse_test_file(text)


def test_formats_match_go() -> None:
    assert [format_duration(ms) for ms in (0, 90_000, 3_600_000, 86_400_000, 8 * 86_400_000, 14 * 86_400_000, 1500)] == [
        "0s", "1m30s", "1h", "1d", "8d", "2w", "1s500ms",  # weeks only when exact
    ]  # fmt: skip
    assert [format_go_time(ms) for ms in (0, 500, 60_000, 3_630_500)] == ["0s", "500ms", "1m0s", "1h0m30.5s"]
    assert [format_float_e(v) for v in (1.0, 1448.1546878700492, -4.0, math.nan)] == ["1E+00", "1.4481546878700492E+03", "-4E+00", "NaN"]


# --- The notation against promtool -----------------------------------------------------------------

ACCEPTED_VALUES = [
    "1x3", "0x3", "1+2x3", "10-2.5x2", "-1-2x2", "+5 -5", "_ _x2 _x0 1", "1e3 1E3 1.e3 2.5e-3 -.5e+2",
    ".5 5. 007.5", "010 08 0010+010x1", "1e-400", "Inf -Inf +Inf inf", "NaN nan -NaN", "0.1+0.1x9",
    "1 stale 2 stale _ 3", "stale+1x1 4", "1x03",
]  # fmt: skip


def _expected_answers(labels: tuple, values: list, i: int) -> tuple[dict, dict]:
    """What ``v`` and ``v and timestamp(v) == time()`` return at step i, from Headroom's expansion."""
    at = {}
    if i < len(values) and values[i] is not None and not is_stale_marker(values[i]):
        at[labels] = values[i]
    latest = {}
    for j in range(i, max(i - 6, -1), -1):  # the 5m lookback, both ends closed
        if j < len(values) and values[j] is not None:
            if not is_stale_marker(values[j]):
                latest[labels] = values[j]
            break
    return latest, at


def test_promtool_loads_the_values_headroom_expands(promtool: str) -> None:
    series = [(f'v{{case="{i}"}}', text) for i, text in enumerate(ACCEPTED_VALUES)]
    expanded = [(parse_series(s), parse_series_values(text)) for s, text in series]
    steps = max(len(values) for _, values in expanded) + 6
    queries = [(expr, i * MIN) for i in range(steps) for expr in ("v", "v and timestamp(v) == time()")]
    answers = promtool_results(series, queries, MIN)
    wrong = []
    for i in range(steps):
        expected_latest, expected_at = {}, {}
        for labels, values in expanded:
            latest, at = _expected_answers(labels, values, i)
            expected_latest.update(latest)
            expected_at.update(at)
        for expected, got, what in ((expected_latest, answers[2 * i], "v"), (expected_at, answers[2 * i + 1], "exactly at")):
            if not same_result(expected, got):
                wrong.append(f"step {i} ({what}): promtool {got}, Headroom's expansion {expected}")
    assert wrong == []


def _one_series_test(tmp_path: Path, series: str, values: str, name: str = "case.test.yml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"tests": [{"interval": "1m", "input_series": [{"series": series, "values": values}]}]}))
    return path


@pytest.mark.parametrize("text", REJECTED_VALUES)
def test_promtool_refuses_the_values_headroom_refuses(text: str, promtool: str, tmp_path: Path) -> None:
    path = _one_series_test(tmp_path, "a", text)
    run = run_promtool(promtool, path)
    assert run.returncode != 0 and "parse error" in run.stderr, run.stderr
    [failure] = run_test_file(path).failures
    assert failure.kind == "series"


@pytest.mark.parametrize("text", [t for t in REJECTED_SERIES if t != "{"] + ["{"])
def test_promtool_refuses_the_series_headroom_refuses(text: str, promtool: str, tmp_path: Path) -> None:
    path = _one_series_test(tmp_path, text, "1")
    run = run_promtool(promtool, path)
    assert run.returncode != 0 and "parse error" in run.stderr, run.stderr
    assert [f.kind for f in run_test_file(path).failures] == ["series"]


def test_promtool_reads_sample_labels_and_yaml_numbers_as_headroom_does(promtool: str, tmp_path: Path) -> None:
    """One file of expression tests, some right and some wrong: the same ones fail in both."""
    cases = [
        ('a', 'a{x="1"}', "2"),  # right
        ('a', '{__name__="a", x="1"}', "2.0"),
        ('a', 'a { x="1" }', "2e0"),
        ('a', 'a{x="1", y=""}', "0x2"),  # empty label dropped; hex
        ('a', 'a{x="1"}', "02"),  # octal 2
        ('a * 4', '{x="1"}', "010"),  # octal 8
        ('a * 500', '{x="1"}', "1_000"),
        ('a', 'a{x="1"}', "3"),  # wrong value
        ('a', '{x="1"}', "2"),  # the name is kept by a selector
        ('a / 0', '{x="1"}', ".inf"),
        ('-a / 0', '{x="1"}', "-.Inf"),
        ('a - a + 0.1 + 0.2', '{x="1"}', "0.30000000000000004"),
        ('a - a + 0.1 + 0.2', '{x="1"}', "0.3"),  # no tolerance
        ('a * 0 / 0', '{x="1"}', ".nan"),  # NaN never equals NaN
        ('a > 5', '{}', "0"),  # nothing expected as {} 0: fails
        ('a > 5', None, None),
        ('2 > bool 1', "{}", "1"),  # a scalar is one sample without labels
        ('2 > bool 1', "", "1"),
    ]
    lines = ["tests:", "  - interval: 1m", "    input_series:", "      - series: 'a{x=\"1\"}'", "        values: '2 2'", "    promql_expr_test:"]
    for i, (expr, labels, value) in enumerate(cases):
        lines += [f"      - expr: '{expr}'", f"        eval_time: {i}s"]
        if labels is not None:
            lines += ["        exp_samples:", f"          - labels: '{labels}'", f"            value: {value}"]
    path = tmp_path / "samples.test.yml"
    path.write_text("\n".join(lines) + "\n")
    ours, theirs = both_failures(promtool, path)
    assert ours == theirs
    assert {k[2] for k in theirs} == {"7s", "8s", "12s", "13s", "14s"}


# --- Every checked-in rule test passes in both ----------------------------------------------------


def test_there_are_rule_tests() -> None:
    assert RULE_TEST_FILES


@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
def test_rule_test_passes_in_promtool_and_headroom(path: Path, promtool: str) -> None:
    run = run_promtool(promtool, path)
    assert run.returncode == 0, run.stdout + run.stderr
    known = KNOWN_DISAGREEMENTS.get(path.name, set())
    ours = headroom_failures(path)
    if known:
        assert ours == known, "Headroom's known disagreements with promtool changed (update KNOWN_DISAGREEMENTS)"
    else:
        assert ours == set(), "\n".join(f.message for f in run_test_file(path).failures)


# --- Files made to fail fail in both, at the same checks ------------------------------------------


def _mutations(spec: dict) -> list[tuple[str, dict]]:
    """Copies of a test file with one expectation made wrong."""
    out = []
    for gi, group in enumerate(spec.get("tests") or []):
        for ai, case in enumerate(group.get("alert_rule_test") or []):
            wrong = copy.deepcopy(spec)
            target = wrong["tests"][gi]["alert_rule_test"][ai]
            if case.get("exp_alerts"):
                target["exp_alerts"][0].setdefault("exp_labels", {})
                target["exp_alerts"][0]["exp_labels"] = {**(target["exp_alerts"][0]["exp_labels"] or {}), "headroom_wrong": "1"}
                out.append((f"group {gi} alert {ai}: a wrong label", wrong))
            else:
                target["exp_alerts"] = [{"exp_labels": {"headroom_wrong": "1"}}]
                out.append((f"group {gi} alert {ai}: an alert that never fires", wrong))
            break
        for ei, case in enumerate(group.get("promql_expr_test") or []):
            if case.get("exp_samples"):
                wrong = copy.deepcopy(spec)
                sample = wrong["tests"][gi]["promql_expr_test"][ei]["exp_samples"][0]
                value = float(sample.get("value", 0))
                sample["value"] = value + 1 if math.isfinite(value) else 0.0
                out.append((f"group {gi} expr {ei}: a wrong value", wrong))
                break
    return out


_MESSAGE_START = re.compile(r"^    (name|alertname|expr|rule): ")


def promtool_messages(stderr: str) -> list[str]:
    """promtool's failure report, one message per failed check (each as Headroom's Failure.message)."""
    if "  FAILED:\n" not in stderr:
        return []
    messages: list[list[str]] = []
    for line in stderr.split("  FAILED:\n", 1)[1].splitlines():
        starts = _MESSAGE_START.match(line)
        if starts and not (starts[1] == "alertname" and messages and messages[-1][-1].startswith("    name: ")):
            messages.append([line])
        elif messages:
            messages[-1].append(line)
    return ["\n".join(m) for m in messages]


def _message_key(message: str) -> tuple[str, ...]:
    return next(iter(promtool_failures("  FAILED:\n" + message)))


def same_reports(promtool: str, path: Path, known: set) -> tuple[list[str], list[str]]:
    """Headroom's and promtool's failure messages, checks with known disagreements left out of both."""
    return _reports(run_promtool(promtool, path).stderr, run_test_file(path).failures, known)


def _reports(stderr: str, failures: list, known: set) -> tuple[list[str], list[str]]:
    theirs = [m for m in promtool_messages(stderr) if _message_key(m) not in known]
    ours = [f.message for f in failures if f.key not in known]
    return ours, theirs


def _write_variant(spec: dict, source: Path, target: Path) -> Path:
    spec = {**spec, "rule_files": [str(source.parent / f) for f in spec.get("rule_files") or []]}
    target.write_text(yaml.safe_dump(spec, sort_keys=False))
    return target


@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
def test_wrong_expectations_fail_in_promtool_and_headroom(path: Path, promtool: str, tmp_path: Path) -> None:
    """Each mutation fails in both, and Headroom's report is promtool's, word for word."""
    mutations = _mutations(yaml.safe_load(path.read_text()))
    assert mutations
    known = KNOWN_DISAGREEMENTS.get(path.name, set())
    for i, (what, wrong) in enumerate(mutations):
        target = _write_variant(wrong, path, tmp_path / f"wrong{i}.test.yml")
        run = run_promtool(promtool, target)
        failures = run_test_file(target).failures
        theirs = promtool_failures(run.stdout + run.stderr)
        assert run.returncode != 0 and theirs, f"{what}: promtool passed"
        assert {f.key or ("error",) for f in failures} == theirs | known, what
        ours_text, theirs_text = _reports(run.stderr, failures, known)
        assert ours_text == theirs_text, what


@pytest.mark.parametrize("interval", ["30s", "90s", "2m"])
@pytest.mark.parametrize("path", RULE_TEST_FILES, ids=lambda p: p.name)
def test_other_evaluation_intervals_give_promtools_report(path: Path, interval: str, promtool: str, tmp_path: Path) -> None:
    """The same file evaluated every 30s, 90s or 2m: checks between ticks, ticks between samples.

    Most expectations no longer hold at 90s or 2m; Headroom must fail the same
    checks with the same report (what was expected, what came out).
    """
    spec = {**yaml.safe_load(path.read_text()), "evaluation_interval": interval}
    target = _write_variant(spec, path, tmp_path / "retimed.test.yml")
    ours, theirs = same_reports(promtool, target, KNOWN_DISAGREEMENTS.get(path.name, set()))
    assert ours == theirs


# --- How evaluation times line up ------------------------------------------------------------------

ALIGN_RULES = """
groups:
  - name: second
    interval: 5m
    rules:
      - alert: Doubled
        expr: doubled > 10
        for: 1m
        annotations:
          v: "{{ $value }}"
  - name: first
    interval: 10s
    rules:
      - record: doubled
        expr: x * 2
      - alert: Watchdog
        expr: 1 > bool 0
        for: 2m
      - alert: High
        expr: x > 5
        for: 90s
        keep_firing_for: 1m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.job }} at {{ $value }}"
      - alert: Ratio
        expr: x / on(job) x > 2
"""

# Checks marked "wrong:" are wrong on purpose; every other one is right.
ALIGN_TEST = """
rule_files: [align.rules.yml]
evaluation_interval: 1m
group_eval_order: [first, second]
tests:
  - name: input every 30s, evaluation every minute
    interval: 30s
    input_series:
      # From 1m30s; above 5 from 2m30s to 5m30s; 50 at 7m30s, after the last tick.
      - series: 'x{job="a"}'
        values: '_x3 1 4 6 7 8 9 10 11 12 3 1 1 1 1 50'
    alert_rule_test:
      # Active at the tick at 0, before any sample: fires at 2m.
      - eval_time: 119s
        alertname: Watchdog
      - eval_time: 2m
        alertname: Watchdog
        exp_alerts: [{exp_labels: {}}]
      # wrong: still firing.
      - eval_time: 3m
        alertname: Watchdog
      # 2m30s is between ticks: the tick at 2m saw 4. Pending at 3m (7), fires at 5m (11).
      - eval_time: 4m59s
        alertname: High
      # wrong: an eval_time between ticks is checked against the tick before it.
      - eval_time: 4m59s
        alertname: High
        exp_alerts: [{exp_labels: {severity: page, job: a}, exp_annotations: {summary: "a at 9"}}]
      - eval_time: 5m
        alertname: High
        exp_alerts: [{exp_labels: {severity: page, job: a}, exp_annotations: {summary: "a at 11"}}]
      # Below 5 at 6m, kept firing for 1m.
      - eval_time: 6m30s
        alertname: High
        exp_alerts: [{exp_labels: {severity: page, job: a}, exp_annotations: {summary: "a at 11"}}]
      - eval_time: 7m
        alertname: High
      # The first group records doubled before the second reads it, in the same tick.
      - eval_time: 4m
        alertname: Doubled
        exp_alerts: [{exp_labels: {job: a}, exp_annotations: {v: "18"}}]
      # wrong: that is the value at 3m.
      - eval_time: 4m
        alertname: Doubled
        exp_alerts: [{exp_labels: {job: a}, exp_annotations: {v: "16"}}]
    promql_expr_test:
      # Samples are loaded up to the last tick (7m) only.
      - expr: x
        eval_time: 7m30s
        exp_samples: [{labels: 'x{job="a"}', value: 1}]
      # wrong: the sample at 7m30s is not loaded.
      - expr: x
        eval_time: 7m29s
        exp_samples: [{labels: 'x{job="a"}', value: 50}]
      - expr: x
        eval_time: 150s
        exp_samples: [{labels: 'x{job="a"}', value: 6}]
      # Recorded at the ticks only: nothing at 1m (no sample yet), 8 at 2m.
      - expr: doubled
        eval_time: 90s
      - expr: doubled
        eval_time: 150s
        exp_samples: [{labels: 'doubled{job="a"}', value: 8}]
      # wrong: nothing recorded before 2m.
      - expr: doubled
        eval_time: 90s
        exp_samples: [{labels: 'doubled{job="a"}', value: 2}]

  - name: no interval
    input_series:
      - series: 'x{job="b"}'
        values: '7 1 1'
    promql_expr_test:
      # Every value at time 0; the first one wins.
      - expr: x
        eval_time: 5m
        exp_samples: [{labels: 'x{job="b"}', value: 7}]
      - expr: x
        eval_time: 5m1s
      # wrong: there is no sample at 1m.
      - expr: x
        eval_time: 4m
        exp_samples: [{labels: 'x{job="b"}', value: 1}]

  - name: evaluation error
    interval: 1m
    input_series:
      - series: 'x{job="a", i="1"}'
        values: '1 1'
      - series: 'x{job="a", i="2"}'
        values: '1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: High
"""


def test_evaluation_times_line_up_with_promtool(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "align.rules.yml").write_text(ALIGN_RULES)
    path = tmp_path / "align.test.yml"
    path.write_text(ALIGN_TEST)
    ours, theirs = both_failures(promtool, path)
    assert ours == theirs
    assert theirs == {
        ("alert", "Watchdog", "3m"),
        ("alert", "High", "4m59s"),
        ("alert", "Doubled", "4m"),
        ("expr", "x", "7m29s"),
        ("expr", "doubled", "1m30s"),
        ("expr", "x", "4m"),
        ("rule", "Ratio", "0s"),  # many-to-many matching: the group stops there
    }


def test_group_eval_order_decides_what_a_group_reads(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "align.rules.yml").write_text(ALIGN_RULES)
    path = tmp_path / "order.test.yml"
    spec = yaml.safe_load(ALIGN_TEST)
    spec["group_eval_order"] = ["second", "first"]
    spec["tests"] = spec["tests"][:1]
    path.write_text(yaml.safe_dump(spec))
    ours, theirs = both_failures(promtool, path)
    assert ours == theirs and ("alert", "Doubled", "4m") in theirs


FUZZ_RULES = {
    "groups": [
        {
            "name": "g1",
            "rules": [
                {"record": "r:x", "expr": "x * 2"},
                {"alert": "A", "expr": "x > 1", "for": "1m", "labels": {"s": "{{ $labels.job }}"}, "annotations": {"v": "{{ $value }}"}},
                {"alert": "B", "expr": "r:x > 3", "keep_firing_for": "2m"},
                {"alert": "C", "expr": "rate(c[2m]) > 0.01", "for": "90s", "annotations": {"r": "{{ $value }}"}},
                {"alert": "D", "expr": "x offset 1m unless x", "keep_firing_for": "1m", "for": "30s"},
            ],
        },
        {"name": "g2", "interval": "3m", "rules": [{"alert": "E", "expr": "r:x > 2 and on(job) c > 5", "for": "2m"}]},
    ]
}


def _random_test(rng: random.Random) -> dict:
    """Random gauges (with gaps and staleness markers) and counters (with resets), random times and intervals.

    Every check expects nothing, so each one that sees an alert or a sample
    fails, and the report shows exactly what was there.
    """

    def gauge(n: int) -> str:
        return " ".join(
            "_" if (r := rng.random()) < 0.15 else "stale" if r < 0.22 else str(rng.choice([0, 1, 2, 3, 4, 0.5])) for _ in range(n)
        )

    def counter(n: int) -> str:
        value, out = 0, []
        for _ in range(n):
            value = 0 if rng.random() < 0.1 else value + rng.choice([0, 1, 2, 5])
            out.append("_" if rng.random() < 0.1 else str(value))
        return " ".join(out)

    n = rng.randint(5, 25)
    times = sorted({rng.randint(0, 20 * 60) for _ in range(8)})
    series = [{"series": f'x{{job="{j}"}}', "values": gauge(n)} for j in "ab"]
    series += [{"series": f'c{{job="{j}"}}', "values": counter(n)} for j in "ab"]
    exprs = ["x", "r:x", "rate(c[2m])", "x offset 1m", "increase(c[90s])"]
    return {
        "rule_files": ["rules.yml"],
        "evaluation_interval": rng.choice(["20s", "30s", "45s", "1m", "2m"]),
        "group_eval_order": rng.choice([["g1", "g2"], ["g2", "g1"]]),
        "tests": [
            {
                "interval": rng.choice(["15s", "30s", "45s", "1m"]),
                "input_series": series,
                "alert_rule_test": [{"eval_time": f"{t}s", "alertname": rng.choice("ABCDE")} for t in times],
                "promql_expr_test": [{"expr": rng.choice(exprs), "eval_time": f"{t}s"} for t in times[:4]],
            }
        ],
    }


def test_random_series_give_promtools_report(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(FUZZ_RULES))
    rng = random.Random(20240607)
    path = tmp_path / "random.test.yml"
    reported = 0
    for case in range(25):
        path.write_text(yaml.safe_dump(_random_test(rng)))
        ours, theirs = same_reports(promtool, path, set())
        assert ours == theirs, f"case {case}:\n{path.read_text()}"
        reported += len(theirs)
    assert reported > 100  # the checks did see alerts and samples to compare


# --- What Headroom cannot answer is a failure that says why ---------------------------------------


def test_a_rule_file_headroom_cannot_load_fails_naming_the_problem(promtool: str, tmp_path: Path) -> None:
    expr = "sin(x) > 1"
    with pytest.raises(UnsupportedExpression) as err:
        compile_expr(expr)
    reason = str(err.value)
    (tmp_path / "r.yml").write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "Sub", "expr": expr}]}]}))
    path = tmp_path / "sub.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": ["r.yml"], "tests": [{"interval": "1m", "input_series": [{"series": "x", "values": "1"}]}]}))
    assert run_promtool(promtool, path).returncode == 0
    [failure] = run_test_file(path).failures
    assert failure.kind == "rules"
    assert f"r.yml: group 'g', rule 1 'Sub', field 'expr': {reason}" in failure.message


def test_a_missing_rule_file_is_a_warning_and_a_broken_one_a_failure(promtool: str, tmp_path: Path) -> None:
    (tmp_path / "broken.yml").write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: 'x >'\n")
    path = tmp_path / "files.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": ["nope*.yml"], "tests": [{"interval": "1m"}]}))
    result = run_test_file(path)
    assert result.ok and result.warnings == [f"no file match pattern {tmp_path / 'nope*.yml'}"]
    assert run_promtool(promtool, path).returncode == 0
    path.write_text(yaml.safe_dump({"rule_files": ["broken.yml"], "tests": [{"interval": "1m"}]}))
    assert run_promtool(promtool, path).returncode != 0
    [failure] = run_test_file(path).failures
    assert failure.kind == "rules" and "broken.yml: group 'g', rule 1 'X', field 'expr'" in failure.message


def test_alerts_series_and_external_url_render_as_in_promtool(promtool: str, tmp_path: Path) -> None:
    rules = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "x > 0", "annotations": {"link": "{{ $externalURL }}/a"}}]}]}
    (tmp_path / "r.yml").write_text(yaml.safe_dump(rules))
    group = {
        "interval": "1m",
        "external_url": "http://prom",
        "input_series": [{"series": "x", "values": "1"}],
        "alert_rule_test": [{"eval_time": "0m", "alertname": "A", "exp_alerts": [{"exp_annotations": {"link": "http://prom/a"}}]}],
        "promql_expr_test": [
            {"expr": 'ALERTS{alertname="A"}', "eval_time": "0m", "exp_samples": [{"labels": 'ALERTS{alertname="A", alertstate="firing"}', "value": 1}]}
        ],
    }
    path = tmp_path / "t.test.yml"
    path.write_text(yaml.safe_dump({"rule_files": ["r.yml"], "tests": [group]}))
    assert run_promtool(promtool, path).returncode == 0
    assert run_test_file(path).failures == []


def test_command_prints_like_promtool_and_sets_the_exit_code(tmp_path: Path) -> None:
    good = RULE_TEST_FILES[0] if RULE_TEST_FILES[0].name not in KNOWN_DISAGREEMENTS else RULE_TEST_FILES[-1]
    spec = yaml.safe_load(good.read_text())
    spec["rule_files"] = [str(good.parent / f) for f in spec.get("rule_files") or []]
    what, wrong = _mutations(spec)[0]
    bad = tmp_path / "bad.test.yml"
    bad.write_text(yaml.safe_dump(wrong))
    runner = CliRunner()
    ok = runner.invoke(cli_test_rules, [str(good)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines()[:2] == [f"Unit Testing:  {good}", "  SUCCESS"]
    failed = runner.invoke(cli_test_rules, [str(good), str(bad)])
    assert failed.exit_code == 1
    assert f"Unit Testing:  {bad}\n  FAILED:\n" in failed.output
    assert "exp:" in failed.output and "got:" in failed.output


def test_command_fails_on_a_file_it_cannot_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_test_rules, [str(tmp_path / "missing.test.yml")])
    assert result.exit_code == 1 and "FAILED:" in result.output and "cannot read" in result.output
