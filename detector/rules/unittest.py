"""Rule unit tests in promtool's format, run through Headroom's own rule engine.

``promtool test rules`` reads a YAML file of ``rule_files``, an
``evaluation_interval`` (default 1m), an optional ``group_eval_order`` and
``tests``: groups of ``input_series`` (series in selector notation, values in
the expanding notation ``a+bxn``, ``axn``, ``_``, ``_xn``, ``stale``), with
``alert_rule_test`` (the *firing* alerts expected at an ``eval_time``) and
``promql_expr_test`` (the samples an expression returns at an ``eval_time``).
This module reads the same files, the way Prometheus 2.42 reads them, and
answers the same questions with Headroom's :class:`RuleEngine` and PromQL
evaluator; nothing here runs promtool.

How the evaluation lines up with promtool's:

* promtool evaluates every rule group at every ``evaluation_interval`` from
  time 0 up to the largest ``eval_time`` of the test group, whatever the
  group's own ``interval``. Here every group gets the evaluation interval as
  its interval, the engine's first tick is time 0 (before any sample), and
  the watermark is advanced explicitly to each tick.
* promtool loads the input series lazily: before the evaluation at ``ts`` it
  adds the samples at or before ``ts``. The engine is fed the same slices.
  So an alert test at an ``eval_time`` between two ticks sees the state of
  the tick before it, and a ``promql_expr_test`` runs after the last tick,
  over the samples (and recorded series) up to that tick only.
* alerts are compared as promtool does: the firing alerts of every rule named
  ``alertname``, labels and annotations, as sorted lists (so as multisets);
  expression results as sorted lists of (labels, value) with exact float
  equality (Prometheus 2.42 uses ``reflect.DeepEqual``: no tolerance, and a
  NaN never equals an expected NaN).
* a test group without ``interval`` has interval 0 in promtool 2.42: every
  value of a series is loaded at time 0 and the first one wins. The same
  happens here (and a warning says so).
* ``group_eval_order`` orders the groups (stably; unnamed groups count as
  position 0, as in promtool).

What Headroom cannot answer exactly fails the test group with the reason: a
rule file it cannot load (the loader's problems, by file, group and rule), an
expression it does not evaluate, a rule or expression that reads the
``ALERTS``/``ALERTS_FOR_STATE`` series (the engine does not write them),
templates using ``$externalURL`` when the test sets ``external_url`` (the
engine renders it empty), and native-histogram series notation.

The entry point is :func:`run_test_file`; ``headroom test-rules`` prints its results.
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import numpy as np
import yaml

from detector.wire.batch import SampleBatch
from detector.durations import parse_duration
from detector.errors import HeadroomError, RuleError
from detector.labels import METRIC_NAME, Labels, canonical_bytes
from detector.promql import EvalContext, EvaluationError, InstantVector, Scalar, UnsupportedExpression, compile_expr
from detector.promql.plan import DEFAULT_LOOKBACK_MS
from detector.rules.alerting import FIRING
from detector.rules.engine import RuleEngine
from detector.rules.files import load_rule_files
from detector.store import STALE_NAN_BITS
from detector.output.templates import format_labels, go_quote

DEFAULT_EVALUATION_INTERVAL_MS = 60_000
STALE_NAN = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])
"""Prometheus's staleness marker, as a float (compare it by bits, never with ==)."""


class UnitTestFormatError(HeadroomError, ValueError):
    """A test file, series or label set that promtool would not read either."""


# --- The series notation ---------------------------------------------------------------------------


def is_stale_marker(value: float) -> bool:
    """True only for the staleness-marker NaN (by its bits; any other NaN is a value)."""
    return struct.unpack("<Q", struct.pack("<d", value))[0] == STALE_NAN_BITS


_SPACE = " \t\r\n"
_KEYWORDS = {
    # The lexer's keywords: words that are no IDENTIFIER. "inf" and "nan" are numbers.
    "and", "or", "unless", "atan2", "sum", "avg", "count", "min", "max", "group", "stddev", "stdvar",
    "topk", "bottomk", "count_values", "quantile", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "bool", "start", "end",
}  # fmt: skip


