"""Running a test file: its series fed to a :class:`RuleEngine` tick by tick, as promtool evaluates, and each check made."""

from __future__ import annotations

import dataclasses
import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from detector.errors import RuleError
from detector.labels import Labels, canonical_bytes
from detector.output.templates import go_quote
from detector.promql import EvalContext, EvaluationError, InstantVector, Scalar, UnsupportedExpression, compile_expr
from detector.promql.plan import DEFAULT_LOOKBACK_MS
from detector.rule_tests.errors import UnitTestFormatError
from detector.rule_tests.report import Failure, FileResult, format_alerts, format_duration, format_go_time, format_samples, indent
from detector.rule_tests.series import parse_metric, parse_series, parse_series_values
from detector.rule_tests.files import AlertTest, ExprTest, TestGroup, parse_test_file
from detector.rules.alerting import FIRING
from detector.rules.engine import RuleEngine
from detector.rules.files import load_rule_files
from detector.wire.batch import SampleBatch

def resolve_rule_files(test_path: str | Path, patterns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Rule files relative to the test file's directory, globs expanded; and a warning per pattern matching nothing."""
    base = os.path.dirname(str(test_path))
    files, warnings = [], []
    for pattern in patterns:
        if pattern and not os.path.isabs(pattern):
            pattern = os.path.join(base, pattern)
        matches = sorted(glob.glob(pattern))
        if not matches:
            warnings.append(f"no file match pattern {pattern}")
        files += matches
    return files, warnings


def run_test_file(path: str | Path) -> FileResult:
    """Run one promtool rule unit-test file through Headroom; every failure is in the result.

    Each :class:`Failure` carries promtool's wording of the failed check, so a
    report reads the same as ``promtool test rules``'s.

    >>> import os, tempfile
    >>> d = tempfile.mkdtemp()
    >>> _ = open(os.path.join(d, "rules.yml"), "w").write('''
    ... groups:
    ...   - name: g
    ...     rules:
    ...       - alert: Down
    ...         expr: up == 0
    ...         for: 2m
    ...         labels: {severity: page}
    ... ''')
    >>> _ = open(os.path.join(d, "down.test.yml"), "w").write('''
    ... rule_files: [rules.yml]
    ... tests:
    ...   - interval: 1m
    ...     input_series:
    ...       - series: 'up{job="api"}'
    ...         values: '1 0x5'
    ...     alert_rule_test:
    ...       - eval_time: 2m
    ...         alertname: Down
    ...       - eval_time: 3m
    ...         alertname: Down
    ...         exp_alerts:
    ...           - exp_labels: {severity: page, job: api}
    ...     promql_expr_test:
    ...       - expr: up + 1
    ...         eval_time: 30s
    ...         exp_samples:
    ...           - labels: '{job="api"}'
    ...             value: 3
    ... ''')
    >>> result = run_test_file(os.path.join(d, "down.test.yml"))
    >>> result.ok
    False
    >>> print(result.failures[0].message)
        expr: "up + 1", time: 30s,
            exp: {job="api"} 3E+00
            got: {job="api"} 2E+00
    >>> result.failures[0].key
    ('expr', 'up + 1', '30s')
    """
    result = FileResult(str(path))
    try:
        text = Path(path).read_text()
    except OSError as exc:
        result.failures.append(Failure("file", f"cannot read {path}: {exc.strerror}"))
        return result
    try:
        spec = parse_test_file(text, str(path))
    except UnitTestFormatError as exc:
        result.failures.append(Failure("file", str(exc)))
        return result
    rule_files, result.warnings = resolve_rule_files(path, spec.rule_files)
    order: dict[str, int] = {}
    for i, name in enumerate(spec.group_eval_order):
        if name in order:
            result.failures.append(Failure("file", f"group name repeated in evaluation order: {name}"))
            return result
        order[name] = i
    for group in spec.groups:
        if not group.interval_given and group.input_series:
            result.warnings.append(
                f"test group {group.name!r} has no interval: like promtool 2.42, every value of its series "
                "is loaded at time 0 (set e.g. 'interval: 1m')"
            )
        result.failures += _run_group(group, rule_files, spec.evaluation_interval_ms, order, result.notes)
    return result


def run_test_files(paths: Iterable[str | Path]) -> list[FileResult]:
    return [run_test_file(p) for p in paths]


def _run_group(tg: TestGroup, rule_files: list[str], eval_ms: int, order: Mapping[str, int], notes: list[str]) -> list[Failure]:
    name = tg.name

    def fail(kind: str, message: str, **kw: object) -> list[Failure]:
        return [Failure(kind, message, name, **kw)]  # type: ignore[arg-type]

    # Input series, as promtool's load command reads them: a series given twice keeps its last values.
    series: dict[Labels, list[float | None]] = {}
    for item in tg.input_series:
        try:
            series[parse_series(item.series)] = parse_series_values(item.values)
        except UnitTestFormatError as exc:
            return fail("series", f"series {item.series!r} values {item.values!r}: {exc}")

    try:
        groups = load_rule_files(
            rule_files, default_interval_ms=eval_ms, external_labels=dict(tg.external_labels), external_url=tg.external_url
        )
    except RuleError as exc:
        return fail("rules", "Headroom cannot load the rule files:\n  " + "\n  ".join(exc.problems))
    for test in tg.alert_tests:
        if not test.alertname:
            where = f" (in TestGroup {name})" if name else ""
            return fail("file", f"an item under alert_rule_test misses required attribute alertname at eval_time {format_duration(test.eval_ms)}{where}")

    # promtool evaluates every group at every evaluation interval, whatever the group's interval.
    for g in groups:
        if g.interval_ms != eval_ms:
            note = f"{g.source}: group {g.name!r} (interval {format_duration(g.interval_ms)}) is evaluated every {format_duration(eval_ms)} (evaluation_interval), as promtool does"
            if note not in notes:
                notes.append(note)
    # promtool evaluates each time with the samples up to it: a negative offset does not delay a group.
    groups = sorted((dataclasses.replace(g, interval_ms=eval_ms, delay_ms=0) for g in groups), key=lambda g: order.get(g.name, 0))
    max_t = tg.max_eval_ms()
    # The lateness covers the whole test: the store keeps every sample for the
    # expression tests, and nothing is evaluated but at the explicit ticks below.
    # promtool evaluates from time 0, even before any series has a sample.
    engine = RuleEngine(groups, lateness_ms=max_t + DEFAULT_LOOKBACK_MS + eval_ms, start_ms=0)

    stamps, batch_series, values = _samples_in_time_order(series, tg.interval_ms)
    keys = [canonical_bytes(labels) for labels in series]
    alert_times = sorted({t.eval_ms for t in tg.alert_tests})
    failures: list[Failure] = []
    fed, next_alert = 0, 0
    for ts in range(0, max_t + 1, eval_ms):
        upto = int(np.searchsorted(stamps, ts, side="right"))
        errors = []
        if upto > fed:
            rows = batch_series[fed:upto]
            batch = SampleBatch(keys, rows.astype(np.uint32), stamps[fed:upto], values[fed:upto])
            errors += engine.ingest(batch).errors
            fed = upto
        errors += engine.advance_to(ts).errors
        if errors:
            for message in errors:
                m = re.search(r"rule '(.*?)' at -?\d+: (.*)", message, re.DOTALL)
                rule, err = (m.group(1), m.group(2)) if m else ("?", message)
                failures += fail("evaluation", f"    rule: {rule}, time: {format_go_time(ts)}, err: {err}", key=("rule", rule, format_go_time(ts)))
            return failures
        while next_alert < len(alert_times) and ts <= alert_times[next_alert] < ts + eval_ms:
            t = alert_times[next_alert]
            for test in (x for x in tg.alert_tests if x.eval_ms == t):
                failures += _check_alerts(engine, test, name)
            next_alert += 1

    for test in tg.expr_tests:
        failures += _check_expr(engine, test, name, eval_ms)
    return failures


def _samples_in_time_order(series: Mapping[Labels, list[float | None]], interval_ms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All samples as (timestamps, series index, values), sorted by time; per series in the order written."""
    stamps: list[int] = []
    rows: list[int] = []
    values: list[float] = []
    for row, vals in enumerate(series.values()):
        for i, v in enumerate(vals):
            if v is not None:
                stamps.append(i * interval_ms)
                rows.append(row)
                values.append(v)
    stamps_a = np.asarray(stamps, dtype=np.int64)
    order = np.argsort(stamps_a, kind="stable")
    return stamps_a[order], np.asarray(rows, dtype=np.int64)[order], np.asarray(values, dtype=np.float64)[order]


def _check_alerts(engine: RuleEngine, test: AlertTest, group: str) -> list[Failure]:
    got = sorted(
        (alert.labels, tuple(sorted(alert.annotations)))
        for alert in engine.active_alerts()
        if alert.state == FIRING and dict(alert.labels).get("alertname") == test.alertname
    )
    expected = sorted((a.labels, a.annotations) for a in test.exp_alerts)
    if got == expected:
        return []
    when = format_duration(test.eval_ms)
    head = f"    name: {group},\n" if group else ""
    message = (
        f"{head}    alertname: {test.alertname}, time: {when}, \n"
        f"        exp:{indent(format_alerts(expected), ' ' * 12)}, \n"
        f"        got:{indent(format_alerts(got), ' ' * 12)}"
    )
    return [Failure("alert", message, group, ("alert", test.alertname, when), tuple(expected), tuple(got))]


def _check_expr(engine: RuleEngine, test: ExprTest, group: str, eval_ms: int) -> list[Failure]:
    when = format_duration(test.eval_ms)
    head = f"    expr: {go_quote(test.expr)}, time: {when}"
    key = ("expr", test.expr, when)
    try:
        # promtool's engine gives x[5m:] the evaluation interval as resolution.
        result = compile_expr(test.expr, subquery_step_ms=eval_ms).evaluate(EvalContext(engine.store, test.eval_ms, engine.lookback_ms))
    except UnsupportedExpression as exc:
        return [Failure("expr", f"{head}, err: not supported by Headroom: {exc}", group, key)]
    except EvaluationError as exc:
        return [Failure("expr", f"{head}, err: {exc}", group, key)]
    if isinstance(result, Scalar):
        got = [((), float(result.value))]
    elif isinstance(result, InstantVector):
        got = [(labels, float(value)) for labels, value in result.samples()]
    else:  # pragma: no cover - compile_expr refuses other results
        return [Failure("expr", f"{head}, err: rule result is not a vector or scalar", group, key)]
    expected = []
    for sample in test.exp_samples:
        try:
            expected.append((parse_metric(sample.labels), sample.value))
        except UnitTestFormatError as exc:
            return [Failure("expr", f"{head}, err: labels {go_quote(sample.labels)}: {exc}", group, key)]
    got.sort(key=lambda s: s[0])
    expected.sort(key=lambda s: s[0])
    # reflect.DeepEqual: same labels in the same order, floats compared with == (NaN never equal).
    same = len(got) == len(expected) and all(g[0] == e[0] and g[1] == e[1] for g, e in zip(got, expected))
    if same:
        return []
    message = f"{head},\n        exp: {format_samples(expected)}\n        got: {format_samples(got)}"
    return [Failure("expr", message, group, key, tuple(expected), tuple(got))]
