"""Stage 2: one combine partition merges partials and evaluates the rest of the staged rules.

It evaluates tick t once every upstream partition's watermark has passed t
(frames carry it), with the ordinary rule engine over the groups
:meth:`StagePlan.combine_groups` gives it; the engine's rules read the merged
partials through :class:`~detector.stages.inputs.StagedInput`.

>>> from detector.wire.batch import SampleBatch
>>> from detector.promql import compile_expr
>>> from detector.rules import AlertingRule, RuleGroup
>>> from detector.stages.frames import Block, Frame, encode_frame
>>> from detector.stages.plan import StagePlan
>>> rule = AlertingRule("Busy", compile_expr("sum by (ns) (cpu) > 4"), "sum by (ns) (cpu) > 4")
>>> plan = StagePlan([RuleGroup("g", "f.yml", 15_000, (rule,))])
>>> combine = CombinePartition(plan, index=0, count=1, sources=2, start_ms=0)
>>> def frame(source, value):
...     block = Block(plan.slots[0].id, 0, [(("ns", "web"),)], np.array([[value]]))
...     return encode_frame(Frame(plan.fingerprint, source, 2, 1, 0, [block]))
>>> combine.receive(frame(0, 3.0)).transitions  # partition 1 has not reached tick 0 yet
[]
>>> [(t.labels, t.value, t.state) for t in combine.receive(frame(1, 2.0)).transitions]
[((('alertname', 'Busy'), ('ns', 'web')), 5.0, 'firing')]
"""

from __future__ import annotations

import numpy as np

from detector.promql.plan import DEFAULT_LOOKBACK_MS, EvaluationError
from detector.promql.values import InstantVector
from detector.rules.engine import DEFAULT_RESEND_DELAY_MS, EngineOutput, RuleEngine
from detector.stages.frames import FrameFormatError, PartsBuffer, decode_frame
from detector.stages.inputs import register_feed
from detector.stages.partials import COLUMNS, Partial, merge
from detector.stages.plan import StagePlan
from detector.stages.stage1 import Outbox, partial_groups
from detector.rules.alerting import Alert
from detector.rules.engine import EngineStats
from detector.snapshot import SnapshotError, decode, encode
from detector.store import EMPTY

SNAPSHOT_RECORDS = {"Alert": Alert, "EngineStats": EngineStats}
"""The dataclasses a stage snapshot may hold (the loader builds nothing else)."""


