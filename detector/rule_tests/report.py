"""Results of a test file, and promtool's wording of its failures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from detector.labels import Labels
from detector.output.templates import format_labels


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


def indent(lines: str, prefix: str) -> str:
    """Every line after the first prefixed, for a block nested in promtool's report."""
    return ("\n" + prefix).join(lines.split("\n"))


def format_alerts(alerts: Sequence[tuple[Labels, Labels]]) -> str:
    if not alerts:
        return "[]"
    items = [
        f"{i}:" + indent(f"\nLabels:{format_labels(labels)}\nAnnotations:{format_labels(annotations)}", "  ")
        for i, (labels, annotations) in enumerate(alerts)
    ]
    return "[\n" + ",\n".join(items) + "\n]"


def format_samples(samples: Sequence[tuple[Labels, float]]) -> str:
    if not samples:
        return "nil"
    return ", ".join(f"{format_labels(labels)} {format_float_e(value)}" for labels, value in samples)
