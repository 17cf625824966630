"""The stages' parts: frames, bad frames, watermark gating, snapshots, and the plan's classes."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.labels import METRIC_NAME
from detector.promql import compile_expr
from detector.rules import AlertingRule, RecordingRule, RuleGroup
from detector.snapshot import SnapshotError
from detector.stages.combine import CombinePartition
from detector.stages.engine import StagedEngine
from detector.stages.frames import (
    Block, Failure, Frame, FrameFormatError, PartsBuffer, Skip, decode_frame, encode_frame, join_parts, split_frame,
)
from detector.stages.plan import StagePlan
from detector.stages.stage1 import Stage1Partition
from detector.store import STALE_NAN_BITS
from detector.wire.batch import SampleBatch

STALE = float(np.array([STALE_NAN_BITS], dtype=np.uint64).view(np.float64)[0])


def alert(name: str, expr: str, for_ms: int = 0) -> AlertingRule:
    return AlertingRule(name, compile_expr(expr), expr, for_ms=for_ms)


def busy_plan() -> StagePlan:
    return StagePlan([RuleGroup("g", "f.yml", 15_000, (alert("Busy", "sum by (ns) (cpu) > 4", for_ms=15_000),))])


# --- Frames. --------------------------------------------------------------------------------------

label_sets = st.lists(st.tuples(st.sampled_from(["ns", "pod", "le", METRIC_NAME]), st.text(max_size=8)), max_size=4).map(
    lambda pairs: tuple(sorted(dict(pairs).items())))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(STALE))


@st.composite
def blocks(draw) -> Block:
    labels = draw(st.lists(label_sets, max_size=5))
    columns = draw(st.integers(1, 3))
    values = draw(st.lists(floats, min_size=len(labels) * columns, max_size=len(labels) * columns))
    return Block(draw(st.integers(0, 2**32 - 1)), draw(st.integers(-(2**63), 2**63 - 1)), labels,
                 np.array(values, dtype=np.float64).reshape(len(labels), columns))


@settings(max_examples=150, deadline=None)
@given(blocks=st.lists(blocks(), max_size=4),
       failures=st.lists(st.builds(Failure, st.integers(0, 2**32 - 1), st.integers(-(2**63), 2**63 - 1), st.text()), max_size=2),
       watermark=st.integers(-(2**63), 2**63 - 1), source=st.integers(0, 15))
def test_frames_round_trip_bit_exact(blocks, failures, watermark, source):
    frame = Frame(2**64 - 1, source, 16, 12, watermark, blocks, failures)
    back = decode_frame(encode_frame(frame))
    assert (back.fingerprint, back.source, back.sources, back.seq, back.watermark) == (2**64 - 1, source, 16, 12, watermark)
    assert back.failures == failures
    assert [(b.slot, b.tick, b.labels) for b in back.blocks] == [(b.slot, b.tick, b.labels) for b in blocks]
    for got, sent in zip(back.blocks, blocks):  # NaN payloads (the staleness marker) survive
        assert got.values.shape == sent.values.shape
        assert got.values.view(np.uint64).tolist() == sent.values.view(np.uint64).tolist()


def test_a_frame_carries_its_senders_origin_and_skipped_ticks():
    frame = Frame(7, 1, 2, 3, 90_000, [], [], origin=15_000, skips=[Skip(15_000, 30_000, 75_000), Skip(60_000, 0, 60_000)])
    back = decode_frame(encode_frame(frame))
    assert (back.origin, back.skips) == (15_000, [Skip(15_000, 30_000, 75_000), Skip(60_000, 0, 60_000)])


def sample_frame() -> bytes:
    block = Block(0, 15_000, [(("ns", "web"),), (("ns", "db"),)], np.array([[1.0], [2.0]]))
    return encode_frame(Frame(busy_plan().fingerprint, 0, 2, 1, 15_000, [block], [Failure(0, 30_000, "boom")]))


def test_every_truncation_of_a_frame_is_refused_with_a_frame_error():
    data = sample_frame()
    for n in range(len(data)):
        with pytest.raises(FrameFormatError):
            decode_frame(data[:n])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: b"XXXX" + d[4:], "not a partials frame"),
        (lambda d: d[:4] + b"\x04" + d[5:], "version 4"),
        (lambda d: d + b"\x00", "1 bytes after its end"),
        (lambda d: d[:16] + struct.pack("<II", 5, 2) + d[24:], "source 5 of 2 sources"),
        (lambda d: d[:48] + struct.pack("<HH", 3, 3) + d[52:], "part 3 of 3 parts"),
        (lambda d: d[:72] + b"\x00" + d[73:], "no value columns"),
    ],
)
def test_bad_frames_are_refused_saying_what_is_wrong(mutate, message):
    with pytest.raises(FrameFormatError, match=message):
        decode_frame(mutate(sample_frame()))


def test_a_combine_partition_refuses_frames_of_another_rule_set_or_shape_and_keeps_its_state():
    plan = busy_plan()
    combine = CombinePartition(plan, 0, 1, sources=2, start_ms=0)
    other = StagePlan([RuleGroup("g", "f.yml", 15_000, (alert("Busy", "sum by (ns) (cpu) > 5"),))])
    good = Block(0, 0, [(("ns", "web"),)], np.array([[3.0]]))
    bad_frames = {
        "another rule set": Frame(other.fingerprint, 0, 2, 1, 0, [good]),
        "from 3 upstream partitions": Frame(plan.fingerprint, 0, 3, 1, 0, [good]),
        "names slot 7": Frame(plan.fingerprint, 0, 2, 1, 0, [Block(7, 0, [()], np.array([[1.0]]))]),
        "needs 1 value columns": Frame(plan.fingerprint, 0, 2, 1, 0, [Block(0, 0, [()], np.array([[1.0, 2.0]]))]),
    }
    for message, frame in bad_frames.items():
        with pytest.raises(FrameFormatError, match=message):
            combine.receive(encode_frame(frame))
    assert combine.pending == {} and combine.watermark < 0  # nothing of a refused frame was kept
    combine.receive(encode_frame(Frame(plan.fingerprint, 0, 2, 1, 0, [good])))
    out = combine.receive(encode_frame(Frame(plan.fingerprint, 1, 2, 1, 0, [Block(0, 0, [(("ns", "web"),)], np.array([[2.0]]))])))
    assert [(t.value, t.state) for t in out.transitions] == [(5.0, "pending")]


# --- Frames bigger than a record: parts. ------------------------------------------------------------


@st.composite
def frames_to_split(draw) -> Frame:
    """Frames as an Outbox makes them: one block per (slot, tick), rows of distinct label sets."""
    keys = draw(st.lists(st.tuples(st.integers(0, 40), st.integers(-(2**40), 2**40)), unique=True, max_size=6))
    out = []
    for slot, tick in keys:
        labels = draw(st.lists(label_sets, unique=True, max_size=12))
        columns = draw(st.integers(1, 5))
        values = draw(st.lists(floats, min_size=len(labels) * columns, max_size=len(labels) * columns))
        out.append(Block(slot, tick, labels, np.array(values, dtype=np.float64).reshape(len(labels), columns)))
    failures = draw(st.lists(st.builds(Failure, st.integers(0, 40), st.integers(-(2**40), 2**40), st.text(max_size=40)), max_size=3))
    skips = draw(st.lists(st.builds(Skip, st.integers(1, 10**6), st.integers(0, 10**9), st.integers(0, 10**9)), max_size=3))
    return Frame(draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 15)), 16, draw(st.integers(0, 2**40)),
                 draw(st.integers(-(2**63), 2**63 - 1)), out, failures, draw(st.integers(-(2**63), 2**63 - 1)), skips)


def same_frame(a: Frame, b: Frame) -> bool:
    head = lambda f: (f.fingerprint, f.source, f.sources, f.seq, f.watermark, f.failures, f.origin, f.skips)  # noqa: E731
    blocks = lambda f: [(x.slot, x.tick, x.labels, x.values.shape, x.values.view(np.uint64).tolist()) for x in f.blocks]  # noqa: E731
    return head(a) == head(b) and blocks(a) == blocks(b)


@settings(max_examples=200, deadline=None)
@given(frame=frames_to_split(), max_bytes=st.integers(60, 3000))
def test_a_frame_split_into_parts_and_put_back_together_is_the_same_frame(frame, max_bytes):
    data = encode_frame(frame)
    records = split_frame(data, max_bytes)
    parts = [decode_frame(r) for r in records]
    if len(data) <= max_bytes:
        assert records == [data]
    for record, part in zip(records, parts):
        one_row = sum(len(b.labels) for b in part.blocks) <= 1
        assert len(record) <= max_bytes or one_row or not part.blocks  # only a lone row (or the failures) may be over
        assert (part.parts, part.seq, part.watermark, part.origin) == (len(records), frame.seq, frame.watermark, frame.origin)
    assert [p.part for p in parts] == list(range(len(records)))
    assert same_frame(join_parts(parts), frame)
    assert same_frame(join_parts(parts[::-1]), frame)  # any order
    buffer = PartsBuffer()
    got = [buffer.add(p, r) for p, r in zip(parts, records)]
    assert got[:-1] == [None] * (len(parts) - 1)  # nothing before the last part
    assert same_frame(got[-1], frame) and buffer.held == {}


def test_one_ticks_rows_too_many_for_a_record_go_as_parts_of_one_frame():
    rows = [(("pod", f"pod-{i:05d}"), ("ns", "web")) for i in range(40_000)]
    frame = Frame(7, 3, 4, 9, 45_000, [Block(2, 45_000, rows, np.arange(80_000.0).reshape(40_000, 2))], [Failure(1, 45_000, "x")])
    data = encode_frame(frame)
    assert len(data) > 1_000_000  # over Kafka's default message.max.bytes
    records = split_frame(data)
    assert len(records) == -(-len(data) // 900_000) and all(len(r) <= 900_000 for r in records)
    assert same_frame(join_parts([decode_frame(r) for r in records]), frame)


def test_a_version_2_frame_is_still_read_as_a_whole_frame():
    frame = Frame(7, 1, 2, 3, 30_000, [Block(0, 30_000, [(("ns", "a"),)], np.array([[2.0]]))], [], origin=15_000)
    data = bytearray(encode_frame(frame))
    data[4] = 2
    old = bytes(data[:48] + data[56:])  # no part fields
    back = decode_frame(old)
    assert (back.part, back.parts) == (0, 1) and same_frame(back, frame)


def test_the_parts_buffer_drops_an_incomplete_frame_when_its_sender_starts_another():
    """A sender that restarted re-sends from its snapshot, as a new seq: the old parts can never complete."""
    rows = [(("pod", f"p{i}"),) for i in range(8)]
    records = split_frame(encode_frame(Frame(7, 0, 2, 5, 0, [Block(0, 0, rows, np.ones((8, 1)))])), 150)
    assert len(records) >= 3
    buffer = PartsBuffer()
    assert buffer.add(decode_frame(records[0]), records[0]) is None
    assert buffer.add(decode_frame(records[0]), records[0]) is None  # redelivered: kept once
    assert len(buffer.held_bytes()) == 1
    again = split_frame(encode_frame(Frame(7, 0, 2, 6, 0, [Block(0, 0, rows, np.ones((8, 1)))])), 150)
    frames = [buffer.add(decode_frame(r), r) for r in again]
    assert buffer.abandoned == 1 and frames[-1].seq == 6 and len(frames[-1].blocks[0].labels) == 8


def test_parts_of_two_frames_with_one_seq_never_mix():
    """A sender restored from a snapshot numbers its next frame as the one it half sent before its death:
    the half-sent frame's parts are dropped, and the new frame comes whole, not a mixture."""
    rows = [(("pod", f"p{i}"),) for i in range(8)]
    before = split_frame(encode_frame(Frame(7, 0, 2, 5, 0, [Block(0, 0, rows, np.ones((8, 1)))])), 150)
    after = split_frame(encode_frame(Frame(7, 0, 2, 5, 0, [Block(0, 0, rows, np.full((8, 1), 2.0))])), 150)
    assert len(before) == len(after) >= 3
    buffer = PartsBuffer()
    buffer.add(decode_frame(before[0]), before[0])
    got = [buffer.add(decode_frame(r), r) for r in after[1:]] + [buffer.add(decode_frame(after[0]), after[0])]
    assert buffer.abandoned == 1
    assert got[-1].blocks[0].values.ravel().tolist() == [2.0] * 8
    with pytest.raises(FrameFormatError, match="do not make"):
        join_parts([decode_frame(before[0])] + [decode_frame(r) for r in after[1:]])
    corrupt = bytearray(after[1])
    corrupt[-20] ^= 1  # a bit of a value in the part's block
    with pytest.raises(FrameFormatError, match="CRC mismatch"):
        join_parts([decode_frame(after[0]), decode_frame(bytes(corrupt))] + [decode_frame(r) for r in after[2:]])