class CombinePartition:
    """Partials in (frame bytes), alert changes and recorded series out; see the module docstring."""

    def __init__(
        self,
        plan: StagePlan,
        index: int,
        count: int,
        sources: int,
        *,
        start_ms: int,
        level: int = 1,
        next_count: int = 0,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
        resend_delay_ms: int = DEFAULT_RESEND_DELAY_MS,
        max_evaluations_per_step: int | None = None,
    ) -> None:
        self.plan, self.index, self.count, self.sources = plan, index, count, sources
        self.level, self.next_count = level, next_count
        # Partials for a second combine level (next_count partitions), if the plan has one.
        self.outbox = Outbox(plan, index, count, max(next_count, 1))
        groups = partial_groups(plan, plan.combine_parts(index, count, level), self.outbox)
        self.engine = RuleEngine(groups, lookback_ms=lookback_ms, resend_delay_ms=resend_delay_ms, start_ms=start_ms,
                                 max_evaluations_per_step=max_evaluations_per_step)
        self.engine.skip_log = self.outbox.skips  # a second level skips what this one skipped
        register_feed(self.engine.store, self)
        self.watermarks = np.full(sources, EMPTY, dtype=np.int64)  # per upstream partition
        # Partials of ticks not evaluated yet: (slot, tick) -> {source: Partial}.
        self.pending: dict[tuple[int, int], dict[int, Partial]] = {}
        self.failures: dict[tuple[int, int], str] = {}
        # Ticks an upstream skipped (HEADROOM_MAX_CATCH_UP), to skip here too: (first, resume, interval_ms).
        self.skips: list[tuple[int, int, int]] = []
        self.rows_received = 0  # partial rows taken in
        self.rows_by_slot: dict[int, int] = {}  # the same, by slot: which rules make this partition busy
        self.duplicate_rows = 0  # partial rows received again (dropped)
        self.presumed_rows = 0  # partial rows of a silent upstream's ticks already evaluated without them (dropped)
        self.presumed = np.zeros(sources, dtype=bool)  # upstreams whose watermark presume() moved past what they sent
        self.parts = PartsBuffer()  # frames cut into several records, until their last part comes
        self._columns = [COLUMNS[slot.kind] for slot in plan.slots]  # value columns of each slot's partials
        self._merges: dict[int, dict] = {}  # per slot, the grouping of its last merge (partials.merge's memo)

    @property
    def watermark(self) -> int:
        """Every tick up to here is complete upstream (EMPTY until every upstream has reported)."""
        return min(self.watermarks.tolist())  # a few upstreams: cheaper than numpy's reduction, asked per frame

    def receive(self, data: bytes) -> EngineOutput:
        """Take one frame; evaluate every tick that all upstream partitions have now passed.

        Raises :class:`~detector.stages.frames.FrameFormatError` for a frame that
        is not one, or not for this rule set; nothing of it is kept then. A part
        of a frame (:func:`~detector.stages.frames.split_frame`) is kept until
        the frame's last part comes; only then do its rows and watermark count.
        """
        frame = decode_frame(data)
        if frame.fingerprint != self.plan.fingerprint:
            raise FrameFormatError(
                f"partials frame for another rule set (fingerprint {frame.fingerprint:#x}, this partition runs "
                f"{self.plan.fingerprint:#x}): the stages must run the same rule files"
            )
        if frame.sources != self.sources:
            raise FrameFormatError(f"partials frame from {frame.sources} upstream partitions, this partition expects {self.sources}")
        columns = self._columns
        for block in frame.blocks:
            if block.slot >= len(columns):
                raise FrameFormatError(f"partials frame names slot {block.slot}, the rule set has {len(columns)}")
            if block.values.shape[1] != columns[block.slot]:
                raise FrameFormatError(f"slot {block.slot} needs {columns[block.slot]} value columns, the frame has {block.values.shape[1]}")
        for failure in frame.failures:
            if failure.slot >= len(self.plan.slots):
                raise FrameFormatError(f"partials frame names slot {failure.slot}, the rule set has {len(self.plan.slots)}")
        whole = self.parts.add(frame, data)
        if whole is None:
            return EngineOutput()  # the upstream is not done with its frame: nothing counts yet
        frame = whole
        # A source has sent every partial of the ticks up to its watermark; rows for those
        # ticks again are a redelivery, or a replay after the source restored a snapshot.
        seen = int(self.watermarks[frame.source])
        source, pending, by_slot = frame.source, self.pending, self.rows_by_slot
        for block in frame.blocks:
            rows = len(block.labels)
            if block.tick <= seen:
                if self.presumed[source]:
                    self.presumed_rows += rows
                else:
                    self.duplicate_rows += rows
                continue
            self.rows_received += rows
            by_slot[block.slot] = by_slot.get(block.slot, 0) + rows
            key = (block.slot, block.tick)
            parts = pending.get(key)
            if parts is None:
                parts = pending[key] = {}
            parts[source] = Partial(block.labels, block.values)
        for failure in frame.failures:
            if failure.tick > seen:
                self.failures.setdefault((failure.slot, failure.tick), failure.message)
        for skip in frame.skips:
            if skip.resume - 1 > seen:
                self.skips.append((max(skip.first, seen + 1), skip.resume, skip.interval_ms))
        self.skips.sort()
        if frame.watermark > seen:
            self.presumed[frame.source] = False
        before = self.watermark
        self.watermarks[frame.source] = max(int(self.watermarks[frame.source]), frame.watermark)
        if self.watermark == before and not self.evaluations_due:
            # Not the slowest upstream (most frames): no tick became ready, nothing to evaluate or drop.
            return EngineOutput()
        return self._advance()

    def presume(self, follow: dict[int, int]) -> EngineOutput:
        """Upstreams that stopped sending (the caller's policy) stop holding ticks back: the watermark
        of each upstream in ``follow`` moves up to the one given (the others', typically). Its partials
        for ticks evaluated meanwhile are dropped when they come (``presumed_rows``), as late samples are."""
        for source, watermark in follow.items():
            if watermark != EMPTY and watermark > self.watermarks[source]:
                self.watermarks[source] = watermark
                self.presumed[source] = True
        return self._advance()

    @property
    def evaluations_due(self) -> bool:
        """Whether evaluations are due but left for later steps (``max_evaluations_per_step``): call :meth:`step`."""
        return self.engine.pending or (self.watermark != EMPTY and self.engine.watermark < self.watermark)

    def step(self) -> EngineOutput:
        """The next step of the evaluations still due (at most ``max_evaluations_per_step``)."""
        return self._advance()

    def _advance(self) -> EngineOutput:
        ready = self.watermark
        if ready == EMPTY:
            return EngineOutput()
        out = EngineOutput()
        # Up to each upstream skip first, then past it, so the ticks before it are evaluated and those in it never.
        while True:
            target = ready if not self.skips or self.skips[0][0] > ready else self.skips[0][0] - 1
            step = self.engine.advance_to(max(target, self.engine.watermark))
            out.transitions += step.transitions
            out.notifications += step.notifications
            out.errors += step.errors
            out.pending = step.pending
            if step.pending or target == ready:
                break
            first, resume, interval_ms = self.skips.pop(0)
            out.skipped += self.engine.skip_ticks(interval_ms, first, resume)
        done = self._evaluated_through()
        for key in [k for k in self.pending if k[1] <= done]:
            del self.pending[key]
        for key in [k for k in self.failures if k[1] <= done]:
            del self.failures[key]
        return out

    def _evaluated_through(self) -> int:
        """Every tick up to here is evaluated (or skipped): the partials kept for them can go."""
        due = [t - 1 for t in self.engine._next_tick if t is not None and t <= self.engine.watermark]
        return min(due, default=self.engine.watermark)

    def take_frames(self) -> dict[int, bytes]:
        """Frames for the second combine level, by partition (after :meth:`receive`); empty without one."""
        if not self.next_count:
            return {}
        return self.outbox.frames(self.engine.watermark, self.plan.phases)

    def free_expired(self) -> list[bytes]:
        """Free the rows of recorded series no evaluation can read any more."""
        return self.engine.free_expired()

    def combined(self, slot: int, t_ms: int) -> InstantVector:
        """The merged partials of ``slot`` at ``t_ms`` (called by the rules, through StagedInput)."""
        message = self.failures.get((slot, t_ms))
        if message is not None:
            raise EvaluationError(message)
        parts = self.pending.get((slot, t_ms), {})
        return merge(self.plan.slots[slot].kind, [parts[s] for s in sorted(parts)], self._merges.setdefault(slot, {}))

    # --- Snapshots. ----------------------------------------------------------------------

    def snapshot_state(self) -> dict:
        """Everything a restarted partition needs (see :meth:`restore_state`); encode with detector.snapshot."""
        pending = [(slot, tick, source, p.labels, p.values) for (slot, tick), parts in self.pending.items()
                   for source, p in parts.items()]
        return {
            "fingerprint": self.plan.fingerprint,
            "engine": self.engine.snapshot_state(),
            "outbox": self.outbox.state(),
            "watermarks": self.watermarks.copy(),
            "pending": pending,
            "failures": [(slot, tick, message) for (slot, tick), message in self.failures.items()],
            "skips": list(self.skips),
            "presumed": self.presumed.copy(),
            "presumed_rows": self.presumed_rows,
            "rows_received": self.rows_received,
            "rows_by_slot": dict(self.rows_by_slot),
            "duplicate_rows": self.duplicate_rows,
            "parts": self.parts.held_bytes(),
        }

    def snapshot(self) -> bytes:
        """:meth:`snapshot_state` as :mod:`detector.snapshot` bytes (data only, safe to load)."""
        return encode(self.snapshot_state(), SNAPSHOT_RECORDS)

    def restore(self, data: bytes) -> None:
        """Load :meth:`snapshot` bytes; :class:`~detector.snapshot.SnapshotError` if they do not fit."""
        self.restore_state(decode(data, SNAPSHOT_RECORDS))

    def restore_state(self, state: dict) -> None:
        if state.get("fingerprint") != self.plan.fingerprint:
            raise SnapshotError("combine partition snapshot taken with other rule files or partitioning: "
                                "its partials and slot numbers do not apply")
        self.engine.restore_state(dict(state["engine"]))
        self.outbox.load(state["outbox"])
        register_feed(self.engine.store, self)
        self.watermarks = np.asarray(state["watermarks"], dtype=np.int64)
        self.pending = {}
        for slot, tick, source, labels, values in state["pending"]:
            self.pending.setdefault((slot, tick), {})[source] = Partial(list(labels), np.asarray(values, dtype=np.float64))
        self.failures = {(slot, tick): message for slot, tick, message in state["failures"]}
        self.skips = [tuple(skip) for skip in state.get("skips", [])]
        self.presumed = np.asarray(state.get("presumed", np.zeros(self.sources, dtype=bool)), dtype=bool)
        self.presumed_rows = state.get("presumed_rows", 0)
        self.engine.skip_log = self.outbox.skips
        self.rows_received, self.duplicate_rows = state["rows_received"], state["duplicate_rows"]
        self.rows_by_slot = dict(state["rows_by_slot"])
        try:
            self.parts.load(list(state.get("parts", [])))
        except FrameFormatError as exc:
            raise SnapshotError(f"combine partition snapshot holds an unreadable frame part: {exc}") from None


__all__ = ["CombinePartition"]
