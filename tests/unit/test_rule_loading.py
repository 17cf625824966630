"""Loading rule files as Prometheus 2.42 reads them, refusing a rule rather than its file.

* ``headroom check-rules`` and ``promtool check rules`` agree, file by file,
  on small files written here: which files fail, and how many rules the others
  hold. A rule only Headroom cannot run (a function it lacks) is listed, but
  does not fail its file, unless ``--strict``.
* YAML as go-yaml v3 reads it: anchors, aliases and ``<<`` merge keys
  (checked with ``promtool test rules`` on the alerts they give), ``null``
  values, the first document only, repeated keys refused.
* The rest of a file with a refused rule loads and runs; strict loading
  refuses the file, and ``headroom test-rules`` stays strict.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import generate_latest

from detector.errors import RuleError
from detector.rule_tests import run_test_file
from detector.rules.engine import RuleEngine
from detector.rules.files import load_rule_files, load_rules
from detector.wire.batch import SampleBatch
from pipelines.cli import check_rules, refused_rules_registry

MIN = 60_000


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def rule(kind: str, name: str, expr: str, extra: str = "") -> str:
    return f"      - {kind}: {name}\n        expr: {expr}\n" + textwrap.indent(textwrap.dedent(extra), "        ")


GROUP = "groups:\n  - name: g\n    rules:\n"

# name -> file text. promtool accepts the first ones; Headroom cannot run some of their rules.
FILES = {
    "unsupported_function": GROUP + rule("alert", "Sine", "sin(x) > 1") + rule("alert", "Up", "up == 1"),
    "unsupported_only": GROUP + rule("record", "r", "holt_winters(x[5m], 0.5, 0.5)"),
    "merge_keys": """\
        groups:
          - name: g
            rules:
              - &base
                alert: A
                expr: x > 1
                for: 5m
                labels: &labels
                  severity: page
              - <<: *base
                alert: B
              - alert: C
                expr: y > 1
                labels:
                  <<: *labels
                  team: db
              - alert: D
                <<: [*base]
                expr: z > 1
        """,
    "for_zero_and_null": GROUP + rule("alert", "Zero", "x > 1", "for: 0\n") + rule("alert", "Null", "x > 2", "for:\n"),
    "empty": "",
    "no_groups": "groups: []\n",
    "null_rules": "groups:\n  - name: g\n    rules:\n",
    "second_document_ignored": GROUP + rule("alert", "A", "x > 1") + "---\ngroups: oops\n",
    "negative_limit_and_zero_interval": "groups:\n  - name: g\n    limit: -1\n    interval: 0s\n    rules:\n" + rule("alert", "A", "x > 1"),
    "scalars_as_text": GROUP + rule("record", "r", "1", "labels: {a: 1, b: true, c: null}\n"),
    # promtool refuses these files.
    "repeated_key": GROUP + rule("alert", "A", "x > 1", "expr: x > 2\n"),
    "unknown_field": GROUP + rule("alert", "A", "x > 1", "severity: page\n"),
    "unknown_field_in_merge": """\
        groups:
          - name: g
            rules:
              - &base {alert: A, expr: x > 1}
              - <<: *base
                alert: B
                foo: 1
        """,
    "parse_error": GROUP + rule("alert", "A", "x >") + rule("alert", "B", "sin(x) > 1"),
    "bad_duration": GROUP + rule("alert", "A", "x > 1", "for: 300\n"),
    "empty_duration": GROUP + rule("alert", "A", "x > 1", "for: ''\n"),
    "limit_not_a_number": "groups:\n  - name: g\n    limit: lots\n    rules: []\n",
    "utf8_label_name": GROUP + rule("record", "r", 'sum by ("a.b") (x)'),
    "bad_matcher_regex": GROUP + rule("record", "r", 'x{a=~"("}'),
    "bad_template": GROUP + rule("alert", "A", "x > 1", "annotations:\n  s: '{{ $labels.x '\n"),
    "unknown_anchor": GROUP + rule("alert", "A", "x > 1", "labels: *nowhere\n"),
    "unknown_top_field": "x-defaults: &d {for: 5m}\n" + GROUP + rule("alert", "A", "x > 1"),
}


def promtool_check(promtool: str, path: Path) -> tuple[int, str]:
    run = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    return run.returncode, run.stdout


@pytest.fixture
def rule_files(tmp_path: Path) -> dict[str, Path]:
    return {name: write(tmp_path, f"{name}.yml", text) for name, text in FILES.items()}


def test_check_rules_fails_and_counts_the_files_promtool_does(rule_files: dict[str, Path], promtool: str) -> None:
    runner = CliRunner()
    for name, path in rule_files.items():
        code, out = promtool_check(promtool, path)
        ours = runner.invoke(check_rules, [str(path)])
        assert ours.exit_code == code, f"{name}: promtool exits {code}, headroom {ours.exit_code}\n{ours.output}"
        found = [line for line in out.splitlines() if "SUCCESS" in line]
        assert [line for line in ours.stdout.splitlines() if "SUCCESS" in line] == found, name
    # The files Headroom would run only in part are the ones promtool accepts.
    assert promtool_check(promtool, rule_files["unsupported_function"])[0] == 0


def test_check_rules_lists_the_rules_it_leaves_out_and_strict_fails_them(rule_files: dict[str, Path]) -> None:
    path = rule_files["unsupported_function"]
    result = CliRunner().invoke(check_rules, [str(path)])
    assert result.exit_code == 0
    assert "  SUCCESS: 2 rules found" in result.stdout
    assert "REFUSED: 1 of them" in result.stdout
    assert f"{path}: group 'g', rule 1 'Sine', field 'expr': function sin() is not supported yet" in result.stdout
    strict = CliRunner().invoke(check_rules, ["--strict", str(path), str(rule_files["no_groups"])])
    assert strict.exit_code == 1
    assert "  FAILED:" in strict.stderr and "'Sine'" in strict.stderr
    assert "  SUCCESS: 0 rules found" in strict.stdout  # the other file still passes


def test_strict_rules_setting_is_read_from_the_environment(rule_files: dict[str, Path], monkeypatch) -> None:
    monkeypatch.setenv("HEADROOM_STRICT_RULES", "true")
    assert CliRunner().invoke(check_rules, [str(rule_files["unsupported_function"])]).exit_code == 1


def test_the_rest_of_a_file_runs_when_one_rule_is_refused(rule_files: dict[str, Path]) -> None:
    rules = load_rules([rule_files["unsupported_function"]])
    [refused] = rules.refused
    assert (refused.group, refused.index, refused.name, refused.invalid) == ("g", 1, "Sine", False)
    [group] = rules.groups
    assert [r.name for r in group.rules] == ["Up"]
    engine = RuleEngine(rules.groups)
    up = (("__name__", "up"), ("job", "a"))
    out = engine.ingest(SampleBatch.from_series([(up, [(0, 1.0)])]))
    assert [(t.rule, t.state) for t in out.transitions] == [("Up", "firing")]


def test_strict_loading_refuses_the_file(rule_files: dict[str, Path]) -> None:
    with pytest.raises(RuleError) as err:
        load_rule_files([rule_files["unsupported_function"]])
    assert "'Sine'" in str(err.value)
    assert load_rules([rule_files["unsupported_function"]], strict=True).groups == []


def test_refused_rules_are_a_gauge(rule_files: dict[str, Path]) -> None:
    rules = load_rules([rule_files["unsupported_function"], rule_files["unsupported_only"]])
    assert b"headroom_rules_refused 2.0" in generate_latest(refused_rules_registry(rules))


def test_test_rules_stays_strict(rule_files: dict[str, Path], tmp_path: Path, promtool: str) -> None:
    test = write(tmp_path, "t.test.yml", f"""\
        rule_files: [{rule_files['unsupported_function'].name}]
        tests:
          - interval: 1m
            input_series: [{{series: up, values: '1'}}]
        """)
    assert subprocess.run([promtool, "test", "rules", str(test)], capture_output=True).returncode == 0
    [failure] = run_test_file(test).failures
    assert failure.kind == "rules" and "'Sine'" in failure.message


# --- YAML as go-yaml reads it -------------------------------------------------------------------


def test_merge_keys_and_aliases_give_the_rules_promtool_runs(rule_files: dict[str, Path], tmp_path: Path, promtool: str) -> None:
    [group] = load_rule_files([rule_files["merge_keys"]])
    got = {r.name: (r.expr_text, r.for_ms, {k: t.source for k, t in r.labels}) for r in group.rules}
    assert got == {
        "A": ("x > 1", 5 * MIN, {"severity": "page"}),
        "B": ("x > 1", 5 * MIN, {"severity": "page"}),
        "C": ("y > 1", 0, {"severity": "page", "team": "db"}),
        "D": ("z > 1", 5 * MIN, {"severity": "page"}),
    }
    alerts = lambda name, labels: {"eval_time": "6m", "alertname": name, "exp_alerts": [{"exp_labels": labels}]}  # noqa: E731
    test = tmp_path / "merge.test.yml"
    test.write_text(yaml.safe_dump({
        "rule_files": [str(rule_files["merge_keys"])],
        "tests": [{
            "interval": "1m",
            "input_series": [{"series": "x", "values": "2x6"}, {"series": "y", "values": "2x6"}, {"series": "z", "values": "2x6"}],
            "alert_rule_test": [
                alerts("A", {"severity": "page"}),
                alerts("B", {"severity": "page"}),
                alerts("C", {"severity": "page", "team": "db"}),
                alerts("D", {"severity": "page"}),
            ],
        }],
    }))
    run = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run_test_file(test).failures == []


def test_a_field_from_a_merge_key_is_not_blamed_on_the_rule(rule_files: dict[str, Path]) -> None:
    with pytest.raises(RuleError) as err:
        load_rule_files([rule_files["unknown_field_in_merge"]])
    [problem] = err.value.problems
    assert "'foo'" in problem and "'<<'" not in problem and "expr" not in problem


def test_null_values_first_document_and_scalars(rule_files: dict[str, Path]) -> None:
    [group] = load_rule_files([rule_files["for_zero_and_null"]])
    assert [r.for_ms for r in group.rules] == [0, 0]
    [group] = load_rule_files([rule_files["second_document_ignored"]])
    assert [r.name for r in group.rules] == ["A"]
    [group] = load_rule_files([rule_files["scalars_as_text"]])
    assert group.rules[0].labels == (("a", "1"), ("b", "true"), ("c", ""))


def test_repeated_keys_are_refused_naming_the_line(rule_files: dict[str, Path]) -> None:
    with pytest.raises(RuleError) as err:
        load_rule_files([rule_files["repeated_key"]])
    assert "mapping key 'expr' already defined at line 5" in str(err.value)


# Test files are read by go-yaml v2: merged fields are set where the << is, and a
# map key set twice (merged or not) is an error.
TEST_FILE = """\
rule_files: [r.yml]
evaluation_interval: 1m
tests:
  - &group
    interval: 1m
    input_series:
      - &s {{series: 'x{{job="a"}}', values: '2x5'}}
      - {series_b}
    alert_rule_test:
      - &check
        eval_time: 2m
        alertname: A
        exp_alerts:
          - exp_labels: &l {{job: a, severity: page}}
          - exp_labels: {labels_b}
  - <<: *group
    name: again
    alert_rule_test:
      - <<: *check
        eval_time: 3m