def _is_alpha(c: str) -> bool:
    return c == "_" or "a" <= c <= "z" or "A" <= c <= "Z"


def _is_alnum(c: str) -> bool:
    return _is_alpha(c) or "0" <= c <= "9"


def _lex_values(text: str) -> list[tuple[str, str, int]]:
    """Tokens of a values string, as Prometheus's lexer splits a series description's values."""
    tokens: list[tuple[str, str, int]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        start = i
        if c in _SPACE:
            while i < n and text[i] in _SPACE:
                i += 1
            tokens.append(("space", " ", start))
            continue
        if c in "+-x_":
            tokens.append(({"+": "add", "-": "sub", "x": "times", "_": "blank"}[c], c, start))
            i += 1
            continue
        if "0" <= c <= "9" or (c == "." and i + 1 < n and "0" <= text[i + 1] <= "9"):
            # Digits, a fraction, an exponent; no hexadecimal here ("0x3" is 0 repeated).
            while i < n and "0" <= text[i] <= "9":
                i += 1
            if i < n and text[i] == ".":
                i += 1
                while i < n and "0" <= text[i] <= "9":
                    i += 1
            if i < n and text[i] in "eE":
                i += 1
                if i < n and text[i] in "+-":
                    i += 1
                while i < n and "0" <= text[i] <= "9":
                    i += 1
            if i < n and text[i] != "x" and _is_alnum(text[i]):
                raise UnitTestFormatError(f"bad number syntax: {text[start:i + 1]!r}")
            tokens.append(("number", text[start:i], start))
            continue
        if _is_alpha(c):
            while i < n and (_is_alnum(text[i]) or text[i] == ":"):
                i += 1
            word = text[start:i]
            kind = "number" if word.lower() in ("inf", "nan") else "keyword" if word.lower() in _KEYWORDS else "identifier"
            tokens.append((kind, word, start))
            continue
        if c == "{":
            raise UnitTestFormatError("native histogram samples ({{...}}) are not supported by Headroom")
        raise UnitTestFormatError(f"unexpected character in series values: {c!r}")
    return tokens


def _go_number(token: str) -> float:
    """Prometheus's number(): strconv.ParseInt(s, 0, 64) first (so "010" is octal 8), then ParseFloat."""
    if token.isdigit():
        if len(token) > 1 and token[0] == "0":
            if all(c in "01234567" for c in token):
                return float(int(token, 8))
        elif int(token) < 2**63:
            return float(int(token))
    try:
        value = float(token)
    except ValueError:
        raise UnitTestFormatError(f"error parsing number {token!r}") from None
    if math.isinf(value) and token.lower().lstrip("+-") != "inf":
        raise UnitTestFormatError(f"error parsing number {token!r}: value out of range")
    return value


def parse_series_values(text: str) -> list[float | None]:
    """promtool's expanding notation: one value per interval, None where a sample is missing.

    ``a+bxn`` is a followed by n values, each the previous plus b (added up,
    not multiplied, as promtool does); ``a-bxn`` counts down; ``axn`` is a,
    n+1 times; ``_`` is one missing sample and ``_xn`` n of them; ``stale`` is
    the staleness marker; numbers may be signed, fractional, in scientific
    notation, ``Inf``/``NaN`` (any case), and a leading zero means octal, as
    in Prometheus.

    >>> parse_series_values("1+2x2 _ -1-0.5x1 _x2 3x1 010 1e3 -Inf")
    [1.0, 3.0, 5.0, None, -1.0, -1.5, None, None, 3.0, 3.0, 8.0, 1000.0, -inf]
    >>> [is_stale_marker(v) for v in parse_series_values("stale NaN")]
    [True, False]
    >>> parse_series_values("1x2.5")
    Traceback (most recent call last):
    ...
    detector.rules.unittest.UnitTestFormatError: invalid repetition in series values: '2.5' is not a count
    """
    tokens = _lex_values(text)
    out: list[float | None] = []
    i = 0

    def peek(offset: int = 0) -> tuple[str, str, int]:
        return tokens[i + offset] if i + offset < len(tokens) else ("end", "", len(text))

    def describe(token: tuple[str, str, int]) -> str:
        return "end of input" if token[0] == "end" else f"{token[0]} {token[1]!r}"

    def count() -> int:
        nonlocal i
        kind, word, _ = peek()
        if kind != "number":
            raise UnitTestFormatError(f"unexpected {describe(peek())} in series values, expected a count after 'x'")
        i += 1
        if not word.isdigit():
            raise UnitTestFormatError(f"invalid repetition in series values: {word!r} is not a count")
        return int(word)

    def signed_number() -> float:
        nonlocal i
        sign = peek()[1]
        i += 1
        kind, word, _ = peek()
        if kind != "number":
            raise UnitTestFormatError(f"unexpected {describe(peek())} after {sign!r} in series values, expected a number")
        i += 1
        value = _go_number(word)
        return -value if sign == "-" else value

    while i < len(tokens):
        kind, word, _ = peek()
        if kind == "space":
            i += 1
            continue
        if kind == "blank":
            i += 1
            if peek()[0] == "times":
                i += 1
                out += [None] * count()
            else:
                out.append(None)
        else:
            if kind == "number":
                i += 1
                value = _go_number(word)
            elif kind in ("add", "sub"):
                value = signed_number()
            elif kind == "identifier" and word == "stale":
                i += 1
                value = STALE_NAN
            elif kind == "identifier":
                raise UnitTestFormatError(f"unexpected identifier {word!r} in series values, expected number or \"stale\"")
            else:
                raise UnitTestFormatError(f"unexpected {describe(peek())} in series values")
            if peek()[0] == "times":
                i += 1
                out += [value] * (count() + 1)
            elif peek()[0] in ("add", "sub"):
                step = signed_number()
                if peek()[0] != "times":
                    raise UnitTestFormatError(f"unexpected {describe(peek())} in series values, expected 'x' after a step")
                i += 1
                out.append(value)
                for _ in range(count()):
                    value += step
                    out.append(value)
            else:
                out.append(value)
        if peek()[0] not in ("space", "end"):
            raise UnitTestFormatError(f"unexpected {describe(peek())} in series values")
    return out


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def _unquote(text: str, pos: int) -> tuple[str, int]:
    """A PromQL string literal at ``text[pos]`` ("...", '...' or `...`): its value and the end position."""
    quote = text[pos]
    end = pos + 1
    if quote == "`":
        close = text.find("`", end)
        if close < 0:
            raise UnitTestFormatError("unterminated raw string")
        return text[end:close], close + 1
    out = bytearray()
    while True:
        if end >= len(text) or text[end] == "\n":
            raise UnitTestFormatError("unterminated quoted string")
        c = text[end]
        if c == quote:
            return out.decode(errors="replace"), end + 1
        if c != "\\":
            out += c.encode()
            end += 1
            continue
        e = text[end + 1 : end + 2]
        end += 2
        if e in _ESCAPES:
            out += _ESCAPES[e].encode()
        elif e == quote:
            out += e.encode()
        elif e in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = text[end : end + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise UnitTestFormatError(f"invalid escape \\{e}{digits} in a string")
            end += width
            code = int(digits, 16)
            if e == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code < 0xE000:
                raise UnitTestFormatError(f"invalid escape \\{e}{digits} in a string")
            else:
                out += chr(code).encode()
        elif e and e in "01234567":
            digits = text[end - 1 : end + 2]
            if len(digits) != 3 or not all(d in "01234567" for d in digits) or int(digits, 8) > 255:
                raise UnitTestFormatError(f"invalid octal escape \\{digits} in a string")
            end += 2
            out.append(int(digits, 8))
        else:
            raise UnitTestFormatError(f"unknown escape sequence \\{e} in a string")


def _parse_metric(text: str, *, series: bool) -> Labels:
    i, n = 0, len(text)

    def skip_space(i: int) -> int:
        while i < n and text[i] in _SPACE:
            i += 1
        return i

    i = skip_space(i)
    labels: dict[str, str] = {}
    name = None
    m = _METRIC_NAME.match(text, i)
    if m:
        name = m.group()
        if name.lower() in ("inf", "nan"):
            raise UnitTestFormatError(f"unexpected number {name!r}: not a metric name")
        i = m.end()
        if not series:
            i = skip_space(i)
    if i < n and text[i] == "{":
        i += 1
        while True:
            i = skip_space(i)
            if i < n and text[i] == "}":
                i += 1
                break
            m = _LABEL_NAME.match(text, i)
            if not m:
                found = repr(text[i]) if i < n else "end of input"
                raise UnitTestFormatError(f"unexpected {found} inside braces, expected a label name")
            label = m.group()
            i = skip_space(m.end())
            if not text.startswith("=", i) or text.startswith("=~", i):
                raise UnitTestFormatError(f"label {label!r}: a series has labels set with '=', not matchers")
            i = skip_space(i + 1)
            if i >= n or text[i] not in "\"'`":
                raise UnitTestFormatError(f"label {label!r}: expected a quoted string")
            value, i = _unquote(text, i)
            if label in labels:
                # promtool keeps both, and the series then matches nothing: refuse it instead.
                raise UnitTestFormatError(f"label {label!r} is set twice")
            labels[label] = value
            i = skip_space(i)
            if i < n and text[i] == ",":
                i += 1
            elif not (i < n and text[i] == "}"):
                raise UnitTestFormatError(f"expected ',' or '}}' after label {label!r}")
    elif name is None and skip_space(i) < n:
        raise UnitTestFormatError(f"expected a metric name or '{{' at {text[i:]!r}")
    i = skip_space(i)
    if i < n:
        raise UnitTestFormatError(f"unexpected {text[i:]!r} after the label set")
    if name is not None:
        labels[METRIC_NAME] = name  # the name before the braces wins over a __name__ label
    # Empty values are no labels, as in Prometheus.
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))


