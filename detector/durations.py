"""Prometheus durations: ``1h30m``, ``5m``, ``30s``, ``250ms``, ``2d``, ``1w``, ``1y``.

>>> parse_duration("1h30m")
5400000
>>> format_duration(90_000)
'1m30s'
"""

from __future__ import annotations

import re

_UNITS_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
_DURATION = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$")
_ORDER = ("y", "w", "d", "h", "m", "s", "ms")


def parse_duration(text: str) -> int:
    """Milliseconds in a Prometheus duration string; ``ValueError`` says why not."""
    text = str(text).strip()
    match = _DURATION.match(text)
    if not text or text == "0" or match is None or not any(match.groups()):
        if text == "0":
            return 0
        raise ValueError(f"not a duration: {text!r} (use units y, w, d, h, m, s, ms, e.g. '5m' or '1h30m')")
    return sum(int(n) * _UNITS_MS[u] for n, u in zip(match.groups(), _ORDER) if n)


def format_duration(ms: int) -> str:
    """The shortest Prometheus spelling of a duration in milliseconds."""
    if ms == 0:
        return "0s"
    parts = []
    for unit in _ORDER:
        count, ms = divmod(ms, _UNITS_MS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
