"""Counters: which series are counters, and their per-second rate, resets included.

A counter's raw value only says how long the process has been up; what is worth
scoring is its rate. Counter-ness comes from the remote-write metadata type when
the sender gave one, else from Prometheus naming conventions.

>>> is_counter("http_requests_total"), is_counter("process_resident_memory_bytes")
(True, False)
>>> is_counter("queue_depth", metric_type="counter"), is_counter("jobs_total", metric_type="gauge")
(True, False)
>>> counter_rate([0, 10, 20, 30], [100.0, 110.0, 5.0, 25.0]).tolist()  # reset at the third sample
[nan, 1.0, 0.5, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detector.anomaly.kernel import counter_rates

COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")

_NOT_COUNTER_TYPES = {"gauge", "gaugehistogram", "info", "stateset"}


def is_counter(metric_name: str, metric_type: str | int | None = None) -> bool:
    """Whether a series is a counter.

    ``metric_type`` is the remote-write metadata type when the sender gave one
    (a name such as ``"COUNTER"`` or ``"gauge"``, or the protobuf enum number:
    1 counter, 2 gauge, 3 histogram, 4 gaugehistogram, 5 summary, 6 info,
    7 stateset). Histograms and summaries count as counters: their ``_bucket``,
    ``_count`` and ``_sum`` series only grow (a summary's quantile series are
    gauges, and have none of those suffixes). Without a type, or with
    ``unknown``, the name decides: ``_total``, ``_count``, ``_sum``, ``_bucket``.
    """
    if isinstance(metric_type, int):
        metric_type = {1: "counter", 2: "gauge", 3: "histogram", 4: "gaugehistogram",
                       5: "summary", 6: "info", 7: "stateset"}.get(metric_type)
    if metric_type:
        kind = metric_type.lower()
        if kind == "counter":
            return True
        if kind in ("histogram", "summary"):
            return metric_name.endswith(("_bucket", "_count", "_sum"))
        if kind in _NOT_COUNTER_TYPES:
            return False
    return metric_name.endswith(COUNTER_SUFFIXES)


def counter_rate(timestamps_s: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Per-second rate of one counter series, one value per sample (NaN for the first).

    A decrease is a reset: the counter restarted from zero, so the increase
    since the previous sample is the new value itself (what Prometheus's
    ``rate()`` assumes). NaN values (staleness) give NaN and do not break the
    chain: the next finite sample is measured from the last finite one.
    """
    t = np.asarray(timestamps_s, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    return CounterState(1).rates(np.zeros(len(v), dtype=np.intp), t, v)


class CounterState:
    """The last value and time of many counter series, as columns, and their rates.

    >>> state = CounterState(2)
    >>> state.rates([0, 1], [0.0, 0.0], [5.0, 7.0]).tolist()
    [nan, nan]
    >>> state.rates([0, 1, 0], [10.0, 10.0, 20.0], [15.0, 2.0, 25.0]).tolist()  # series 1 reset
    [1.0, 0.2, 1.0]
    """

    def __init__(self, capacity: int = 0) -> None:
        self.last_t = np.full(capacity, np.nan)
        self.last_v = np.full(capacity, np.nan)

    def grow(self, capacity: int) -> None:
        if capacity > len(self.last_t):
            extra = capacity - len(self.last_t)
            self.last_t = np.r_[self.last_t, np.full(extra, np.nan)]
            self.last_v = np.r_[self.last_v, np.full(extra, np.nan)]

    def reset(self, rows) -> None:
        self.last_t[rows] = np.nan
        self.last_v[rows] = np.nan

    def rates(self, rows, timestamps_s, values) -> np.ndarray:
        """Rates of samples of ``rows``, in order within each series; NaN where none is known yet."""
        return counter_rates(self.last_t, self.last_v, np.ascontiguousarray(rows, dtype=np.intp),
                             np.ascontiguousarray(timestamps_s, dtype=np.float64),
                             np.ascontiguousarray(values, dtype=np.float64))

    SNAPSHOT_SKIP = frozenset()  # every attribute is state (detector.snapshot)