def many_rows(value: float, ticks=(0,)) -> list[Block]:
    return [Block(0, t, [(("ns", f"n{i}"),) for i in range(6)], np.full((6, 1), value)) for t in ticks]


def test_a_combine_partition_takes_an_upstreams_tick_only_once_all_its_parts_came():
    plan = busy_plan()
    combine = CombinePartition(plan, 0, 1, sources=2, start_ms=0)
    combine.receive(encode_frame(Frame(plan.fingerprint, 0, 2, 1, 0, many_rows(3.0))))
    records = split_frame(encode_frame(Frame(plan.fingerprint, 1, 2, 1, 0, many_rows(2.0))), 120)
    assert len(records) >= 3
    for record in records[:-1]:
        assert combine.receive(record).transitions == []
        assert combine.watermark < 0 and combine.engine.stats.evaluations == 0  # source 1 is not done yet
    out = combine.receive(records[-1])
    assert sorted((t.labels, t.value) for t in out.transitions) == [
        ((("alertname", "Busy"), ("ns", f"n{i}")), 5.0) for i in range(6)]  # every part's rows, each once
    assert combine.watermark == 0


def test_parts_held_by_a_combine_partition_survive_its_snapshot():
    plan = busy_plan()
    combine = CombinePartition(plan, 0, 1, sources=2, start_ms=0)
    combine.receive(encode_frame(Frame(plan.fingerprint, 0, 2, 1, 0, many_rows(3.0))))
    records = split_frame(encode_frame(Frame(plan.fingerprint, 1, 2, 1, 0, many_rows(2.0))), 120)
    for record in records[:-1]:
        combine.receive(record)
    restored = CombinePartition(plan, 0, 1, sources=2, start_ms=0)
    restored.restore(combine.snapshot())
    assert len(restored.receive(records[-1]).transitions) == 6


