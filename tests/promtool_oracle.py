"""promtool as the oracle: what Prometheus 2.x itself answers for an expression.

A case is input series in promtool's notation (``'x{job="a"}'`` with values
``'0+10x5 stale _x2 3'``) and queries (expression, evaluation time). The same
case runs through ``promtool test rules`` and through Headroom, and the two
answers are compared exactly.

promtool prints what an expression returned only when a test fails, so every
query expects one sample that never occurs; its failure report then carries
the real result (``got: ...``) or the evaluation error (``err: ...``), in
query order.

promtool also loads the input series lazily, one ``evaluation_interval`` tick
at a time up to the latest ``eval_time`` of the test group, so a query at
a time between two ticks would miss the samples after the last tick. The
oracle evaluates rules at the series' interval and adds one last query after
every sample, so every sample is loaded before the queries run.

>>> expand_values("1+2x2 _ stale _x2 5x1")[:3], len(expand_values("1+2x2 _ stale _x2 5x1"))
([1.0, 3.0, 5.0], 9)
>>> series_labels('up{job="a b", instance="x"}')
(('__name__', 'up'), ('instance', 'x'), ('job', 'a b'))
"""

from __future__ import annotations

import ast
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import yaml

from detector.wire.batch import SampleBatch
from detector.labels import Labels
from detector.promql import EvalContext, EvaluationError, InstantVector, Scalar, UnsupportedExpression, compile_expr
from detector.rule_tests import parse_series, parse_series_values
from detector.store import STALE_NAN_BITS, SeriesStore

Result = dict[Labels, float] | str
"""A query's answer: its samples by label set, or the evaluation error's message."""

Series = Sequence[tuple[str, str]]
"""(series in selector notation, values in promtool's expanding notation)."""

STALE = np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0]
_SENTINEL = '{__oracle_sentinel__="never"}'


