"""Reading OpenMetrics text with timestamps: the samples of a recording.

prometheus-client's OpenMetrics parser refuses a histogram with more than one
timestamped point ("+Inf bucket missing", even for a valid file), and a
recording has one point per scrape; so sample lines are read here. Only what
a recording needs: ``name{labels} value timestamp`` lines (an exemplar after
`` # `` is ignored), ``#`` lines skipped, ``# EOF`` ends the text.

>>> list(read_samples(['# TYPE up gauge', 'up{job="a\\\\"b"} 1 15.5', 'up{job="x"} NaN 16', '# EOF']))
[((('__name__', 'up'), ('job', 'a"b')), 15500, 1.0), ((('__name__', 'up'), ('job', 'x')), 16000, nan)]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation

from detector.errors import HeadroomError
from detector.labels import Labels

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|\})')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}
_SPECIAL = {"NaN": float("nan"), "+Inf": float("inf"), "-Inf": float("-inf"), "Inf": float("inf")}


class OpenMetricsError(HeadroomError):
    """A line of a recording that is not a timestamped OpenMetrics sample."""


def read_samples(lines: Iterable[str], types: dict[str, str] | None = None) -> Iterator[tuple[Labels, int, float]]:
    """(labels with ``__name__``, timestamp in ms, value) for every sample line.

    With ``types``, each ``# TYPE family type`` line also sets ``types[family]``.
    """
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if line.startswith("#"):
            if line.strip() == "# EOF":
                return
            if types is not None and line.startswith("# TYPE "):
                declared = line.split()
                if len(declared) == 4:
                    types[declared[2]] = declared[3]
            continue
        if not line.strip():
            continue
        try:
            yield _sample(line)
        except (OpenMetricsError, ValueError, InvalidOperation) as exc:
            raise OpenMetricsError(f"line {number}: {exc}: {line[:200]!r}") from None


def _sample(line: str) -> tuple[Labels, int, float]:
    match = _NAME.match(line)
    if match is None:
        raise OpenMetricsError("no metric name")
    labels = [("__name__", match.group())]
    pos = match.end()
    if line.startswith("{", pos):
        pos += 1
        if line.startswith("}", pos):
            pos += 1
        else:
            while True:
                label = _LABEL.match(line, pos)
                if label is None:
                    raise OpenMetricsError("malformed label set")
                value = re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group()], label.group(2))
                if any(name == label.group(1) for name, _ in labels):
                    raise OpenMetricsError(f"label {label.group(1)!r} repeated")
                if value:  # an empty value means no label, as in Prometheus
                    labels.append((label.group(1), value))
                pos = label.end()
                if label.group(3) == "}":
                    break
    fields = line[pos:].split(" # ", 1)[0].split()
    if len(fields) != 2:
        raise OpenMetricsError("expected a value and a timestamp")
    value = _SPECIAL.get(fields[0])
    if value is None:
        value = float(fields[0])
    stamp_ms = int(Decimal(fields[1]) * 1000)
    return tuple(sorted(labels)), stamp_ms, value
