"""The ``@`` modifier and negative offsets, checked against promtool (Prometheus 2.42), and how the stream bounds them.

* Expressions: ``@ <time>``, ``@ start()``, ``@ end()`` and negative offsets on
  selectors, range selectors and subqueries (where ``@ end()`` inside means
  the rule's evaluation time, not the step), with ``timestamp()`` and
  ``predict_linear()`` (whose origin stays the evaluation time), give
  promtool's answers.
* On the stream: a group with a negative offset is evaluated once the
  watermark has passed its time plus the offset, and sees what promtool's
  expression test sees then; a fixed ``@`` after the evaluation time or
  older than the store keeps fails the evaluation, naming the rule.
"""

from __future__ import annotations

import pytest

from detector.promql import EvalContext, compile_expr
from detector.rules.alerting import AlertingRule
from detector.rules.engine import RuleEngine
from detector.rules.group import RuleGroup
from detector.wire.batch import SampleBatch
from tests.promtool_oracle import Result, load_store, promtool_results, same_result

STEP = 15_000
MIN = 60_000
SERIES = [
    ('x{job="a"}', "1+2x40 stale 7x10 3+4x20"),
    ('x{job="b"}', "50-1x30 _x5 9x40"),
    ('c{job="a"}', "0+10x30 5+3x40"),
]
EXPRESSIONS = [
    "x @ 120", "x @ 300.5 offset 1m", "x @ start()", "x @ end() offset 2m", "x offset -2m", "x offset -30s",
    "rate(c[2m] @ 240)", "rate(c[2m] offset -1m)", "increase(c[5m] @ end())", "predict_linear(x[3m] @ 360, 600)",
    "timestamp(x @ 420 offset 15s)", "timestamp(x offset -1m)", "max_over_time(x[2m] @ 400 offset -30s)",
    "max_over_time(x[3m:30s] @ 400)", "max_over_time(x[3m:30s] offset -1m)", "avg_over_time(x[3m:45s] @ end())",
    "max_over_time(timestamp(x @ end())[3m:1m])", "sum_over_time(x @ 240 [5m:1m])", "rate(c[1m:15s] @ 360 offset 1m)",
    "x - x @ 240", "sum by (job) (x offset -45s) / sum by (job) (x)", "absent_over_time(x[1m] @ 410)",
    "changes(x[5m] offset -2m)", "deriv(x @ 400 [4m:20s])",
]
TIMES = [7 * MIN, 8 * MIN + 20_000, 12 * MIN, 13 * MIN + 45_000]


def headroom(queries: list[tuple[str, int]]) -> list[Result]:
    store = load_store(SERIES, STEP)
    return [dict(compile_expr(e, subquery_step_ms=STEP).evaluate(EvalContext(store, t)).samples()) for e, t in queries]


def test_at_and_negative_offsets_give_promtools_answers(promtool: str) -> None:
    cases = [(e, t) for e in EXPRESSIONS for t in TIMES]
    ours, theirs = headroom(cases), promtool_results(SERIES, cases, STEP)
    wrong = [f"{e} @ {t}ms:\n  headroom: {a}\n  promtool: {b}" for (e, t), a, b in zip(cases, ours, theirs) if not same_result(a, b)]
    assert wrong == [], "\n".join(wrong[:10]) + f"\n({len(wrong)} of {len(cases)})"
    assert sum(1 for r in theirs if isinstance(r, dict) and r) > 80


def test_a_negative_offset_sets_how_long_a_group_waits() -> None:
    node = compile_expr("max_over_time(x[5m] offset -2m) > x offset -30s")
    assert (node.lead_ms(), node.reach_ms()) == (120_000, 180_000)
    assert compile_expr("max_over_time((x offset -1m)[5m:1m] offset 30s)").lead_ms() == 30_000
    assert compile_expr("x @ end() offset -1m").lead_ms() == 60_000
    group = RuleGroup("g", "inline", MIN, (AlertingRule("A", node, "..."),))
    assert group.evaluation_delay_ms == 120_000


def ingest(engine: RuleEngine, t: int, value: float):
    return engine.ingest(SampleBatch.from_series([((("__name__", "x"), ("job", "a")), [(t, value)])]))


def test_a_group_with_a_negative_offset_is_evaluated_once_the_stream_has_the_future(promtool: str) -> None:
    expr = "x offset -1m > 3"
    rule = AlertingRule("Ahead", compile_expr(expr, as_rule=True), expr)
    engine = RuleEngine([RuleGroup("g", "inline", MIN, (rule,))], start_ms=0)
    assert engine.reach_ms >= MIN  # the store keeps the minute the group waits
    values = [1, 2, 3, 4, 5, 6]
    evaluated = []
    for minute, value in enumerate(values):
        out = ingest(engine, minute * MIN, value)
        evaluated.append((minute, out.evaluations, [(t.eval_time, t.state, t.value) for t in out.transitions]))
    # Each minute's sample lets the group evaluate the minute before: then x offset -1m is known.
    assert [e[1] for e in evaluated] == [0, 1, 1, 1, 1, 1]
    assert evaluated[3][2] == [(2 * MIN, "firing", 4.0)]
    # What it saw is what Prometheus answers for the expression over all the samples.
    series = [('x{job="a"}', " ".join(str(v) for v in values))]
    [answer] = promtool_results(series, [("x offset -1m", 2 * MIN)], MIN)
    assert answer == {(("__name__", "x"), ("job", "a")): 4.0}


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("x @ 600 > 0", "@ 600 is after the evaluation time"),
        ("x @ 60 > 0", "@ 60 reads samples older than the stream keeps"),
    ],
)
def test_a_fixed_at_time_the_stream_cannot_answer_fails_the_evaluation_naming_the_rule(expr: str, message: str) -> None:
    rule = AlertingRule("Pinned", compile_expr(expr, as_rule=True), expr)
    engine = RuleEngine([RuleGroup("g", "inline", MIN, (rule,))], start_ms=0)
    errors = []
    for minute in range(16):
        errors += ingest(engine, minute * MIN, 1.0).errors
    assert errors and all("rule 'Pinned'" in e for e in errors)
    assert any(message in e for e in errors), errors


def test_a_fixed_at_time_within_the_store_is_read() -> None:
    expr = "x @ 120 > 0"
    rule = AlertingRule("Pinned", compile_expr(expr, as_rule=True), expr)
    engine = RuleEngine([RuleGroup("g", "inline", MIN, (rule,))], start_ms=0)
    out = [ingest(engine, m * MIN, float(m)) for m in range(3)]
    assert [e for o in out for e in o.errors] == [f"inline: group 'g', rule 'Pinned' at {t}: @ 120 is after the evaluation time: "
                                                  "the stream has not seen it yet" for t in (0, MIN)]
    assert [(t.eval_time, t.state, t.value) for t in out[2].transitions] == [(2 * MIN, "firing", 2.0)]
