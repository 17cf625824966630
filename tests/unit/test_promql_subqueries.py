"""Subqueries, ``f(expr[range:step] offset o)``, checked against promtool (Prometheus 2.42).

Every range function over subqueries of several ranges, steps that divide the
range and steps that do not, offsets, evaluation times on and off the step
grid (and before the range's start, where the steps' alignment to absolute
multiples of the step shows), nested subqueries, and ``[5m:]`` (the
evaluation interval as the step). Also what a subquery makes the store keep.
"""

from __future__ import annotations

import numpy as np
import pytest

from detector.promql import EvalContext, EvaluationError, compile_expr
from detector.rules.alerting import AlertingRule
from detector.rules.group import RuleGroup
from tests.promtool_oracle import Result, load_store, promtool_results, same_result

STEP = 15_000

SERIES = [
    ('c{job="a", instance="1"}', "0+7x20 3+5x20 _x3 20+9x30"),  # a counter with a reset and a gap
    ('c{job="a", instance="2"}', "100+3x70"),
    ('g{job="a"}', "5 3 8 1 1 1 9 _ 2 7 stale 4 4 6 -2 10 3 3 3 0 8 1 5 2 2 9 1 1 6 4 3 7 2 5 5 5 1 8 0 3"),
    ('g{job="b"}', "1+0.5x40 stale 2x20"),
]

FUNCTIONS = [
    "max_over_time({})", "min_over_time({})", "avg_over_time({})", "sum_over_time({})", "count_over_time({})",
    "stddev_over_time({})", "stdvar_over_time({})", "last_over_time({})", "present_over_time({})",
    "quantile_over_time(0.75, {})", "changes({})", "resets({})", "delta({})", "deriv({})",
    "predict_linear({}, 120)", "idelta({})",
]
COUNTER_FUNCTIONS = ["rate({})", "increase({})", "irate({})", "resets({})"]
SUBQUERIES = ["g[5m:1m]", "g[3m:45s]", "g[5m:40s] offset 1m", "g[4m:7s]", "g[2m:]", "(g > 2)[5m:30s]"]
COUNTER_SUBQUERIES = ["c[5m:30s]", "c[5m:1m] offset 90s", "c[3m:25s]", "c[4m:]"]
NESTED = [
    "max_over_time(rate(c[1m])[5m:30s])",
    "max_over_time(max_over_time(g[2m:20s])[5m:1m])",
    "avg_over_time(sum by (job) (g)[5m:1m])",
    "rate(sum without (instance) (c)[5m:30s])",
    "max_over_time(deriv(g[2m:30s])[3m:1m] offset 30s)",
    "absent_over_time(nothing[5m:1m])",
    "absent_over_time(g[5m:1m])",
    "sum(count_over_time(g[10m:1m]))",
]
TIMES = [30_000, 90_000, 4 * 60_000, 7 * 60_000 + 13_000, 11 * 60_000 + 59_000, 15 * 60_000, 21 * 60_000 + 37_000]


def queries() -> list[tuple[str, int]]:
    exprs = [f.format(s) for f in FUNCTIONS for s in SUBQUERIES]
    exprs += [f.format(s) for f in COUNTER_FUNCTIONS for s in COUNTER_SUBQUERIES]
    exprs += NESTED
    return [(e, t) for e in exprs for t in TIMES]


def headroom(queries: list[tuple[str, int]]) -> list[Result]:
    store = load_store(SERIES, STEP)
    out: list[Result] = []
    for expr, t in queries:
        try:
            value = compile_expr(expr, subquery_step_ms=STEP).evaluate(EvalContext(store, t))
        except EvaluationError as exc:
            out.append(str(exc))
            continue
        out.append(dict(value.samples()))
    return out


def test_subqueries_give_promtools_answers(promtool: str) -> None:
    cases = queries()
    assert len(cases) > 700
    ours, theirs = headroom(cases), promtool_results(SERIES, cases, STEP)
    wrong = [f"{e} @ {t}ms:\n  headroom: {a}\n  promtool: {b}" for (e, t), a, b in zip(cases, ours, theirs) if not same_result(a, b)]
    assert wrong == [], "\n".join(wrong[:10]) + f"\n({len(wrong)} of {len(cases)})"
    assert sum(1 for r in theirs if isinstance(r, dict) and r) > 500  # most queries do return samples


@pytest.mark.parametrize(
    ("expr", "t_ms", "steps"),
    [
        ("max_over_time(x[5m:1m])", 600_000, [300_000, 360_000, 420_000, 480_000, 540_000, 600_000]),
        ("max_over_time(x[5m:1m])", 630_000, [360_000, 420_000, 480_000, 540_000, 600_000]),  # aligned to multiples of 1m
        ("max_over_time(x[5m:1m] offset 30s)", 630_000, [300_000, 360_000, 420_000, 480_000, 540_000, 600_000]),
        ("max_over_time(x[2m:45s])", 60_000, [-45_000, 0, 45_000]),  # before 0 too, on the same grid
        ("max_over_time(x[5m:])", 600_000, list(range(300_000, 600_001, 60_000))),  # the default step
    ],
)
def test_steps_are_absolute_multiples_of_the_resolution(expr: str, t_ms: int, steps: list[int]) -> None:
    assert compile_expr(expr).subquery.steps(t_ms) == steps


