"""The rule engine of one partition: samples in, alert changes out, on event time.

Each group is evaluated at every multiple of its interval (epoch-aligned, as
``promtool test rules`` evaluates from time 0), once the partition's
*watermark* has passed that time. By default the watermark is the newest
sample timestamp seen minus ``lateness_ms``. With ``max_lateness_ms``
(a :mod:`detector.completeness` tracker, what the worker uses) it is the instant
up to which every live series of the partition has sent its samples, so
samples that Prometheus's concurrent remote-write shards deliver a little
apart still count in the evaluation they belong to. A sample older than an
evaluation already made is stored, read by every later evaluation, but that
evaluation is not redone; it is counted as late.

Same input, same output: nothing here reads the wall clock.

One call never runs more than ``max_evaluations_per_step`` group evaluations:
a watermark that jumps far (a sample stamped a year ahead, a backlog) leaves
the rest due, :attr:`RuleEngine.pending`, and the caller runs them in further
steps (:meth:`RuleEngine.advance_to` with the same watermark), yielding to
its event loop in between. Ticks more than ``max_catch_up_ms`` behind the
watermark are skipped, never evaluated, and counted: so neither a jump nor a
bogus first sample (at 0, as proto3 sends a timestamp left out) can ask for
millions of evaluations.

>>> from detector.wire.batch import SampleBatch
>>> from detector.promql import compile_expr
>>> from detector.rules.alerting import AlertingRule
>>> from detector.rules.group import RuleGroup
>>> rule = AlertingRule("Open", compile_expr("breaker == 2"), "breaker == 2", for_ms=30_000)
>>> engine = RuleEngine([RuleGroup("g", "inline", 15_000, (rule,))])
>>> series = (("__name__", "breaker"), ("instance", "a"))
>>> out = engine.ingest(SampleBatch.from_series([(series, [(t, 2.0) for t in range(0, 60_001, 15_000)])]))
>>> [(t.eval_time, t.previous, t.state) for t in out.transitions]
[(0, 'inactive', 'pending'), (30000, 'pending', 'firing')]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.completeness import START_WAIT_MS, CompletenessTracker
from detector.output.alerts import AlertNotification, AlertTransition
from detector.wire.batch import SampleBatch
from detector.promql import EvalContext
from detector.promql.plan import DEFAULT_LOOKBACK_MS, EvaluationError
from detector.rules.alerting import Alert, AlertingRule, fingerprint
from detector.rules.group import RuleGroup
from detector.rules.recording import write_series
from detector.store import EMPTY, Refused, SeriesStore, is_stale

DEFAULT_RESEND_DELAY_MS = 60_000
DEFAULT_SILENCE_MS = 30_000
_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass
class EngineOutput:
    transitions: list[AlertTransition] = field(default_factory=list)
    notifications: list[AlertNotification] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    evaluations: int = 0
    # What ingest dropped or could no longer count in an evaluation already made.
    duplicates: int = 0
    out_of_order: int = 0
    late: int = 0
    refused: Refused = field(default_factory=Refused)  # what the store's limits kept out
    # Ticks skipped because they were more than max_catch_up_ms behind the watermark,
    # and the span they covered: (first skipped tick, first tick evaluated after them).
    skipped: int = 0
    skipped_span: tuple[int, int] | None = None
    pending: bool = False  # evaluations still due: call advance_to again


@dataclass
class EngineStats:
    samples: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    late: int = 0
    evaluations: int = 0
    evaluation_errors: int = 0
    skipped_evaluations: int = 0


class RuleEngine:
    """Store, watermark and alert state of one partition, over shared compiled groups."""

    def __init__(
        self,
        groups: list[RuleGroup],
        *,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
        lateness_ms: int = 0,
        resend_delay_ms: int = DEFAULT_RESEND_DELAY_MS,
        start_ms: int | None = None,
        max_lateness_ms: int | None = None,
        silence_ms: int = DEFAULT_SILENCE_MS,
        start_wait_ms: int = START_WAIT_MS,
        min_interval_ms: int = 0,
        max_series: int | None = None,
        max_evaluations_per_step: int | None = None,
        max_catch_up_ms: int | None = None,
    ) -> None:
        self.groups = groups
        # With max_lateness_ms, the watermark waits for every live series (detector.completeness).
        self.completeness = (
            None if max_lateness_ms is None
            else CompletenessTracker(
                max_lateness_ms=max_lateness_ms, silence_ms=silence_ms, start_wait_ms=start_wait_ms,
                # Before any series has shown its scrape interval, assume the rules' shortest.
                default_gap_ms=min((g.interval_ms for g in groups), default=15_000),
            )
        )
        completeness = self.completeness
        self.lookback_ms = lookback_ms
        self.lateness_ms = lateness_ms
        self.resend_delay_ms = resend_delay_ms
        # A group delayed for a negative offset evaluates that much behind the watermark: keep that much more.
        reach = max((g.reach_ms() + g.evaluation_delay_ms for g in groups), default=0)
        self.reach_ms = reach  # how far before an evaluation any rule reads, beyond the lookback
        longest = max((g.interval_ms for g in groups), default=0)
        # A late sample can still change evaluations up to the watermark's lag behind the
        # newest sample: the store keeps that much more while the watermark lags (see ingest).
        self._retention_ms = lookback_ms + reach + lateness_ms + longest
        self.store = SeriesStore(retention_ms=self._retention_ms, min_interval_ms=min_interval_ms, max_series=max_series)
        self.max_evaluations_per_step = max_evaluations_per_step  # None: no bound
        self.max_catch_up_ms = max_catch_up_ms  # None: every tick is evaluated, however far behind
        self.watermark = EMPTY
        self.newest = EMPTY  # newest sample timestamp ingested
        self.stats = EngineStats()
        # First evaluation of each group: the first interval multiple at or
        # after start_ms if given (promtool evaluates from 0), else at or
        # after the first sample ingested.
        self._next_tick: list[int | None] = [
            None if start_ms is None else -(-start_ms // g.interval_ms) * g.interval_ms for g in groups
        ]
        self._evaluated_until = EMPTY
        self._alerts: dict[int, dict[int, Alert]] = {}
        self._written: dict[int, np.ndarray] = {}  # rows each rule wrote at its last evaluation
        # Where ticks skipped by max_catch_up_ms are reported as (interval_ms, first, resume), if a
        # list: the staged rules' stage 1 tells its combine partitions (detector.stages.frames.Skip).
        self.skip_log: list[tuple[int, int, int]] | None = None

    def ingest(self, batch: SampleBatch, arrival_ms: int | None = None, *, admitted: bool = False) -> EngineOutput:
        """Store a batch, then run the evaluations its samples made due (at most
        ``max_evaluations_per_step``; ``out.pending`` says more are due).

        ``arrival_ms`` is the caller's clock when the batch arrived; with a
        completeness tracker, series nothing arrived for in a while stop
        holding the watermark back (None: in replay, never). ``admitted``: the
        caller has already passed the batch through :meth:`SeriesStore.admit`
        (the series limit).
        """
        refused = Refused()
        if not admitted:
            batch, refused = self.store.admit(batch)
        if len(batch) == 0:
            return EngineOutput(refused=refused)
        late = int(np.count_nonzero(batch.timestamps <= self._evaluated_until))
        if self.completeness is not None and self.watermark != EMPTY:
            lag = max(self.newest, int(batch.timestamps.max())) - self.watermark
            self.store.retention_ms = self._retention_ms + min(max(lag, 0), self.completeness.max_lateness_ms)
        appended = self.store.append(batch)
        self.stats.samples += appended.accepted
        self.stats.duplicates += appended.duplicates
        self.stats.out_of_order += appended.out_of_order
        self.stats.late += late
        first = int(batch.timestamps.min())
        for i, group in enumerate(self.groups):
            if self._next_tick[i] is None:
                self._next_tick[i] = -(-first // group.interval_ms) * group.interval_ms
        self.newest = max(self.newest, int(batch.timestamps.max()))
        if self.completeness is not None:
            rows = appended.rows[batch.series_index]
            self.completeness.observe(rows, batch.timestamps, stale=is_stale(batch.values), arrival_ms=arrival_ms)
        out = self.advance_to(self.complete_until(arrival_ms))
        out.duplicates, out.out_of_order, out.late = appended.duplicates, appended.out_of_order, late
        out.refused = appended.refused
        out.refused.add(refused)
        return out

    def complete_until(self, now_ms: int | None = None) -> int:
        """The instant this partition's samples are complete up to, minus the fixed lateness."""
        if self.newest == EMPTY:
            return EMPTY
        if self.completeness is None:
            return self.newest - self.lateness_ms
        return self.completeness.watermark(self.newest, now_ms) - self.lateness_ms

    def advance_to(self, watermark_ms: int) -> EngineOutput:
        """Move the watermark forward (never back) and evaluate what became due, at most
        ``max_evaluations_per_step`` group evaluations; ``out.pending`` says more are due.

        The pipeline may also call this from a timer, so a quiet partition
        still evaluates when its samples are known to be complete.
        """
        out = EngineOutput()
        if watermark_ms > self.watermark:
            self.watermark = watermark_ms
            self._skip_unreachable(out)
        budget = self.max_evaluations_per_step
        while budget is None or budget > 0:
            due = [
                (tick, i)
                for i, tick in enumerate(self._next_tick)
                if tick is not None and tick + self.groups[i].evaluation_delay_ms <= self.watermark
            ]
            if not due:
                break
            tick, i = min(due)
            self._evaluate_group(i, tick, out)
            self._next_tick[i] = tick + self.groups[i].interval_ms
            self._evaluated_until = max(self._evaluated_until, tick)
            if budget is not None:
                budget -= 1
        out.pending = self.pending
        return out

    @property
    def pending(self) -> bool:
        """Whether some evaluation is due (at or before the watermark) but not run yet."""
        return any(
            tick is not None and tick + group.evaluation_delay_ms <= self.watermark
            for tick, group in zip(self._next_tick, self.groups)
        )

    def _skip_unreachable(self, out: EngineOutput) -> None:
        """Move ticks more than ``max_catch_up_ms`` behind the watermark up to that bound, counted."""
        if self.max_catch_up_ms is None:
            return
        floor = self.watermark - self.max_catch_up_ms
        for i, group in enumerate(self.groups):
            tick = self._next_tick[i]
            if tick is None or tick >= floor:
                continue
            resume = -(-floor // group.interval_ms) * group.interval_ms
            out.skipped += (resume - tick) // group.interval_ms
            first, last = out.skipped_span or (tick, resume)
            out.skipped_span = (min(first, tick), max(last, resume))
            self._next_tick[i] = resume
            if self.skip_log is not None:
                self.skip_log.append((group.interval_ms, tick, resume))
        self.stats.skipped_evaluations += out.skipped

    def skip_ticks(self, interval_ms: int, first: int, resume: int) -> int:
        """Skip (never evaluate) the next ticks in [first, resume) of the groups of ``interval_ms``,
        as :meth:`advance_to` skips ticks beyond ``max_catch_up_ms``; returns how many, also counted
        in ``stats.skipped_evaluations``. A staged rule's combine stage skips the ticks its upstream skipped.

        >>> from detector.rules.group import RuleGroup
        >>> engine = RuleEngine([RuleGroup("g", "f.yml", 15_000, ())], start_ms=0)
        >>> engine.skip_ticks(15_000, 0, 60_000), engine.advance_to(60_000).skipped, engine._next_tick
        (4, 0, [75000])
        """
        skipped = 0
        for i, group in enumerate(self.groups):
            tick = self._next_tick[i]
            if group.interval_ms != interval_ms or tick is None or not first <= tick < resume:
                continue
            resume_i = -(-resume // interval_ms) * interval_ms
            skipped += (resume_i - tick) // interval_ms
            self._next_tick[i] = resume_i
            if self.skip_log is not None:
                self.skip_log.append((interval_ms, tick, resume_i))
        self.stats.skipped_evaluations += skipped
        return skipped

    def free_expired(self) -> list[bytes]:
        """Free the store rows of series no evaluation still to come can read; returns their keys.

        The next evaluation reads samples back to its time minus lookback and
        the longest range (plus offset) of any rule, so a series whose newest
        sample is older than that, before the earliest next evaluation, is
        gone for good. Series a rule wrote at its last evaluation are kept:
        the rule writes their staleness markers when they leave its result.
        """
        ticks = [t for t in self._next_tick if t is not None]
        if self.groups and not ticks:
            return []
        horizon = min(ticks) if ticks else self.watermark
        if horizon == EMPTY:
            return []
        rows = self.store.live_rows()
        newest, _ = self.store.newest(rows)
        expired = rows[newest < horizon - self.lookback_ms - self.reach_ms]
        if len(expired) and self._written:
            expired = np.setdiff1d(expired, np.concatenate(list(self._written.values())))
        keys: list[bytes] = []
        if len(expired):
            if self.completeness is not None:
                self.completeness.forget(expired)
            keys = self.store.retire(expired)
        # Rings that hold far more than the next evaluations can read shrink (a burst passed).
        self.store.compact(horizon - self.lookback_ms - self.reach_ms)
        return keys

    def active_alerts(self) -> list[Alert]:
        return [a for alerts in self._alerts.values() for a in alerts.values()]

    def _evaluate_group(self, index: int, tick: int, out: EngineOutput) -> None:
        group = self.groups[index]
        ctx = EvalContext(self.store, tick, self.lookback_ms)
        for position, rule in enumerate(group.rules):
            key = (index << 20) | position
            out.evaluations += 1
            self.stats.evaluations += 1
            try:
                previous = self._written.get(key, _NO_ROWS)
                if isinstance(rule, AlertingRule):
                    active = self._alerts.setdefault(key, {})
                    out.transitions += rule.evaluate(ctx, active, group.limit)
                    out.notifications += rule.notifications(tick, active, group.interval_ms, self.resend_delay_ms)
                    # Like Prometheus, write ALERTS / ALERTS_FOR_STATE, which rules may read.
                    keys, values = rule.alert_series(active)
                    self._written[key] = write_series(self.store, keys, values, tick, previous)
                else:
                    self._written[key] = rule.evaluate(ctx, previous)
            except EvaluationError as exc:
                self.stats.evaluation_errors += 1
                out.errors.append(f"{group.source}: group {group.name!r}, rule {rule.name!r} at {tick}: {exc}")

    # ------------------------------------------------------------------ snapshots

    # Snapshots (detector.snapshot) carry every other attribute (store, watermark,
    # stats). Rules come from the current rule files, so the state kept per rule
    # position is saved by group and rule name instead (see snapshot_state).
    SNAPSHOT_SKIP = frozenset({"groups", "lookback_ms", "lateness_ms", "resend_delay_ms", "_retention_ms", "_alerts", "_written",
                               "_next_tick", "max_evaluations_per_step", "max_catch_up_ms", "skip_log"})

    def snapshot_state(self) -> dict:
        """This engine's state for :mod:`detector.snapshot`, rule state keyed by names, not positions."""
        from detector.snapshot import capture_attributes

        state = capture_attributes(self)
        rules = []
        for index, group in enumerate(self.groups):
            seen: dict[str, int] = {}
            for position, rule in enumerate(group.rules):
                key = (index << 20) | position
                occurrence = seen[rule.name] = seen.get(rule.name, -1) + 1
                alerts = list(self._alerts.get(key, {}).values())
                written = self._written.get(key)
                if alerts or written is not None:
                    rules.append((group.name, rule.name, occurrence, alerts, written))
        state["_rules"] = rules
        state["_ticks"] = {g.name: (g.interval_ms, tick) for g, tick in zip(self.groups, self._next_tick)}
        return state

    def restore_state(self, state: dict) -> None:
        """Load :meth:`snapshot_state` into an engine built from the current rule files.

        As Prometheus restores ``for`` state from ``ALERTS_FOR_STATE``, an alert
        goes back to the rule with its group's and rule's names whose fixed
        labels it carries; alerts of rules that no longer exist are dropped. A
        group whose interval changed starts at its next tick after the last
        evaluation made. A snapshot from before the completeness tracker
        existed loads with a fresh tracker (or none, if none is configured).
        """
        from detector.snapshot import apply_attributes, capture

        rules, ticks = state.pop("_rules"), state.pop("_ticks")
        if "completeness" not in state:
            state["completeness"] = None if self.completeness is None else capture(self.completeness)
        apply_attributes(self, state)
        positions: dict[tuple[str, str], list[tuple[int, object]]] = {}
        for index, group in enumerate(self.groups):
            for position, rule in enumerate(group.rules):
                positions.setdefault((group.name, rule.name), []).append(((index << 20) | position, rule))
        for group_name, rule_name, occurrence, alerts, written in rules:
            candidates = positions.get((group_name, rule_name), [])
            if occurrence < len(candidates) and written is not None:
                self._written[candidates[occurrence][0]] = written
            for alert in alerts:
                key = _rule_for_alert(alert, candidates, occurrence)
                if key is not None:
                    self._alerts.setdefault(key, {})[fingerprint(alert.labels)] = alert
        for i, group in enumerate(self.groups):
            interval, tick = ticks.get(group.name, (None, None))
            if interval == group.interval_ms:
                self._next_tick[i] = tick
            elif self._evaluated_until != EMPTY:
                self._next_tick[i] = (self._evaluated_until // group.interval_ms + 1) * group.interval_ms


def _rule_for_alert(alert: Alert, candidates: list, occurrence: int) -> int | None:
    """Key of the alerting rule among same-named ``candidates`` whose fixed labels the alert carries.

    Rules of one group may share a name (the levels of one alert, told apart by
    a ``severity`` label): the one at the same occurrence is preferred.
    """
    labels = dict(alert.labels)
    fits = [
        (key, i) for i, (key, rule) in enumerate(candidates)
        if isinstance(rule, AlertingRule)
        and all(labels.get(name, "") == "".join(t.parts) for name, t in rule.labels if all(isinstance(p, str) for p in t.parts))
    ]
    if not fits:
        return None
    return next((key for key, i in fits if i == occurrence), fits[0][0])


LIVE_WINDOW_MS = 600_000
"""Data whose newest sample is at most this old (wall clock) is live, not a replay."""


def is_live(newest_ms: int, now_ms: int) -> bool:
    """Whether a partition's data is live: wall-clock behaviour (idle advance,
    notifications to Alertmanager, which judges ``endsAt`` on its own clock)
    applies only then.

    >>> is_live(newest_ms=100_000, now_ms=160_000), is_live(newest_ms=0, now_ms=10_000_000)
    (True, False)
    """
    return now_ms - newest_ms <= LIVE_WINDOW_MS


def idle_watermark(newest_ms: int, last_ingest_ms: int, now_ms: int, idle_ms: int) -> int | None:
    """Where a quiet partition's watermark may move on wall-clock time, if anywhere.

    A partition that stops receiving samples (its sender died, its targets
    vanished without staleness markers) would otherwise never evaluate again,
    and its alerts would neither resolve nor fire. Once no sample has arrived
    for ``idle_ms`` of wall time, the watermark may follow the wall clock,
    ``idle_ms`` behind it, but only for live data: a partition whose newest
    sample is older than :data:`LIVE_WINDOW_MS` is being replayed, and replays stay
    on event time alone.

    >>> idle_watermark(newest_ms=100_000, last_ingest_ms=100_000, now_ms=140_000, idle_ms=30_000)
    110000
    >>> idle_watermark(newest_ms=100_000, last_ingest_ms=100_000, now_ms=120_000, idle_ms=30_000) is None
    True
    >>> idle_watermark(newest_ms=0, last_ingest_ms=100_000, now_ms=10_000_000, idle_ms=30_000) is None
    True
    """
    if idle_ms <= 0 or now_ms - last_ingest_ms < idle_ms or not is_live(newest_ms, now_ms):
        return None
    return now_ms - idle_ms
