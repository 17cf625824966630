"""promtool's series notation: ``name{label="value"}`` label sets and ``1+2x3 _ stale`` values, read as Prometheus 2.42 reads them."""

from __future__ import annotations

import math
import re
import struct

import numpy as np

from detector.labels import METRIC_NAME, Labels
from detector.rule_tests.errors import UnitTestFormatError
from detector.store import STALE_NAN_BITS

STALE_NAN = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])
"""Prometheus's staleness marker, as a float (compare it by bits, never with ==)."""


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


def value_text(v: float) -> str:
    """A float as promtool's series notation writes it (what :func:`parse_series_values` reads back).

    >>> [value_text(v) for v in (1.5, float("nan"), float("-inf"), 1e-7)]
    ['1.5', 'NaN', '-Inf', '1e-07']
    """
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Inf" if v > 0 else "-Inf"
    return repr(v)


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
    detector.rule_tests.errors.UnitTestFormatError: invalid repetition in series values: '2.5' is not a count
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
