"""Metric types from the sender's metadata: which series are counters.

Prometheus sends each metric family's type in remote-write metadata (in
requests of their own, once a minute by default), and a recording carries it
in ``# TYPE`` lines. A family's type names the family, not its series: a
histogram ``http_duration_seconds`` has the series ``http_duration_seconds_bucket``,
``_count`` and ``_sum``; an OpenMetrics counter ``jobs`` has ``jobs_total``.
:meth:`MetricTypes.type_of` maps a series' metric name back to its family's type.

A type that is not known leaves the decision to the naming conventions
(:func:`detector.anomaly.counters.is_counter`).

>>> types = MetricTypes()
>>> sorted(types.update({"http_duration_seconds": "histogram", "jobs": "counter", "queue_depth_count": "gauge"}))
['http_duration_seconds', 'jobs', 'queue_depth_count']
>>> types.type_of("http_duration_seconds_bucket"), types.type_of("jobs_total"), types.type_of("queue_depth_count")
('histogram', 'counter', 'gauge')
>>> types.type_of("unknown_total") is None, types.type_of("jobs_created")
(True, 'gauge')
>>> types.update({"jobs": "counter"})  # nothing new
set()
"""

from __future__ import annotations

import json
from collections.abc import Mapping

# The remote-write enum (prompb MetricMetadata.MetricType) by number.
TYPE_NAMES = {0: "unknown", 1: "counter", 2: "gauge", 3: "histogram", 4: "gaugehistogram", 5: "summary", 6: "info", 7: "stateset"}

# Series suffixes that belong to a family of the given types.
_FAMILY_SUFFIXES = (
    ("_total", ("counter",)),
    ("_created", ("counter", "histogram", "summary")),
    ("_bucket", ("histogram", "gaugehistogram")),
    ("_count", ("histogram", "summary")),
    ("_sum", ("histogram", "summary")),
    ("_gcount", ("gaugehistogram",)),
    ("_gsum", ("gaugehistogram",)),
    ("_info", ("info",)),
)


class MetricTypes:
    """Metric family name -> type (``"counter"``, ``"gauge"``, ...), as the senders declared it.

    Shared by the partitions of a worker; ``version`` grows whenever a type is
    learned or changes, so users can tell cheaply whether to look again.
    """

    def __init__(self, types: Mapping[str, str] | None = None) -> None:
        self._types: dict[str, str] = {}
        self.version = 0
        if types:
            self.update(types)

    def __len__(self) -> int:
        return len(self._types)

    def update(self, types: Mapping[str, str]) -> set[str]:
        """Learn family types; returns the families whose type is new or changed."""
        changed = set()
        for family, kind in types.items():
            kind = kind.lower()
            if kind == "unknown" or not family:
                continue
            if self._types.get(family) != kind:
                self._types[family] = kind
                changed.add(family)
        if changed:
            self.version += 1
        return changed

    def type_of(self, metric_name: str) -> str | None:
        """The declared type of the family a series with this metric name belongs to, or None."""
        kind = self._types.get(metric_name)
        if kind is not None:
            return kind
        for suffix, kinds in _FAMILY_SUFFIXES:
            if metric_name.endswith(suffix):
                kind = self._types.get(metric_name[: -len(suffix)])
                if kind in kinds:
                    # A _created series holds the time its family was created: a gauge.
                    return "gauge" if suffix == "_created" else kind
        return None

    def families(self) -> dict[str, str]:
        return dict(self._types)


def encode_type(kind: str) -> bytes:
    """The value of a record on the metadata topic (the key is the family name).

    >>> decode_type(encode_type("counter"))
    'counter'
    """
    return json.dumps({"type": kind}, separators=(",", ":")).encode()


def decode_type(value: bytes | None) -> str | None:
    """The type in a metadata record's value; None for a value that is not one (logged by the caller)."""
    try:
        kind = json.loads(value)["type"] if value else None
    except (ValueError, TypeError, KeyError):
        return None
    return kind if isinstance(kind, str) and kind in TYPE_NAMES.values() else None