def test_an_upstream_silent_between_parts_is_presumed_as_any_silent_one_and_its_late_rows_dropped():
    """Parts 0.. of a frame, then nothing: the watermark follows the others once the caller presumes it
    silent; the last part, when it comes at all, adds nothing to ticks already evaluated."""
    plan = busy_plan()
    combine = CombinePartition(plan, 0, 1, sources=2, start_ms=0)
    combine.receive(encode_frame(Frame(plan.fingerprint, 0, 2, 1, 15_000, many_rows(3.0, (0, 15_000)))))
    records = split_frame(encode_frame(Frame(plan.fingerprint, 1, 2, 1, 15_000, many_rows(2.0, (0, 15_000)))), 120)
    for record in records[:-1]:
        assert combine.receive(record).transitions == []
    out = combine.presume({1: 15_000})  # what the worker's silence rule does (Combiner.advance_idle)
    # Evaluated without source 1: 3 per namespace, under the threshold, so nothing fires.
    assert out.transitions == [] and combine.engine.stats.evaluations == 2 and combine.watermark == 15_000
    assert combine.receive(records[-1]).transitions == []  # it came after all: dropped, as late samples are
    assert combine.presumed_rows == 12 and combine.pending == {} and combine.parts.held == {}


# --- Watermark gating. ------------------------------------------------------------------------------