def parse_series(text: str) -> Labels:
    """Labels of an input series in promtool's notation, ``name{label="value", ...}``.

    Only ``=`` is allowed (a series has labels, not matchers); ``{...}`` may
    set ``__name__``; empty values are no labels.

    >>> parse_series('up{job="a b", instance=`x`, empty=""}')
    (('__name__', 'up'), ('instance', 'x'), ('job', 'a b'))
    >>> parse_series('{__name__="up", code=\\'5\\\\x30\\'}')
    (('__name__', 'up'), ('code', '50'))
    """
    if not text.strip():
        raise UnitTestFormatError("empty series: give a metric name or a label set")
    return _parse_metric(text, series=True)


def parse_metric(text: str) -> Labels:
    """Labels of an expected sample (``exp_samples[].labels``), as ``parser.ParseMetric`` reads them.

    ``''`` and ``'{}'`` are the empty label set (a scalar's result).

    >>> parse_metric('{}'), parse_metric('up { job="a" }')
    ((), (('__name__', 'up'), ('job', 'a')))
    """
    return _parse_metric(text, series=False)


# --- Reading the test file, as promtool's YAML decoder does ----------------------------------------


_NULLS = {"", "~", "null", "Null", "NULL"}
_FLOAT_SPECIAL = {
    ".nan": math.nan, ".NaN": math.nan, ".NAN": math.nan,
    ".inf": math.inf, ".Inf": math.inf, ".INF": math.inf,
    "+.inf": math.inf, "+.Inf": math.inf, "+.INF": math.inf,
    "-.inf": -math.inf, "-.Inf": -math.inf, "-.INF": -math.inf,
}  # fmt: skip
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_GO_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|0[0-7]*|[1-9][0-9]*)$")


