"""The worker's limits at work: counters and rate-limited log lines naming a series.

The limits themselves live in the engine (:mod:`detector.store`,
:mod:`detector.rules.engine`), set from :meth:`Settings.engine_limits
<pipelines.settings.Settings.engine_limits>`:

- ``HEADROOM_SERIES_MIN_INTERVAL``: a series keeps at most one sample per
  interval; the rest are dropped (``headroom_worker_too_dense_samples``);
- ``HEADROOM_MAX_SERIES_PER_PARTITION``: new series beyond it are dropped, the
  ones held keep going (``headroom_worker_series_limit_series`` and ``..._samples``);
- ``HEADROOM_MAX_EVALUATIONS_PER_STEP``: a message that makes more rule group
  evaluations due runs them in steps, yielding to the event loop in between
  (:meth:`pipelines.worker.Worker.catch_up`, ``headroom_worker_catch_up_steps``),
  so ``/metrics``, timers, snapshots and other partitions go on;
- ``HEADROOM_MAX_CATCH_UP``: evaluations further behind the newest sample are
  skipped (``headroom_worker_skipped_evaluations``).

Each kind of event is logged at most once per minute per partition, with how
many happened since the last line: one sender cannot flood the log.

>>> from prometheus_client import CollectorRegistry
>>> from detector.labels import canonical_bytes
>>> report = LimitReport(CollectorRegistry())
>>> up = canonical_bytes((("__name__", "up"),))
>>> report.count("headroom-samples", 0, Refused(too_dense=3, dense_series=up), skipped=0, span=None)
>>> report.registry.get_sample_value("headroom_worker_too_dense_samples_total")
3.0
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from detector.partition import PartitionOutput
from detector.replay import format_series
from detector.store import Refused

if TYPE_CHECKING:
    from pipelines.settings import Settings

log = logging.getLogger("headroom.limits")

LOG_EVERY_S = 60.0


class LimitReport:
    """Counters and log lines for what the limits did.

    ``settings`` only words the log lines (the settings' names and values).
    """

    def __init__(self, registry: CollectorRegistry, settings: Settings | None = None, *,
                 clock: Callable[[], float] = time.monotonic, log_every_s: float = LOG_EVERY_S) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.log_every_s = log_every_s
        self.too_dense = Counter("headroom_worker_too_dense_samples",
                                 "Samples dropped: within HEADROOM_SERIES_MIN_INTERVAL of the previous one of their series",
                                 registry=registry)
        self.refused_series = Counter("headroom_worker_series_limit_series",
                                      "New series dropped: their partition holds HEADROOM_MAX_SERIES_PER_PARTITION series",
                                      registry=registry)
        self.refused_samples = Counter("headroom_worker_series_limit_samples",
                                       "Samples of the series dropped by HEADROOM_MAX_SERIES_PER_PARTITION", registry=registry)
        self.skipped = Counter("headroom_worker_skipped_evaluations",
                               "Rule group evaluations skipped: more than HEADROOM_MAX_CATCH_UP behind the newest sample",
                               registry=registry)
        self.steps = Counter("headroom_worker_catch_up_steps",
                             "Extra steps of at most HEADROOM_MAX_EVALUATIONS_PER_STEP evaluations, each after a yield",
                             registry=registry)
        self._next_line: dict[tuple, float] = {}
        self._held: dict[tuple, int] = {}

    def record(self, lane: str, partition: int, out: PartitionOutput) -> None:
        """Count (and maybe log) what the limits did in one engine call."""
        self.count(lane, partition, out.engine.refused, out.engine.skipped, out.engine.skipped_span)

    def count(self, lane: str, partition: int, refused: Refused, skipped: int, span: tuple[int, int] | None) -> None:
        if refused.too_dense:
            self.too_dense.inc(refused.too_dense)
            self._log("dense", lane, partition, refused.too_dense,
                      f"series {format_series(refused.dense_series)} sends samples closer together than "
                      f"HEADROOM_SERIES_MIN_INTERVAL={self._setting('series_min_interval')}", "samples dropped")
        if refused.new_series:
            self.refused_series.inc(refused.new_series)
            self.refused_samples.inc(refused.new_series_samples)
            self._log("series", lane, partition, refused.new_series,
                      f"the partition holds HEADROOM_MAX_SERIES_PER_PARTITION={self._setting('max_series_per_partition')} "
                      f"series; new series are dropped, e.g. {format_series(refused.new_series_example)}", "series dropped")
        if skipped:
            self.skipped.inc(skipped)
            first, resume = span or (0, 0)
            self._log("skipped", lane, partition, skipped,
                      f"the watermark jumped: evaluations from {_iso(first)} to {_iso(resume)}, more than "
                      f"HEADROOM_MAX_CATCH_UP={self._setting('max_catch_up')} behind the newest sample, are skipped", "evaluations skipped")

    def _setting(self, name: str) -> object:
        return getattr(self.settings, name) if self.settings is not None else "?"

    def _log(self, kind: str, lane: str, partition: int, amount: int, message: str, unit: str) -> None:
        key = (kind, lane, partition)
        self._held[key] = self._held.get(key, 0) + amount
        now = self.clock()
        if now < self._next_line.get(key, float("-inf")):
            return
        self._next_line[key] = now + self.log_every_s
        held = self._held.pop(key)
        log.warning("%s[%d]: %s; %d %s since the last such line", lane, partition, message, held, unit)


def _iso(t_ms: int) -> str:
    try:
        return datetime.fromtimestamp(t_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{t_ms} ms"