def test_a_tick_is_evaluated_only_when_every_upstream_watermark_has_passed_it():
    plan = busy_plan()
    combine = CombinePartition(plan, 0, 1, sources=3, start_ms=0)

    def send(source: int, watermark: int, rows: dict[int, float]) -> list:
        blocks = [Block(0, tick, [(("ns", "web"),)], np.array([[v]])) for tick, v in rows.items()]
        return combine.receive(encode_frame(Frame(plan.fingerprint, source, 3, 1, watermark, blocks))).transitions

    assert send(0, 15_000, {0: 5.0, 15_000: 5.0}) == []
    assert send(1, 15_000, {}) == []  # source 2 has not reported: nothing is complete yet
    assert combine.engine.stats.evaluations == 0
    states = [(t.eval_time, t.state) for t in send(2, 0, {})]
    assert states == [(0, "pending")]  # tick 0 complete everywhere; 15 s not yet (source 2 is at 0)
    assert [(t.eval_time, t.state) for t in send(2, 30_000, {})] == [(15_000, "firing")]
    # A partial for a tick its source already passed is a redelivery: dropped and counted.
    send(0, 15_000, {15_000: 100.0})
    assert combine.duplicate_rows == 1


def test_a_stage1_failure_fails_the_rule_in_every_combine_partition_as_in_one_engine():
    # The join is inside one target (on instance): stage 1 evaluates it, and fails.
    groups = [RuleGroup("g", "f.yml", 15_000, (alert("Join", "sum by (ns) (a / on(instance, job) b)"),))]
    series = [((("__name__", "a"), ("instance", "i1"), ("job", "j"), ("ns", "x")), [(0, 1.0)]),
              ((("__name__", "b"), ("instance", "i1"), ("job", "j"), ("ns", "x"), ("pod", "1")), [(0, 1.0)]),
              ((("__name__", "b"), ("instance", "i1"), ("job", "j"), ("ns", "x"), ("pod", "2")), [(0, 1.0)])]
    staged = StagedEngine(groups, partitions=2, combiners=3)
    out = staged.ingest(SampleBatch.from_series(series))
    assert len(out.errors) == 3 and all("many-to-many" in e for e in out.errors)
    assert out.transitions == []