def _go_yaml_float(text: str) -> float | None:
    """The float a plain YAML scalar is to go-yaml v2 (ints included); None if it is no number."""
    if text in _FLOAT_SPECIAL:
        return _FLOAT_SPECIAL[text]
    plain = text.replace("_", "")
    if text[:1] == ".":
        plain = text  # go-yaml tries only ParseFloat after a leading dot
    elif _GO_INT.match(plain):
        sign = -1 if plain[0] == "-" else 1
        digits = plain.lstrip("+-")
        if digits[:2].lower() in ("0x", "0b", "0o"):
            value = int(digits[2:], {"x": 16, "b": 2, "o": 8}[digits[1].lower()])
        elif len(digits) > 1 and digits[0] == "0":
            value = int(digits, 8)
        else:
            value = int(digits)
        if sign * value >= -(2**63) and value < 2**64:
            return float(sign * value)
    if _YAML_FLOAT.match(plain):
        value = float(plain)
        return None if math.isinf(value) else value  # ParseFloat's range error: no float
    return None


class _Decoder:
    """Typed reading of a composed YAML tree, with go-yaml v2's UnmarshalStrict rules.

    Unknown and repeated fields are errors; a scalar read as a string is its
    text; a number must be a plain (unquoted) YAML number; null is the zero value.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, node: yaml.Node, message: str) -> None:
        self.errors.append(f"line {node.start_mark.line + 1}: {message}")

    @staticmethod
    def is_null(node: yaml.Node | None) -> bool:
        return node is None or (
            isinstance(node, yaml.ScalarNode) and node.style is None and node.value in _NULLS
        ) or node.tag == "tag:yaml.org,2002:null"

    def string(self, node: yaml.Node | None) -> str:
        if self.is_null(node):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into a string")
            return ""
        return node.value

    def number(self, node: yaml.Node | None) -> float:
        if self.is_null(node):
            return 0.0
        value = None
        if isinstance(node, yaml.ScalarNode) and node.style is None:
            value = _go_yaml_float(node.value)
        if value is None:
            what = f"!!str `{node.value}`" if isinstance(node, yaml.ScalarNode) else _kind(node)
            self.fail(node, f"cannot unmarshal {what} into a number (write it unquoted, e.g. 0.5, 1e3, .inf)")
            return 0.0
        return value

    def duration(self, node: yaml.Node | None) -> int:
        text = self.string(node)
        if not text:
            return 0
        try:
            return parse_duration(text)
        except ValueError as exc:
            self.fail(node, str(exc))
            return 0

    def sequence(self, node: yaml.Node | None, item) -> list:
        if self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into a list")
            return []
        return [item(child) for child in node.value]

    def string_map(self, node: yaml.Node | None) -> dict[str, str] | None:
        if self.is_null(node):
            return None
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into a map of strings")
            return {}
        out: dict[str, str] = {}
        for key, value, merged in self.pairs(node):
            name = self.string(key)
            if name in out and not merged:
                self.fail(key, f"key {name!r} already set in map")
            if not (merged and name in out):
                out[name] = self.string(value)
        return out

    def pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node, bool]]:
        """(key, value, merged) of a mapping, with ``<<: *anchor`` merge keys expanded after its own keys."""
        own, merged = [], []
        for key, value in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
                for source in sources:
                    if isinstance(source, yaml.MappingNode):
                        merged += [(k, v, True) for k, v, _ in self.pairs(source)]
                    else:
                        self.fail(key, "a merge key (<<) needs a mapping or a list of mappings")
            else:
                own.append((key, value, False))
        return own + merged

    def struct(self, node: yaml.Node | None, fields: Mapping[str, object], what: str) -> dict[str, object]:
        """The fields present, decoded; unknown or repeated fields are errors, as in UnmarshalStrict."""
        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"cannot unmarshal {_kind(node)} into {what}")
            return {}
        out: dict[str, object] = {}
        for key, value, merged in self.pairs(node):
            name = self.string(key)
            if name not in fields:
                self.fail(key, f"field {name} not found in {what} (known: {', '.join(fields)})")
            elif name in out:
                if not merged:
                    self.fail(key, f"field {name} already set in {what}")
            else:
                out[name] = fields[name](value)  # type: ignore[operator]
        return out


def _kind(node: yaml.Node) -> str:
    return {yaml.MappingNode: "!!map", yaml.SequenceNode: "!!seq"}.get(type(node), f"!!str `{getattr(node, 'value', '')}`")


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
    detector.rules.unittest.UnitTestFormatError: line 1: field intervall not found in a test group (known: ...)
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise UnitTestFormatError(f"not valid YAML: {exc}") from None
    d = _Decoder()

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


# --- Results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One failed check, or the error that stopped a test group.

    ``kind`` is ``file`` (the test file itself), ``series``, ``rules`` (rule
    files Headroom cannot load, or cannot evaluate as Prometheus does),
    ``evaluation`` (a rule failed at an evaluation, which ends the group, as
    in promtool), ``alert`` or ``expr``. ``message`` is promtool's wording
    where promtool has one. ``key`` identifies the check the way promtool's
    report does: ``("alert", alertname, time)``, ``("expr", expr, time)``.
    """

    kind: str
    message: str
    group: str = ""
    key: tuple[str, ...] = ()
    expected: tuple = ()
    got: tuple = ()