@cache
def promtool_binary() -> str:
    """Path of a Prometheus 2.x ``promtool``, installing Debian's if there is none."""
    path = shutil.which("promtool")
    if path is None:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = [*sudo, "apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
        if subprocess.run(install, env=env).returncode != 0:
            # Package lists may be missing or stale on a fresh machine.
            subprocess.run([*sudo, "apt-get", "update"], env=env, check=True)
            subprocess.run(install, env=env, check=True)
        path = shutil.which("promtool")
        assert path is not None, "installed the prometheus package but found no promtool"
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    assert re.search(r"version 2\.", version), f"the oracle must be Prometheus 2.x, found: {version}"
    return path


def series_labels(selector: str) -> Labels:
    """Label set of a series written as promtool writes it, e.g. ``x{a="1"}`` (see detector.rule_tests.series)."""
    return parse_series(selector)


def expand_values(text: str) -> list[float | None]:
    """promtool's expanding notation as one value per interval; None where a sample is missing.

    ``a+bxn`` is a followed by n values, each the previous plus b (added up,
    not multiplied, as promtool does); ``axn`` is a, n+1 times; ``_xn`` is n
    missing samples; ``stale`` is a staleness marker. The parser is Headroom's
    own (``headroom test-rules`` reads the same notation).
    """
    return parse_series_values(text)


def _duration(ms: int) -> str:
    return f"{ms}ms"


def promtool_results(series: Series, queries: Sequence[tuple[str, int]], interval_ms: int) -> list[Result]:
    """Prometheus's answer to each (expression, evaluation time in ms) over ``series``."""
    steps = max(len(expand_values(v)) for _, v in series)
    loaded = ("vector(0)", max(steps * interval_ms, max(t for _, t in queries)))
    test = {
        "rule_files": [],
        "evaluation_interval": _duration(interval_ms),
        "tests": [
            {
                "interval": _duration(interval_ms),
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": _duration(t), "exp_samples": [{"labels": _SENTINEL, "value": 0}]}
                    for expr, t in [*queries, loaded]
                ],
            }
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "oracle.test.yml"
        path.write_text(yaml.safe_dump(test))
        run = subprocess.run([promtool_binary(), "test", "rules", str(path)], capture_output=True, text=True)
    return parse_failures(run.stdout + run.stderr, len(queries) + 1)[:-1]


_GOT_SAMPLE = re.compile(r'\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\} ([^,\s]+)(?:, |$)')
_GOT_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def table_disagreements(cases: Iterable[tuple[str, Series, str, int, Result]], agree: Callable[[Result, Result], bool],
                        interval_ms: int) -> list[str]:
    """Rows ``(what, series, expr, t_ms, answer)`` of a hand-written answer table that promtool answers otherwise."""
    wrong = []
    for what, series, expr, t_ms, answer in cases:
        (got,) = promtool_results(series, [(expr, t_ms)], interval_ms)
        if not agree(answer, got):
            wrong.append(f"{what}: {expr} promtool says {got}, the table {answer}")
    return wrong


def parse_failures(output: str, expected: int) -> list[Result]:
    """The result or error of each failed ``promql_expr_test``, in order, from promtool's report."""
    results: list[Result] = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("expr: ") and ", err: " in line:
            results.append(line.split(", err: ", 1)[1])
        elif line.startswith("got: "):
            results.append(_parse_samples(line[len("got: ") :]))
    assert len(results) == expected, f"expected {expected} answers from promtool, got:\n{output}"
    return results


def _parse_samples(text: str) -> dict[Labels, float]:
    if text == "nil":
        return {}
    out = {}
    for match in _GOT_SAMPLE.finditer(text):
        labels = tuple(sorted((k, ast.literal_eval(f'"{v}"')) for k, v in _GOT_LABEL.findall(match[1])))
        out[labels] = float(match[2])
    return out


def load_store(series: Series, interval_ms: int) -> SeriesStore:
    """A store holding ``series`` as promtool loads them: value i at i × interval."""
    rows = []
    for selector, values in series:
        samples = [(i * interval_ms, v) for i, v in enumerate(expand_values(values)) if v is not None]
        rows.append((series_labels(selector), samples))
    store = SeriesStore(retention_ms=1 << 40)
    store.append(SampleBatch.from_series(rows))
    return store


def headroom_results(series: Series, queries: Sequence[tuple[str, int]], interval_ms: int) -> list[Result]:
    """Headroom's answer to each (expression, evaluation time in ms) over ``series``."""
    store = load_store(series, interval_ms)
    results: list[Result] = []
    for expr, t_ms in queries:
        try:
            value = compile_expr(expr).evaluate(EvalContext(store, t_ms))
        except EvaluationError as exc:
            results.append(str(exc))
            continue
        assert isinstance(value, InstantVector), expr
        results.append(dict(value.samples()))
    return results


def same_result(ours: Result, theirs: Result) -> bool:
    """Equal label sets with bit-equal values (any NaN equals any NaN), or the same error."""
    if isinstance(ours, str) or isinstance(theirs, str):
        return isinstance(ours, str) and isinstance(theirs, str) and ours in theirs
    return ours.keys() == theirs.keys() and all(_same_float(ours[k], theirs[k]) for k in ours)


def _same_float(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)


def mismatches(series: Series, queries: Sequence[tuple[str, int]], interval_ms: int) -> list[str]:
    """Every query where Headroom and promtool disagree, described; empty when they agree."""
    ours = headroom_results(series, queries, interval_ms)
    theirs = promtool_results(series, queries, interval_ms)
    return [
        f"{expr} @ {t}ms:\n  headroom: {a}\n  promtool: {b}"
        for (expr, t), a, b in zip(queries, ours, theirs)
        if not same_result(a, b)
    ]


UNSUPPORTED = "unsupported: "


def headroom_answers(series: Series, queries: Sequence[tuple[str, int]], interval_ms: int) -> list[Result]:
    """Headroom's answer to each query, errors included: an expression it refuses
    reads ``UNSUPPORTED`` + why, an evaluation error its message; a scalar is a
    sample with no labels, as promtool shows it."""
    store = load_store(series, interval_ms)
    answers: list[Result] = []
    for expr, t_ms in queries:
        try:
            value = compile_expr(expr).evaluate(EvalContext(store, t_ms))
        except UnsupportedExpression as exc:
            answers.append(UNSUPPORTED + str(exc))
            continue
        except EvaluationError as exc:
            answers.append(str(exc))
            continue
        answers.append({(): value.value} if isinstance(value, Scalar) else dict(value.samples()))
    return answers