# --- Snapshots. --------------------------------------------------------------------------------------


def batches(steps: int) -> list[SampleBatch]:
    out = []
    for step in range(steps):
        rows = [((("__name__", "cpu"), ("instance", f"i{i}"), ("ns", "web" if i % 2 else "db")), [(step * 15_000, float(i % 4))])
                for i in range(8)]
        out.append(SampleBatch.from_series(rows))
    return out


def summary(outputs) -> list:
    return sorted((t.rule, t.labels, t.state, t.eval_time, t.value) for o in outputs for t in o.transitions)


def test_combine_partitions_restored_from_snapshots_carry_on_as_if_never_stopped():
    groups = [RuleGroup("g", "f.yml", 15_000, (
        alert("Busy", "sum by (ns) (cpu) > 5", for_ms=30_000),
        RecordingRule("ns:cpu:max", compile_expr("max by (ns) (cpu)"), "max by (ns) (cpu)"),
        alert("Max", "ns:cpu:max > 2", for_ms=15_000),
    ))]
    data = batches(10)
    straight = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    expected = [straight.ingest(b) for b in data]

    first = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    got = [first.ingest(b) for b in data[:4]]
    # Frames in flight: stage 1 has evaluated tick 60 s, the combine stage not yet (one upstream is behind).
    held = first.stage1[0].advance_to(75_000)[1]
    snapshots = [c.snapshot() for c in first.combine]
    stage1 = [p.snapshot() for p in first.stage1]
    restarted = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    for c, snap in zip(restarted.combine, snapshots):
        c.restore(snap)
    for p, snap in zip(restarted.stage1, stage1):
        p.restore(snap)
    for dest, frame in held.items():  # redelivered after the restart: the rows count once
        restarted.combine[dest].receive(frame)
        restarted.combine[dest].receive(frame)
    got += [restarted.ingest(b) for b in data[4:]]
    assert summary(got) == summary(expected)
    assert any(t[2] == "firing" for t in summary(got))
    assert sum(c.duplicate_rows for c in restarted.combine) > 0


def test_a_combine_snapshot_of_other_rules_is_refused():
    combine = CombinePartition(busy_plan(), 0, 1, sources=1, start_ms=0)
    other = CombinePartition(StagePlan([RuleGroup("g", "f.yml", 15_000, (alert("X", "count(up) > 1"),))]), 0, 1, 1, start_ms=0)
    with pytest.raises(SnapshotError, match="other rule files"):
        combine.restore(other.snapshot())
    with pytest.raises(SnapshotError):
        combine.restore(b"garbage")


def test_stage1_partition_emits_its_watermark_to_every_combine_partition():
    part = Stage1Partition(busy_plan(), index=1, sources=2, combiners=3, start_ms=0)
    _, frames = part.advance_to(30_000)
    assert sorted(frames) == [0, 1, 2]
    assert {decode_frame(f).watermark for f in frames.values()} == {30_000}
    assert part.advance_to(30_000)[1] == {}  # nothing new: nothing sent