@dataclass
class FileResult:
    path: str
    failures: list[Failure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


# --- Formatting like promtool ----------------------------------------------------------------------


def format_float_e(value: float) -> str:
    """``strconv.FormatFloat(v, 'E', -1, 64)``: the shortest exact digits, ``1.5E+00``, ``+Inf``, ``NaN``.

    >>> [format_float_e(v) for v in (0.0, -0.0, 0.1 + 0.2, 1e100, -2.5e-7, float("inf"))]
    ['0E+00', '-0E+00', '3.0000000000000004E-01', '1E+100', '-2.5E-07', '+Inf']
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0E+00"
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exp10 = len(digit_tuple) + int(exponent) - 1
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}E{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


def format_duration(ms: int) -> str:
    """``model.Duration.String()``: ``1m30s``, ``2h``, ``1d``, ``0s`` (years and weeks only when exact)."""
    if ms == 0:
        return "0s"
    out = []
    for unit, size, exact in (
        ("y", 365 * 86_400_000, True), ("w", 7 * 86_400_000, True), ("d", 86_400_000, False),
        ("h", 3_600_000, False), ("m", 60_000, False), ("s", 1000, False), ("ms", 1, False),
    ):  # fmt: skip
        if exact and ms % size:
            continue
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


def format_go_time(ms: int) -> str:
    """``time.Duration.String()`` of whole milliseconds: ``0s``, ``500ms``, ``1m0s``, ``1h0m30.5s``."""
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds = f"{rest // 1000}" + (f".{rest % 1000:03d}".rstrip("0") if rest % 1000 else "") + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def _indent(lines: str, indent: str) -> str:
    return ("\n" + indent).join(lines.split("\n"))


def _format_alerts(alerts: Sequence[tuple[Labels, Labels]]) -> str:
    if not alerts:
        return "[]"
    items = [
        f"{i}:" + _indent(f"\nLabels:{format_labels(labels)}\nAnnotations:{format_labels(annotations)}", "  ")
        for i, (labels, annotations) in enumerate(alerts)
    ]
    return "[\n" + ",\n".join(items) + "\n]"


def _format_samples(samples: Sequence[tuple[Labels, float]]) -> str:
    if not samples:
        return "nil"
    return ", ".join(f"{format_labels(labels)} {format_float_e(value)}" for labels, value in samples)


# --- Running ---------------------------------------------------------------------------------------


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
    groups = sorted((dataclasses.replace(g, interval_ms=eval_ms) for g in groups), key=lambda g: order.get(g.name, 0))
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
        failures += _check_expr(engine, test, name)
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
        f"        exp:{_indent(_format_alerts(expected), ' ' * 12)}, \n"
        f"        got:{_indent(_format_alerts(got), ' ' * 12)}"
    )
    return [Failure("alert", message, group, ("alert", test.alertname, when), tuple(expected), tuple(got))]


def _check_expr(engine: RuleEngine, test: ExprTest, group: str) -> list[Failure]:
    when = format_duration(test.eval_ms)
    head = f"    expr: {go_quote(test.expr)}, time: {when}"
    key = ("expr", test.expr, when)
    try:
        result = compile_expr(test.expr).evaluate(EvalContext(engine.store, test.eval_ms, engine.lookback_ms))
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
    message = f"{head},\n        exp: {_format_samples(expected)}\n        got: {_format_samples(got)}"
    return [Failure("expr", message, group, key, tuple(expected), tuple(got))]
