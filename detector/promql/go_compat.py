"""Go's arithmetic where it differs from Python's and numpy's, for results that match Prometheus bit for bit.

Prometheus is written in Go; these helpers give what its ``math``,
``strconv`` and ``time`` calls give, including at NaN, ±Inf, ±0 and overflow.

>>> go_parse_float("0x1p-2"), go_parse_float("1_000"), go_parse_float(" 1"), go_parse_float("1e999")
(0.25, 1000.0, None, None)
>>> duration_seconds(1_500)
1.5
"""

from __future__ import annotations

import re

import numpy as np


def duration_seconds(ms: int) -> float:
    """Go's ``Duration.Seconds()`` of a duration in milliseconds: whole seconds plus the nanosecond rest, each as a float."""
    return float(ms // 1000) + float(ms % 1000 * 1_000_000) / 1e9


def go_max(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Go's ``math.Max``: +Inf wins over NaN, NaN over numbers, +0 over -0."""
    out = np.where(x > y, x, y)
    out = np.where((x == 0) & (y == 0), np.where(np.signbit(x), y, x), out)
    out = np.where(np.isnan(x) | np.isnan(y), np.nan, out)
    return np.where((x == np.inf) | (y == np.inf), np.inf, out)


def go_min(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Go's ``math.Min``: -Inf wins over NaN, NaN over numbers, -0 over +0."""
    out = np.where(x < y, x, y)
    out = np.where((x == 0) & (y == 0), np.where(np.signbit(x), x, y), out)
    out = np.where(np.isnan(x) | np.isnan(y), np.nan, out)
    return np.where((x == -np.inf) | (y == -np.inf), -np.inf, out)


_INT64_MIN = np.iinfo(np.int64).min


def go_int64(values: np.ndarray) -> np.ndarray:
    """Go's int64(v) on amd64: truncated, and the minimum int64 for NaN, ±Inf and out of range."""
    inside = (values >= -(2.0**63)) & (values < 2.0**63)
    out = np.full(values.shape, _INT64_MIN, dtype=np.int64)
    out[inside] = np.trunc(values[inside]).astype(np.int64)
    return out


# Go's strconv.ParseFloat syntax: decimal or hex (0x..p..) with optional "_"
# digit separators, signed inf / infinity, unsigned nan, in any case. Python's
# float() accepts other things (whitespace, "+nan") and not hex, and Go refuses
# an overflow where Python gives inf, so the syntax is checked here first.
_DIGITS = r"[0-9](?:_?[0-9])*"
_HEX_DIGITS = r"[0-9a-f](?:_?[0-9a-f])*"
_GO_FLOAT = re.compile(
    rf"[+-]?(?:(?P<dec>(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})(?:e[+-]?{_DIGITS})?)"
    rf"|(?P<hex>0x_?(?:{_HEX_DIGITS}(?:\.(?:{_HEX_DIGITS})?)?|\.{_HEX_DIGITS})p[+-]?{_DIGITS})"
    r"|inf|infinity)|nan",
    re.IGNORECASE,
)


def go_parse_float(text: str) -> float | None:
    """The value Go's ``strconv.ParseFloat(text, 64)`` returns, or None where it fails."""
    match = _GO_FLOAT.fullmatch(text)
    if match is None:
        return None
    if match["dec"] is None and match["hex"] is None:
        return float(text)
    digits = text.replace("_", "")
    try:
        value = float.fromhex(digits) if match["hex"] else float(digits)
    except OverflowError:
        return None
    return None if np.isinf(value) else value