# --- The plan. ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "cls"),
    [
        ("up == 0", "local"),
        ("sum by (job, instance) (rate(x[5m])) > 1", "local"),
        ("sum by (namespace) (rate(container_cpu_usage_seconds_total[5m])) > 4", "staged"),
        ("sum without (instance) (x) > 1", "staged"),
        ("count by (job) (up == 0) > 1", "staged"),
        ("topk by (namespace) (3, x)", "staged"),
        ("a / on(queue) group_left limit > 0.8", "staged"),
        ("histogram_quantile(0.99, sum by (le, service) (rate(h_bucket[5m]))) > 1", "staged"),
        ("sum(x) > 1", "one-partition"),
        ("topk(3, x)", "one-partition"),
        ('absent(up{job="api"})', "one-partition"),
        ("sum(x) > scalar(max(y))", "one-partition"),
        ("x > on() group_left vector(scalar(max(y)))", "still-global"),  # x's samples meet the vector in one place
        ("sum by (ns) (x) > scalar(max(y))", "staged"),  # max(y)'s rows go to every combine partition
        ("x > scalar(max(y))", "staged"),
        ("vector(1)", "one-partition"),
        ("quantile(0.9, x)", "still-global"),  # raw samples into one place
        ("a / on() group_left b", "still-global"),
    ],
)
def test_each_rule_gets_its_class(expr, cls):
    plan = StagePlan([RuleGroup("g", "f.yml", 15_000, (alert("A", expr),))])
    assert plan.groups[0].rules[0].cls == cls


def test_a_group_limit_keeps_a_rule_in_one_combine_partition():
    plan = StagePlan([RuleGroup("g", "f.yml", 15_000, (alert("A", "sum by (ns) (x) > 1"),), limit=3)])
    assert plan.slots[0].route.single
    assert [len(plan.combine_parts(i, 4)) for i in range(4)].count(1) == 1


def test_the_partials_of_a_scalar_go_to_every_combine_partition_and_the_vector_stays_spread():
    plan = StagePlan([RuleGroup("g", "f.yml", 15_000, (alert("Above", "x > scalar(max(y))"),))])
    raw, scalar = plan.slots
    assert scalar.broadcast and not raw.broadcast and not raw.route.single
    part = Stage1Partition(plan, index=0, sources=1, combiners=3, start_ms=0)
    series = [((("__name__", "y"), ("instance", "a")), [(0, 5.0)])] + [
        ((("__name__", "x"), ("instance", "a"), ("pod", str(i))), [(0, float(i))]) for i in range(12)]
    _, frames = part.ingest(SampleBatch.from_series(series))
    blocks = {dest: decode_frame(f).blocks for dest, f in frames.items()}
    assert all([b.values.tolist() for b in bs if b.slot == scalar.id] == [[[5.0]]] for bs in blocks.values())
    x_rows = [len(b.labels) for bs in blocks.values() for b in bs if b.slot == raw.id]
    assert sum(x_rows) == 12 and len(x_rows) == 3  # each x sample once, spread over the three


def test_a_stage1_partition_restored_from_a_snapshot_replays_without_counting_anything_twice():
    groups = [RuleGroup("g", "f.yml", 15_000, (
        alert("Busy", "sum by (ns) (cpu) > 5", for_ms=30_000),
        alert("Few", "count(cpu) < 9"),
    ))]
    data = batches(10)
    straight = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    expected = [straight.ingest(b) for b in data]

    engine = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    got = [engine.ingest(b) for b in data[:4]]
    snapshot = engine.stage1[1].snapshot()
    got += [engine.ingest(b) for b in data[4:7]]
    # Partition 1's worker dies; its successor restores the snapshot and replays
    # the samples after it, in one batch (a consumer batches as it likes).
    successor = Stage1Partition(engine.plan, 1, 3, 2, start_ms=0)
    successor.restore(snapshot)
    engine.stage1[1] = successor
    replay = [engine.split_batch(b)[1] for b in data[4:7]]
    _, frames = successor.ingest(SampleBatch(
        [k for b in replay for k in b.series_keys],
        np.concatenate([b.series_index + sum(len(x.series_keys) for x in replay[:i]) for i, b in enumerate(replay)]).astype(np.uint32),
        np.concatenate([b.timestamps for b in replay]), np.concatenate([b.values for b in replay])))
    for dest, frame in frames.items():
        got.append(engine.combine[dest].receive(frame))
    assert sum(c.duplicate_rows for c in engine.combine) > 0
    got += [engine.ingest(b) for b in data[7:]]
    assert summary(got) == summary(expected)
    assert {(t[0], t[2]) for t in summary(expected)} >= {("Busy", "firing"), ("Few", "firing")}