"""


@pytest.mark.parametrize("series_b, labels_b, passes", [
    ("{<<: *s, series: 'x{job=\"b\"}'}", "{job: b, severity: page}", True),
    ("{series: 'x{job=\"b\"}', <<: *s}", "{job: b, severity: page}", False),  # the merged series overrides
    ("{<<: *s, series: 'x{job=\"b\"}'}", "{<<: *l, job: b}", False),  # job set twice in a map
])
def test_merge_keys_in_test_files_as_promtool_reads_them(series_b: str, labels_b: str, passes: bool, tmp_path: Path,
                                                         promtool: str) -> None:
    write(tmp_path, "r.yml", GROUP + rule("alert", "A", "x > 1", "labels: {severity: page}\n"))
    test = tmp_path / "m.test.yml"
    test.write_text(TEST_FILE.format(series_b=series_b, labels_b=labels_b))
    run = subprocess.run([promtool, "test", "rules", test.name], cwd=tmp_path, capture_output=True, text=True)
    assert (run.returncode == 0) == passes, run.stdout + run.stderr
    result = run_test_file(test)
    assert result.ok == passes, [f.message for f in result.failures]
    if "already set in map" in run.stderr:
        assert ["key 'job' already set in map" in f.message for f in result.failures] == [True]


def test_a_test_file_is_read_up_to_its_first_document(rule_files: dict[str, Path], tmp_path: Path, promtool: str) -> None:
    test = write(tmp_path, "two.test.yml", f"""\
        rule_files: [{rule_files['unsupported_only'].name}]
        tests: []
        ---
        not: [a test file
        """)
    assert subprocess.run([promtool, "test", "rules", str(test)], capture_output=True).returncode == 0
    assert run_test_file(test).ok


def test_the_worker_logs_each_refused_rule_and_strict_stops_it(rule_files: dict[str, Path], caplog) -> None:
    from pipelines.cli import _load_rules
    from pipelines.settings import Settings

    path = rule_files["unsupported_function"]
    with caplog.at_level("WARNING", logger="headroom.rules"):
        rules = _load_rules(Settings(rule_files=(path,)))
    assert [r.name for g in rules.groups for r in g.rules] == ["Up"]
    assert [m for m in caplog.messages if "'Sine'" in m and "rule refused" in m]
    with pytest.raises(SystemExit) as stopped:
        _load_rules(Settings(rule_files=(path,), strict_rules=True))
    assert stopped.value.code == 2