@pytest.mark.parametrize(
    ("expr", "reach_ms"),
    [
        ("max_over_time(x[5m:1m])", 300_000),
        ("max_over_time(x[5m:1m] offset 2m)", 420_000),
        ("max_over_time(rate(x[10m] offset 1m)[5m:1m] offset 2m)", 2 * 60_000 + 5 * 60_000 + 11 * 60_000),
        ("predict_linear(x[30m:1m], 3600) > 0", 1_800_000),
    ],
)
def test_reach_counts_the_subquery_range_offset_and_inner_reach(expr: str, reach_ms: int) -> None:
    node = compile_expr(expr)
    assert node.reach_ms() == reach_ms
    rule = AlertingRule("A", node, expr)
    assert RuleGroup("g", "inline", 60_000, (rule,)).reach_ms() == reach_ms


def test_a_bare_subquery_is_refused() -> None:
    from detector.promql import UnsupportedExpression

    with pytest.raises(UnsupportedExpression, match="subquery"):
        compile_expr("x[5m:1m]")


# --- Random expressions: subqueries of random ranges, steps, offsets (negative too) and @ times. -------

RANDOM_FUNCTIONS = [
    "rate", "increase", "delta", "irate", "idelta", "deriv", "changes", "resets", "avg_over_time", "min_over_time",
    "max_over_time", "sum_over_time", "count_over_time", "stddev_over_time", "last_over_time", "present_over_time",
]
RANDOM_INNER = ["m", "m{{kind=\"gauge\"}} * 2", "sum by (kind) (m)", "rate(m[{r}ms])", "max_over_time(m[{r}ms:{s}ms])", "m offset {o}ms"]


def _random_case(seed: int) -> tuple[list[tuple[str, str]], list[tuple[str, int]], int]:
    rng = np.random.default_rng(seed)
    interval_ms = int(rng.choice([5_000, 15_000, 60_000]))
    steps = 40
    series = []
    for i in range(12):
        counter = i % 3 != 0
        values = np.cumsum(rng.integers(0, 20, steps)) if counter else rng.integers(-50, 50, steps)
        tokens = []
        for value in values:
            roll = rng.random()
            if counter and roll < 0.05:
                tokens.append(repr(float(rng.integers(0, 10))))  # a reset
            tokens.append("_" if roll > 0.92 else "stale" if roll > 0.88 else repr(float(value)))
        series.append((f'm{{kind="{"counter" if counter else "gauge"}", i="{i}"}}', " ".join(tokens)))
    end = steps * interval_ms
    queries = []
    for _ in range(60):
        t = int(rng.integers(0, end + 5 * interval_ms))
        ms = lambda low, high: int(rng.integers(low, high))  # noqa: E731
        inner = RANDOM_INNER[rng.integers(len(RANDOM_INNER))].format(
            r=ms(interval_ms, 6 * interval_ms), s=ms(interval_ms // 2, 3 * interval_ms), o=ms(-3 * interval_ms, 3 * interval_ms))
        step = "" if rng.random() < 0.25 else f"{ms(interval_ms // 3, 4 * interval_ms)}ms"
        modifiers = ""
        roll = rng.random()
        if roll < 0.3:
            modifiers = f" offset {ms(-4 * interval_ms, 4 * interval_ms)}ms"
        elif roll < 0.45:
            modifiers = f" @ {ms(0, t + 1) / 1000}"
        elif roll < 0.55:
            modifiers = " @ end()"
        fn = RANDOM_FUNCTIONS[rng.integers(len(RANDOM_FUNCTIONS))]
        queries.append((f"{fn}(({inner})[{ms(interval_ms, 10 * interval_ms)}ms:{step}]{modifiers})", t))
    return series, queries, interval_ms


@pytest.mark.parametrize("seed", range(4))
def test_random_subqueries_agree_with_promtool(seed: int, promtool: str) -> None:
    series, cases, interval_ms = _random_case(seed)
    store = load_store(series, interval_ms)
    ours: list[Result] = []
    for expr, t in cases:
        try:
            ours.append(dict(compile_expr(expr, subquery_step_ms=interval_ms).evaluate(EvalContext(store, t)).samples()))
        except EvaluationError as exc:
            ours.append(str(exc))
    theirs = promtool_results(series, cases, interval_ms)
    wrong = [f"{e} @ {t}ms:\n  headroom: {a}\n  promtool: {b}" for (e, t), a, b in zip(cases, ours, theirs) if not same_result(a, b)]
    assert wrong == [], "\n".join(wrong[:5]) + f"\n({len(wrong)} of {len(cases)})"


def test_placement_sees_inside_subqueries() -> None:
    from detector.rules.placement import needs_global_lane, place_groups

    assert not needs_global_lane(compile_expr("max_over_time(rate(x[1m])[5m:1m])"))
    assert needs_global_lane(compile_expr("max_over_time(sum(rate(x[1m]))[5m:1m])"))
    expr = "max_over_time(sum by (queue) (depth)[10m:1m] offset 5m) > 3"
    group = RuleGroup("g", "inline", 60_000, (AlertingRule("A", compile_expr(expr), expr),))
    placement = place_groups([group])
    assert placement.global_ == [group]
    assert placement.feeds_global_lane((("__name__", "depth"), ("queue", "q"))) and group.reach_ms() == 900_000


@pytest.mark.parametrize(
    ("expr", "splits"),
    [
        ("sum by (job) (max_over_time(x[5m:1m]))", True),  # the subquery runs in stage 1, over raw series
        ("max_over_time(sum by (job) (x)[5m:1m]) > 1", False),  # merged partials exist for the tick only
        ("absent_over_time(x[5m:1m])", False),
        ("sum by (job) (x offset -1m)", False),  # the group waits past its ticks: one engine does that
    ],
)
def test_two_stage_evaluation_leaves_what_reads_past_steps_or_ahead_to_one_engine(expr: str, splits: bool) -> None:
    from detector.stages.split import CannotSplit, split_expression

    try:
        split_expression(compile_expr(expr))
    except CannotSplit:
        assert not splits
    else:
        assert splits