def test_both_combine_levels_restored_from_snapshots_carry_on_as_if_never_stopped():
    groups = [RuleGroup("g", "f.yml", 15_000, (
        RecordingRule("team:x:sum", compile_expr("sum by (team) (x * on(ns) group_left(team) ns_team)"), "..."),
        alert("TeamHigh", "team:x:sum > 10", for_ms=15_000),
    ))]
    teams = [((("__name__", "ns_team"), ("instance", "cfg"), ("ns", ns), ("team", f"t{ns}")), 1.0) for ns in "ab"]

    def data(step: int) -> SampleBatch:
        xs = [((("__name__", "x"), ("instance", f"i{i}"), ("ns", "ab"[i % 2])), float((i * step) % 7)) for i in range(9)]
        return SampleBatch.from_series([(labels, [(step * 15_000, v)]) for labels, v in xs + teams])

    straight = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    expected = [straight.ingest(data(s)) for s in range(10)]
    assert straight.plan.levels == 2 and straight.combine2

    engine = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    got = [engine.ingest(data(s)) for s in range(5)]
    restarted = StagedEngine(groups, partitions=3, combiners=2, start_ms=0)
    for old, new in zip(engine.stage1 + engine.combine + engine.combine2, restarted.stage1 + restarted.combine + restarted.combine2):
        new.restore(old.snapshot())
    got += [restarted.ingest(data(s)) for s in range(5, 10)]
    assert summary(got) == summary(expected)
    assert ("TeamHigh", "firing") in {(t[0], t[2]) for t in summary(expected)}


def test_a_combine_partition_evaluates_at_most_max_evaluations_per_step_and_the_rest_in_steps():
    plan = busy_plan()
    blocks = [Block(0, k * 15_000, [(("ns", "web"),)], np.array([[float(k)]])) for k in range(10)]
    data = encode_frame(Frame(plan.fingerprint, 0, 1, 1, 9 * 15_000, blocks))
    whole = CombinePartition(plan, 0, 1, sources=1, start_ms=0).receive(data)
    bounded = CombinePartition(plan, 0, 1, sources=1, start_ms=0, max_evaluations_per_step=2)
    out = bounded.receive(data)
    assert out.pending and bounded.evaluations_due and bounded.engine.stats.evaluations == 2
    transitions, steps = list(out.transitions), 1
    while bounded.evaluations_due:
        transitions += bounded.step().transitions
        steps += 1
    assert steps == 5
    assert [(t.state, t.eval_time) for t in transitions] == [(t.state, t.eval_time) for t in whole.transitions]
    assert len(whole.transitions) == 2 and not bounded.pending  # pending, firing; every tick's partials freed


def test_ticks_an_upstream_skipped_are_skipped_by_the_combine_partition_and_the_ones_before_evaluated():
    plan = busy_plan()
    combine = CombinePartition(plan, 0, 1, sources=2, start_ms=0)
    row = lambda t, v: Block(0, t, [(("ns", "web"),)], np.array([[v]]))  # noqa: E731
    # Source 1 has every tick; source 0 skipped 30 s..90 s after a jump (HEADROOM_MAX_CATCH_UP).
    combine.receive(encode_frame(Frame(plan.fingerprint, 1, 2, 1, 120_000, [row(k * 15_000, 1.0) for k in range(9)])))
    out = combine.receive(encode_frame(Frame(plan.fingerprint, 0, 2, 1, 120_000,
                                             [row(t, 4.0) for t in (0, 15_000, 90_000, 105_000, 120_000)],
                                             origin=0, skips=[Skip(15_000, 30_000, 90_000)])))
    assert out.skipped == 4 and combine.engine.stats.skipped_evaluations == 4
    # 5.0 > 4 at every tick evaluated; the skipped ones (source 1 alone: 1.0) never evaluated.
    assert [(t.state, t.eval_time) for t in out.transitions] == [("pending", 0), ("firing", 15_000)]
    assert not combine.pending
