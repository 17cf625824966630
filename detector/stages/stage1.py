"""Stage 1: one samples partition's rule engine, which also computes the partials of staged rules.

>>> from detector.wire.batch import SampleBatch
>>> from detector.promql import compile_expr
>>> from detector.rules import AlertingRule, RuleGroup
>>> from detector.stages.frames import decode_frame
>>> from detector.stages.plan import StagePlan
>>> rule = AlertingRule("Busy", compile_expr("sum by (ns) (cpu) > 4"), "sum by (ns) (cpu) > 4")
>>> plan = StagePlan([RuleGroup("g", "f.yml", 15_000, (rule,))])
>>> part = Stage1Partition(plan, index=0, sources=1, combiners=1, start_ms=0)
>>> cpu = (("__name__", "cpu"), ("instance", "a"), ("ns", "web"))
>>> out, frames = part.ingest(SampleBatch.from_series([(cpu, [(0, 3.0), (15_000, 5.0)])]))
>>> frame = decode_frame(frames[0])
>>> frame.watermark, [(b.tick, b.labels, b.values.tolist()) for b in frame.blocks]
(15000, [(0, [(('ns', 'web'),)], [[3.0]]), (15000, [(('ns', 'web'),)], [[5.0]])])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.promql.aggregations import AggregateNode
from detector.promql.plan import DEFAULT_LOOKBACK_MS, EvalContext, EvaluationError, Node
from detector.rules.engine import DEFAULT_RESEND_DELAY_MS, EngineOutput, RuleEngine
from detector.rules.group import RuleGroup
from detector.stages.frames import _BLOCK, NO_ORIGIN, Failure, Frame, Skip, encode_frame, keys_blob
from detector.stages.partials import Partial, from_vectors
from detector.stages.plan import StagePlan
from detector.stages.split import Slot
from detector.snapshot import decode, encode
from detector.store import EMPTY
from detector.wire.batch import SampleBatch

_NO_ROWS = np.zeros(0, dtype=np.int64)


@dataclass(eq=False)
class PartialRule:
    """A staged rule's stage-1 slot, evaluated by the rule engine in its group's rule order.

    It writes no series: the partial (or the failure) goes to ``outbox``.
    """

    slot: Slot
    outbox: list
    name: str

    def __post_init__(self) -> None:
        nodes = self.slot.nodes
        self.shared_input = len(nodes) > 1 and all(
            isinstance(n, AggregateNode) and n.param is None and n.expr is nodes[0].expr for n in nodes)

    @property
    def expr(self) -> Node:  # what the engine reads for reach_ms()
        return self.slot.nodes[0]

    def evaluate(self, ctx: EvalContext, previous: np.ndarray) -> np.ndarray:
        nodes = self.slot.nodes
        try:
            if self.shared_input:  # avg, stddev: aggregations of one input, evaluated once for all of them
                vector = nodes[0].expr.evaluate(ctx)  # type: ignore[attr-defined]
                vectors = [node.aggregate(ctx.store, vector) for node in nodes]  # type: ignore[attr-defined]
            else:
                vectors = [node.evaluate(ctx) for node in nodes]
            partial = from_vectors(self.slot.kind, vectors, self.slot.limit)  # type: ignore[arg-type]
        except EvaluationError as exc:
            result: Partial | str = str(exc)
        else:
            result = partial
        self.outbox.append((self.slot, ctx.t_ms, result))
        for other in self.slot.also:  # the same rows, routed as those slots' rules need
            self.outbox.append((other, ctx.t_ms, result))
        return _NO_ROWS


class Outbox:
    """The partials :class:`PartialRule` s put out, routed into one frame per downstream partition.

    ``source`` is the sender's number among ``sources`` senders; ``dests`` the
    number of downstream (combine) partitions.
    """

    def __init__(self, plan: StagePlan, source: int, sources: int, dests: int) -> None:
        self.plan, self.source, self.sources, self.dests = plan, source, sources, dests
        self.items: list = []  # (slot, tick, Partial or an error message)
        self.seq = 0  # frames sent to each downstream partition so far
        self.sent_watermark = EMPTY
        self.origin = NO_ORIGIN  # the first tick a partial was put out for: the receivers' schedule starts there
        self.skips: list[tuple[int, int, int]] = []  # ticks skipped since the last frame (RuleEngine.skip_log)
        self._routes: dict[tuple[int, tuple], int] = {}
        self._last: dict[int, tuple[list, list]] = {}  # slot -> its last partial's labels and their routing

    def frames(self, watermark: int, phases: tuple[tuple[int, int], ...] = ()) -> dict[int, bytes]:
        """Route what was put out; every downstream partition hears of a new watermark and of every failure.

        With ``phases`` (:attr:`StagePlan.phases`), a frame that would carry only a
        watermark goes only once that watermark made a tick due that the last
        frame's had not: downstream partitions evaluate at ticks, so one at every
        step between two ticks would change nothing there.
        """
        if not self.items and not self.skips:
            if watermark == self.sent_watermark:
                return {}
            sent = self.sent_watermark
            if phases and not any((watermark - d) // i > (sent - d) // i for i, d in phases):
                return {}
        ticks = [tick for _, tick, _ in self.items]
        if ticks and (self.origin == NO_ORIGIN or min(ticks) < self.origin):
            self.origin = min(ticks)
        skips = [Skip(*skip) for skip in self.skips]
        self.skips.clear()
        blocks: dict[int, list[bytes]] = {}  # encoded (frames.encode_block), by destination
        failures: list[Failure] = []
        for slot, tick, result in self.items:
            if isinstance(result, str):
                failures.append(Failure(slot.id, tick, result))
                continue
            values = np.ascontiguousarray(result.values, dtype="<f8")
            columns = values.shape[1]
            for dest, rows, labels, keys in self._route(slot, result):
                head = _BLOCK.pack(slot.id, tick, len(labels), columns)
                part = values if rows is None else values[rows]
                blocks.setdefault(dest, []).append(b"".join((head, keys, part.tobytes())))
        self.items.clear()
        self.sent_watermark = watermark
        self.seq += 1
        frame = Frame(self.plan.fingerprint, self.source, self.sources, self.seq, watermark, [], failures, self.origin, skips)
        bare = encode_frame(frame) if len(blocks) < self.dests else b""  # the same bytes for every partition without rows
        return {dest: encode_frame(frame, blocks[dest]) if dest in blocks else bare for dest in range(self.dests)}

    def _route(self, slot: Slot, partial: Partial) -> list[tuple[int, np.ndarray | None, list, bytes]]:
        """Per destination: the rows of ``partial`` it gets (None: all), their labels, and those labels encoded.

        A slot's partial usually has the very label tuples of its last one (an
        aggregation's groups, a selector's series): that routing is reused, so a
        tick costs no work per row here.
        """
        cached = self._last.get(slot.id)
        if cached is not None and cached[0] == partial.labels:  # identical tuples compare by identity: fast
            return cached[1]
        if slot.broadcast:
            keys = keys_blob(partial.labels)
            routes = [(dest, None, partial.labels, keys) for dest in range(self.dests)] if len(partial) else []
        else:
            by_dest: dict[int, list[int]] = {}
            for i, labels in enumerate(partial.labels):
                key = (slot.id, labels)
                dest = self._routes.get(key)
                if dest is None:
                    if len(self._routes) > 1 << 18:  # series churn: start the memo again
                        self._routes.clear()
                    dest = self._routes[key] = self.plan.destination(slot, labels, self.dests)
                by_dest.setdefault(dest, []).append(i)
            routes = []
            for dest, rows in sorted(by_dest.items()):
                labels = [partial.labels[i] for i in rows]
                every = len(rows) == len(partial)  # all rows to one place: no need to pick them
                routes.append((dest, None if every else np.asarray(rows, dtype=np.intp), labels, keys_blob(labels)))
        self._last[slot.id] = (list(partial.labels), routes)
        return routes

    def state(self) -> dict:
        return {"seq": self.seq, "sent_watermark": self.sent_watermark, "origin": self.origin}

    def load(self, state: dict) -> None:
        self.seq, self.sent_watermark = state["seq"], state["sent_watermark"]
        self.origin = state.get("origin", NO_ORIGIN)  # snapshots before frame version 2 have none


def partial_groups(plan: StagePlan, parts: list[tuple[RuleGroup, list]], outbox: Outbox) -> list[RuleGroup]:
    """Rule groups for an engine: slots become :class:`PartialRule` s writing to ``outbox``."""
    groups = []
    for group, items in parts:
        rules = tuple(
            PartialRule(item, outbox.items, f"{_rule_name(plan, item)}#slot{item.id}") if isinstance(item, Slot) else item
            for item in items
        )
        groups.append(RuleGroup(group.name, group.source, group.interval_ms, rules, group.limit))
    return groups


class Stage1Partition:
    """Local rules and stage-1 slots of one samples partition; :meth:`ingest` returns frames by combine partition.

    ``index`` is this partition's number among ``sources`` stage-1 partitions;
    ``combiners`` is the number of combine partitions. ``start_ms`` is the
    origin of the tick schedule every partition of both stages shares.
    """

    def __init__(
        self,
        plan: StagePlan,
        index: int,
        sources: int,
        combiners: int,
        *,
        start_ms: int,
        lookback_ms: int = DEFAULT_LOOKBACK_MS,
        lateness_ms: int = 0,
        resend_delay_ms: int = DEFAULT_RESEND_DELAY_MS,
    ) -> None:
        self.plan, self.index, self.sources, self.combiners = plan, index, sources, combiners
        self.outbox = Outbox(plan, index, sources, combiners)
        self.engine = RuleEngine(partial_groups(plan, plan.stage1_parts(), self.outbox), lookback_ms=lookback_ms,
                                 lateness_ms=lateness_ms, resend_delay_ms=resend_delay_ms, start_ms=start_ms)
        self.engine.skip_log = self.outbox.skips  # the combine partitions skip what this one skipped
        self.phases = plan.phases

    def ingest(self, batch: SampleBatch) -> tuple[EngineOutput, dict[int, bytes]]:
        """Store a batch and evaluate what became due; the frames to send, by combine partition."""
        out = self.engine.ingest(batch)
        return out, self.outbox.frames(self.engine.watermark, self.phases)

    def advance_to(self, watermark_ms: int) -> tuple[EngineOutput, dict[int, bytes]]:
        """Move the watermark (a clock from the sender, or an idle timer) and evaluate what became due."""
        out = self.engine.advance_to(watermark_ms)
        return out, self.outbox.frames(self.engine.watermark, self.phases)

    def free_expired(self) -> list[bytes]:
        """Free the store rows no evaluation can read any more (see :meth:`RuleEngine.free_expired`)."""
        return self.engine.free_expired()

    # --- Snapshots. ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The engine's state and the frame count, as :mod:`detector.snapshot` bytes.

        Replaying the samples after the snapshot's offsets regenerates the
        partials of ticks the combine partitions may already have; they drop
        those by this partition's watermark (:mod:`detector.stages.frames`).
        """
        from detector.stages.combine import SNAPSHOT_RECORDS

        return encode(self.snapshot_state(), SNAPSHOT_RECORDS)

    def restore(self, data: bytes) -> None:
        from detector.stages.combine import SNAPSHOT_RECORDS

        self.restore_state(decode(data, SNAPSHOT_RECORDS))

    def snapshot_state(self) -> dict:
        return {"engine": self.engine.snapshot_state(), "outbox": self.outbox.state()}

    def restore_state(self, state: dict) -> None:
        self.engine.restore_state(dict(state["engine"]))
        self.outbox.load(state["outbox"])


def _rule_name(plan: StagePlan, slot: Slot) -> str:
    for g in plan.groups:
        for r in g.rules:
            if r.split is not None and slot in r.split.slots:
                return r.rule.name
    return "?"


__all__ = ["Outbox", "PartialRule", "Stage1Partition", "partial_groups"]
